"""Delta Chat, the real client, against local relays: accounts created by
the first login, end-to-end encryption set up by a QR invitation,
messages both ways on one relay and across two, cleartext refused, push
notifications, and a clean stop on Ctrl-C."""

import smtplib
import ssl
import subprocess
import tempfile
import time

import pytest

from relay import LocalRelay

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
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_cleartext_from_another_server_is_refused_with_523(relay, online_account):
    alice = online_account(relay)
    sender = "someone@[127.0.0.2]"
    message = CLEARTEXT.format(sender=sender, recipient=alice.addr, stamp=time.time())
    with smtplib.SMTP(relay.address, relay.port(25)) as smtp:
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


def test_ctrl_c_stops_every_process_of_the_relay():
    state = tempfile.mkdtemp(prefix="chatmail-e2e-stop-", dir="/var/tmp")
    relay = LocalRelay("127.0.0.3", 31000, state)
    assert relay.stop() == 0, "".join(relay.output)
    assert "stopping the relay" in "".join(relay.output)
    leftover = subprocess.run(
        ["pgrep", "-f", state], capture_output=True, text=True
    ).stdout.split()
    assert leftover == [], leftover
    status = subprocess.run(["postfix", "-c", f"{state}/postfix", "status"], capture_output=True)
    assert status.returncode != 0, "postfix still running"
    relay.remove_state()
