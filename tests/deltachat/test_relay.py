"""Delta Chat, the real client, against local relays: accounts created by
the first login or handed out over HTTPS, end-to-end encryption set up by
a QR invitation, messages both ways on one relay and across two (over
HTTPS /mxdeliv, and over SMTP when nginx is down), cleartext refused,
TLS 1.3 for clients, idle sessions hibernated, push notifications, and a
clean stop on Ctrl-C, even during the start."""

import os
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time

import pytest

from relay import REPO, LocalRelay, bin_dir, insecure_tls

# Dovecot wakes IDLE clients about 0.5 s after a delivery; the rest is
# the client's own work. Generous for a loaded CI machine.
ARRIVAL_LIMIT = 10


def secure_join(inviter, joiner):
    joiner.secure_join(inviter.get_qr_code())
    inviter.wait_for_securejoin_inviter_success()
    joiner.wait_for_securejoin_joiner_success()


def exchange(sender, recipient, text):
    """Sends `text` and returns (seconds until it arrived, its snapshot)."""
    chat = sender.create_chat(recipient)
    start = time.monotonic()
    chat.send_text(text)
    snapshot = recipient.wait_for_incoming_msg().get_snapshot()
    return time.monotonic() - start, snapshot


def test_first_login_creates_accounts(relay, online_account):
    alice = online_account(relay)
    assert alice.get_config("configured_addr") == alice.addr
    assert (relay.state_dir / "mail" / alice.addr / "password").exists()


@pytest.mark.parametrize("where", ["one relay", "two relays"])
def test_encrypted_messages_both_ways(relays, online_account, where):
    alice = online_account(relays[0])
    bob = online_account(relays[0] if where == "one relay" else relays[1])
    secure_join(alice, bob)
    for sender, recipient, text in [(alice, bob, "hello bob"), (bob, alice, "hi alice")]:
        seconds, snapshot = exchange(sender, recipient, text)
        assert snapshot.text == text
        assert snapshot.show_padlock, "not end-to-end encrypted"
        assert seconds < ARRIVAL_LIMIT, f"{seconds:.1f} s"


def test_across_relays_mail_passes_transport_and_incoming_filter(relays, online_account):
    alice = online_account(relays[0])
    bob = online_account(relays[1])
    secure_join(alice, bob)
    exchange(alice, bob, "via filtermail-transport")
    sent = relays[0].log("postfix")
    lines = [line for line in sent.splitlines() if f"to=<{bob.addr}>" in line]
    # Postfix handed the message to filtermail-transport (its own LMTP
    # port), never to the other relay directly.
    transport = f"relay={relays[0].address}[{relays[0].address}]:{relays[0].port(1083)}"
    assert any(transport in line and "status=sent" in line for line in lines), lines
    received = relays[1].log("postfix")
    assert "postfix/reinject_incoming/smtpd" in received
    assert any(
        f"to=<{bob.addr}>" in line and "dovecot-lmtp" in line and "status=sent" in line
        for line in received.splitlines()
    )


CLEARTEXT = """\
From: {sender}
To: {recipient}
Subject: plain
Message-ID: <{stamp}@example.invalid>
Date: Sat, 28 Nov 2026 10:00:00 +0000

This is not encrypted.
"""


def tls_context():
    return insecure_tls()


def log_since(relay, name, offset):
    return relay.log(name)[offset:]


def test_a_newcomer_gets_an_account_over_https(relay, dc):
    # An IP-only relay's page makes login links in the browser (see
    # test_front_door.py); a browser that opens /new is sent to it.
    status, page = relay.https("/", method="GET")
    assert status == 200
    assert 'src="/dclogin.js"' in page and "DCACCOUNT" not in page
    assert relay.https("/new", method="GET") == (200, page)
    # Delta Chat's POST to /new still hands out an account.
    url, addr, password = relay.new_account()
    assert addr.endswith(f"@{relay.domain}")
    account = dc.add_account()
    account.add_transport_from_qr(url)
    account.bring_online()
    assert account.get_config("configured_addr") == addr
    assert (relay.state_dir / "mail" / addr / "password").exists()


