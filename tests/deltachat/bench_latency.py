"""Send-to-arrival latency between two Delta Chat accounts, one message
at a time, on one local relay and across two (127.0.0.1 -> 127.0.0.2).

For each message it also reads, from the relays' Postfix logs, how long
the message spent between entering Postfix's queue and being delivered
to Dovecot ("delay=" of each queue hop, which includes filtermail-
transport and the receiving relay's filtermail-incoming): the part of
the latency that is the relays' own, as against the client and Dovecot's
IDLE wake-up.

    sudo CHATMAIL_BIN_DIR=target/release python tests/deltachat/bench_latency.py --messages 50
"""

import argparse
import email
import imaplib
import os
import re
import smtplib
import socket
import ssl
import statistics
import tempfile
import time

from deltachat_rpc_client import DeltaChat, Rpc

from relay import REPO, LocalRelay, random_text

PORT_BASE = 26000


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def queue_delays(log, recipient):
    """The delay= of each delivery line for `recipient`, in log order."""
    pattern = re.compile(r"to=<" + re.escape(recipient) + r">.*delay=([0-9.]+),.*status=sent")
    return [float(match.group(1)) for match in pattern.finditer(log)]


def account(dc, relay):
    url, addr, _ = relay.dclogin()
    acc = dc.add_account()
    acc.add_transport_from_qr(url)
    acc.bring_online()
    return acc, addr


def measure(dc, sender_relay, recipient_relay, count, pause):
    sender, _ = account(dc, sender_relay)
    recipient, recipient_addr = account(dc, recipient_relay)
    recipient.secure_join(sender.get_qr_code())
    sender.wait_for_securejoin_inviter_success()
    recipient.wait_for_securejoin_joiner_success()
    chat = sender.create_chat(recipient)
    latencies = []
    for n in range(count):
        # Delta Chat itself holds back rapid consecutive sends (~0.4 s
        # each from the sixth on); a chat's pace keeps that out.
        time.sleep(pause)
        recipient.clear_all_events()
        start = time.monotonic()
        chat.send_text(f"message {n}")
        recipient.wait_for_incoming_msg()
        latencies.append(time.monotonic() - start)
    time.sleep(1)  # let Postfix write its last log lines
    relays = {id(sender_relay): sender_relay, id(recipient_relay): recipient_relay}
    hops = [queue_delays(relay.log("postfix"), recipient_addr) for relay in relays.values()]
    # The SecureJoin handshake messages came first; keep the last `count`.
    per_message = [sum(d) for d in zip(*(hop[-count:] for hop in hops))]
    return latencies, per_message


def report(name, latencies, in_queue):
    print(
        f"{name:12} n={len(latencies):3}  send-to-arrival median {statistics.median(latencies) * 1000:6.0f} ms"
        f"  p90 {percentile(latencies, 0.9) * 1000:6.0f} ms"
        f"  | in Postfix queues + transport median {statistics.median(in_queue) * 1000:5.0f} ms"
        f"  p90 {percentile(in_queue, 0.9) * 1000:5.0f} ms"
        f"  ({statistics.median(in_queue) / statistics.median(latencies):.2f} of the median)"
    )


def tls_context():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class IdleClient:
    """A bare IMAP IDLE client: how fast Dovecot tells a waiting client."""

    def __init__(self, relay, addr, password):
        sock = socket.create_connection((relay.address, relay.port(993)))
        self.file = tls_context().wrap_socket(sock).makefile("rwb")
        self.file.readline()
        self.command(f'a LOGIN "{addr}" "{password}"', b"a ")
        self.command("b SELECT INBOX", b"b ")

    def command(self, line, until):
        self.file.write(line.encode() + b"\r\n")
        self.file.flush()
        while not (reply := self.file.readline()).startswith(until):
            if not reply:
                raise ConnectionError("IMAP connection closed")

    def idle_until_new_message(self, send):
        """Runs `send()` while idling; returns seconds until EXISTS."""
        self.command("c IDLE", b"+")
        start = time.monotonic()
        send()
        while b"EXISTS" not in self.file.readline():
            pass
        elapsed = time.monotonic() - start
        self.command("DONE", b"c ")
        return elapsed


def new_account(relay):
    addr, password = f"{random_text(9)}@{relay.domain}", random_text(20)
    with imaplib.IMAP4_SSL(relay.address, relay.port(993), ssl_context=tls_context()) as imap:
        imap.login(addr, password)
    return addr, password


def probe(sender_relay, recipient_relay, count, bypass):
    """Seconds from SMTP submission to IMAP IDLE EXISTS. With `bypass`,
    the message enters the recipient's Postfix straight at its
    reinjection port: no filtermail-outgoing, no transport, no
    filtermail-incoming — the baseline of Postfix and Dovecot alone."""
    sender, password = new_account(sender_relay)
    recipient, recipient_password = new_account(recipient_relay)
    template = email.message_from_string((REPO / "tests/data/mail/encrypted.eml").read_text())
    del template["From"], template["To"]
    template["From"], template["To"] = sender, recipient
    data = template.as_string()

    def connect():
        # Connected and logged in before the clock starts, as Delta Chat
        # keeps its SMTP session: only the message itself is timed.
        if bypass:
            port = 1026 if recipient_relay is not sender_relay else 1025
            return smtplib.SMTP(recipient_relay.address, recipient_relay.port(port))
        smtp = smtplib.SMTP_SSL(
            sender_relay.address, sender_relay.port(465), context=tls_context()
        )
        smtp.login(sender, password)
        return smtp

    client = IdleClient(recipient_relay, recipient, recipient_password)
    times = []
    for _ in range(count):
        with connect() as smtp:
            times.append(
                client.idle_until_new_message(lambda: smtp.sendmail(sender, [recipient], data))
            )
    return times


def report_probe(name, through, bypass):
    ratio = statistics.median(through) / statistics.median(bypass)
    print(
        f"{name:12} SMTP->IDLE through our daemons median {statistics.median(through) * 1000:4.0f} ms"
        f" p90 {percentile(through, 0.9) * 1000:4.0f} ms | Postfix+Dovecot alone median"
        f" {statistics.median(bypass) * 1000:4.0f} ms p90 {percentile(bypass, 0.9) * 1000:4.0f} ms"
        f" | ratio {ratio:.2f}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between messages")
    args = parser.parse_args()
    settings = ["max_user_send_per_minute=6000", "max_user_send_burst_size=1000"]
    relays = []
    try:
        for address in ("127.0.0.1", "127.0.0.2"):
            state = tempfile.mkdtemp(prefix=f"chatmail-bench-{address}-", dir="/var/tmp")
            os.chmod(state, 0o755)
            relays.append(LocalRelay(address, PORT_BASE, state, settings))
        with Rpc(accounts_dir=tempfile.mkdtemp(prefix="chatmail-bench-accounts-")) as rpc:
            dc = DeltaChat(rpc)
            report("one relay", *measure(dc, relays[0], relays[0], args.messages, args.pause))
            report("two relays", *measure(dc, relays[0], relays[1], args.messages, args.pause))
        for name, pair in [("one relay", (relays[0], relays[0])), ("two relays", tuple(relays))]:
            through = probe(*pair, args.messages, bypass=False)
            alone = probe(*pair, args.messages, bypass=True)
            report_probe(name, through, alone)
    finally:
        for relay in relays:
            relay.stop()
            relay.remove_state()


if __name__ == "__main__":
    main()