def test_cleartext_from_another_server_is_refused_with_523(relay, online_account):
    alice = online_account(relay)
    sender = "someone@[127.0.0.2]"
    message = CLEARTEXT.format(sender=sender, recipient=alice.addr, stamp=time.time())
    with smtplib.SMTP(relay.address, relay.port(25)) as smtp:
        # Port 25 takes mail over TLS only, as every relay sends it.
        with pytest.raises(smtplib.SMTPSenderRefused) as cleartext:
            smtp.sendmail(sender, [alice.addr], message)
        assert cleartext.value.smtp_code == 530
    with smtplib.SMTP(relay.address, relay.port(25)) as smtp:
        smtp.starttls(context=tls_context())
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail(sender, [alice.addr], message)
    assert refused.value.smtp_code == 523


def test_cleartext_submitted_by_a_user_is_refused_with_523(relay, online_account):
    alice = online_account(relay)
    bob = online_account(relay)
    message = CLEARTEXT.format(sender=alice.addr, recipient=bob.addr, stamp=time.time())
    with smtplib.SMTP_SSL(relay.address, relay.port(465), context=tls_context()) as smtp:
        smtp.login(alice.addr, alice.password)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail(alice.addr, [bob.addr], message)
    assert refused.value.smtp_code == 523


def test_an_arriving_message_notifies_the_recipients_device(
    relays, online_account, notification_server
):
    alice = online_account(relays[0])
    bob = online_account(relays[1])
    secure_join(alice, bob)
    # deltachat-rpc-server has no call for the device token of a phone:
    # register it with the IMAP command Delta Chat sends on a phone.
    token = f"test-token-{time.time()}"
    relays[1].register_device_token(bob.addr, bob.password, token)
    exchange(alice, bob, "wake up")
    assert notification_server.wait_for(token, timeout=10), notification_server.tokens


def test_clients_need_tls_1_3(relay):
    for port in (relay.port(993), relay.port(465)):
        with socket.create_connection((relay.address, port), timeout=10) as sock:
            with pytest.raises(ssl.SSLError):
                insecure_tls(ssl.TLSVersion.TLSv1_2).wrap_socket(sock)
        with socket.create_connection((relay.address, port), timeout=10) as sock:
            with tls_context().wrap_socket(sock) as tls:
                assert tls.version() == "TLSv1.3"


ENCRYPTED = (REPO / "tests" / "data" / "mail" / "encrypted.eml").read_text()


def deliver_encrypted(relay, sender, recipient):
    """An encrypted message from another relay's address, over port 25."""
    message = (
        ENCRYPTED.replace("{subject}", "[...]")
        .replace("one@example.org", sender)
        .replace("two@example.org", recipient)
    )
    with smtplib.SMTP(relay.address, relay.port(25)) as smtp:
        smtp.starttls(context=tls_context())
        smtp.sendmail(sender, [recipient], message)


def test_an_idle_session_hibernates_and_wakes_for_new_mail(relay):
    url, addr, password = relay.dclogin()
    with socket.create_connection((relay.address, relay.port(993)), timeout=60) as sock:
        with tls_context().wrap_socket(sock) as imap:
            reader = imap.makefile("rb")

            def command(line):
                imap.sendall(line.encode() + b"\r\n")
                tag = line.split()[0].encode()
                while not (reply := reader.readline()).startswith(tag):
                    assert reply, "connection closed"
                return reply

            reader.readline()  # greeting
            assert b"OK" in command(f'a1 LOGIN "{addr}" "{password}"')
            assert b"OK" in command("a2 SELECT INBOX")
            imap.sendall(b"a3 IDLE\r\n")
            assert reader.readline().startswith(b"+")
            # imap_hibernate_timeout is 30 s.
            asleep = False
            deadline = time.monotonic() + 45
            while time.monotonic() < deadline and not asleep:
                time.sleep(1)
                asleep = hibernated(relay, addr)
            assert asleep, "the IDLE session was not hibernated"
            # Dovecot's own metrics (rendered by chatmail-configure) saw it.
            dovecot = relay.scrape("dovecot")
            assert dovecot["dovecot_imap_hibernated_total"] >= 1, dovecot
            deliver_encrypted(relay, "someone@[127.0.0.2]", addr)
            # The hibernated session is woken and told about the message.
            line = reader.readline()
            while line and b"EXISTS" not in line:
                line = reader.readline()
            assert b"EXISTS" in line, line
            imap.sendall(b"DONE\r\n")


def hibernated(relay, addr):
    """Whether the imap process that served `addr`'s login has ended and
    this relay's imap-hibernate process holds the session instead."""
    login = [
        line for line in relay.log("dovecot").splitlines()
        if f"Login: user=<{addr}>" in line and "mpid=" in line
    ]
    assert login, "no login in Dovecot's log"
    imap_pid = login[-1].split("mpid=")[1].split(",")[0]
    if os.path.exists(f"/proc/{imap_pid}"):
        return False
    master = relay_dovecot_master(relay)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if read_proc(pid, "cmdline").rstrip(b"\0").endswith(b"/imap-hibernate"):
            if parent_pid(pid) == master:
                return True
    return False


def read_proc(pid, name):
    try:
        with open(f"/proc/{pid}/{name}", "rb") as file:
            return file.read()
    except OSError:
        return b""


def parent_pid(pid):
    stat = read_proc(pid, "stat").decode(errors="replace")
    return stat.rsplit(")", 1)[-1].split()[1] if ")" in stat else None


def relay_dovecot_master(relay):
    config = str(relay.state_dir / "dovecot" / "dovecot.conf").encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if config in read_proc(pid, "cmdline") and b"dovecot" in read_proc(pid, "cmdline"):
            return pid
    return None


def test_relays_deliver_to_each_other_over_https(relays, online_account):
    alice = online_account(relays[0])
    bob = online_account(relays[1])
    secure_join(alice, bob)
    offset = len(relays[1].log("postfix"))
    before = counts(relays)
    exchange(alice, bob, "over /mxdeliv")
    received = log_since(relays[1], "postfix", offset)
    # Reinjected by filtermail-incoming, which got it from nginx: no
    # session on the port-25 service.
    assert "postfix/reinject_incoming/smtpd" in received, received
    assert "postfix/smtpd/smtpd" not in received, received
    # The metrics each relay printed say the same.
    moved = {key: value - before[key] for key, value in counts(relays).items()}
    assert moved["outgoing accepted"] >= 1, moved
    assert moved["transport https delivered"] >= 1, moved
    assert moved["transport smtp delivered"] == 0, moved
    assert moved["incoming accepted"] >= 1, moved
    assert moved["dovecot deliveries"] >= 1, moved


def counts(relays):
    """The series the cross-relay tests watch, from both relays'
    metrics endpoints: alice's relay sends, bob's receives."""
    outgoing = relays[0].scrape("filtermail-outgoing")
    transport = relays[0].scrape("filtermail-transport")
    incoming = relays[1].scrape("filtermail-incoming")
    dovecot = relays[1].scrape("dovecot")

    def delivered(protocol):
        return transport[
            f'filtermail_transport_deliveries_total{{protocol="{protocol}",outcome="delivered"}}'
        ]

    return {
        "outgoing accepted": outgoing[
            'filtermail_messages_total{direction="outgoing",outcome="accepted"}'
        ],
        "transport https delivered": delivered("https"),
        "transport smtp delivered": delivered("smtp"),
        "incoming accepted": incoming[
            'filtermail_messages_total{direction="incoming",outcome="accepted"}'
        ],
        "dovecot deliveries": dovecot["dovecot_mail_deliveries_total"],
    }


def test_ctrl_c_stops_every_process_of_the_relay():
    state = tempfile.mkdtemp(prefix="chatmail-e2e-stop-", dir="/var/tmp")
    relay = LocalRelay("127.0.0.3", 31000, state)
    assert relay.stop() == 0, "".join(relay.output)
    assert "stopping the relay" in "".join(relay.output)
    assert_nothing_left(state)
    relay.remove_state()


def test_ctrl_c_during_the_start_stops_what_was_started():
    """Ctrl-C while Postfix, Dovecot and the daemons are coming up: the
    relay finishes starting, then stops all of it, rather than dying
    alone and leaving them running."""
    state = tempfile.mkdtemp(prefix="chatmail-e2e-early-stop-", dir="/var/tmp")
    process = spawn_relay(state)
    deadline = time.monotonic() + 60
    while not [pid for pid in processes_using(state) if pid != str(process.pid)]:
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "no process of the relay started"
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    assert_stopped(process, state)


def test_ctrl_c_at_a_terminal_stops_the_relay_and_its_daemons():
    """At a terminal, Ctrl-C reaches every process of the foreground
    group: the daemons stop on their own as the relay stops them, and
    none of their exits is taken for a crash to restart."""
    state = tempfile.mkdtemp(prefix="chatmail-e2e-group-stop-", dir="/var/tmp")
    process = spawn_relay(state, start_new_session=True)
    assert any("is running" in line for line in process.stdout), "the relay did not start"
    os.killpg(process.pid, signal.SIGINT)
    output = assert_stopped(process, state)
    assert "restarting" not in output and "keeps exiting" not in output, output


def spawn_relay(state, **popen):
    """chatmail-local-relay on 127.0.0.3 with `state`, output in a pipe."""
    return subprocess.Popen(
        [str(bin_dir() / "chatmail-local-relay"), "--listen", "127.0.0.3",
         "--port-base", "31000", "--state-dir", state],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen,
    )


def assert_stopped(process, state):
    """Waits for the relay to exit; asserts a clean stop with nothing of
    it left running, removes `state` and returns the relay's output."""
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    assert "stopping the relay" in output, output
    assert_nothing_left(state)
    shutil.rmtree(state, ignore_errors=True)
    return output


def assert_nothing_left(state):
    """No process of the relay with `state` runs, Postfix included."""
    leftover = processes_using(state)
    assert leftover == [], leftover
    status = subprocess.run(["postfix", "-c", f"{state}/postfix", "status"], capture_output=True)
    assert status.returncode != 0, "postfix still running"


def processes_using(state):
    """Processes with the state directory on their command line."""
    return subprocess.run(["pgrep", "-f", state], capture_output=True, text=True).stdout.split()


# Last: it leaves the second relay without nginx for the rest of the run.
def test_without_nginx_relays_deliver_over_smtp(relays, online_account):
    alice = online_account(relays[0])
    bob = online_account(relays[1])
    secure_join(alice, bob)
    os.kill(relays[1].nginx_pid(), signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((relays[1].address, relays[1].port(443)), timeout=1).close()
            time.sleep(0.2)
        except OSError:
            break
    else:
        pytest.fail("nginx still listens")
    offset = len(relays[1].log("postfix"))
    before = counts(relays)
    seconds, snapshot = exchange(alice, bob, "over SMTP")
    assert snapshot.text == "over SMTP"
    assert seconds < ARRIVAL_LIMIT, f"{seconds:.1f} s"
    received = log_since(relays[1], "postfix", offset)
    assert "postfix/smtpd/smtpd" in received, received
    moved = {key: value - before[key] for key, value in counts(relays).items()}
    assert moved["transport smtp delivered"] >= 1, moved
    assert "nginx exited" in "".join(relays[1].output)


def test_ice_servers_name_our_turn_server_with_working_credentials(relay, online_account):
    """Delta Chat asks the relay for ICE servers (the `turn` METADATA
    key, filled by chatmail-turn's credentials socket): it lists the
    relay's own TURN server, by its bare address, and a TURN client
    relays UDP with the credentials it got (the local relay allows
    loopback peers; a relay on the internet does not)."""
    alice = online_account(relay)
    servers = alice.ice_servers()
    ours = [
        server for server in servers
        if any(f"{relay.address}:{relay.port(3478)}" in url for url in server.get("urls", []))
    ]
    assert ours, servers
    server = ours[0]
    assert int(server["username"]) > time.time() + 4 * 24 * 3600, "valid for days"
    probe = subprocess.run(
        [str(bin_dir() / "turn-probe"), f"{relay.address}:{relay.port(3478)}",
         server["username"], server["credential"], relay.address],
        capture_output=True, text=True, timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    assert "relayed through" in probe.stdout
    assert relay.scrape("chatmail-turn")["chatmail_turn_allocations_total"] >= 1
