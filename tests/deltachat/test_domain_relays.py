"""Two domain relays, alpha.test and beta.test, on loopback: each signs
its mail with OpenDKIM as chatmail-configure sets it up, DNS (the tests'
server on loopback) serves the records `chatmail-configure dns` prints,
and their certificates come from a test CA the transports trust. Delta
Chat accounts on each exchange encrypted messages both ways, a bounce
from one relay reaches the other signed, and unsigned mail from a domain
is refused with 554 5.7.1."""

import gzip
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import relay_settings
from relay import REPO, LocalRelay, bin_dir, insecure_tls
from test_relay import exchange, secure_join

# Their own addresses, beside the IP-only relays of the other tests.
DOMAINS = (("alpha.test", "127.0.0.3"), ("beta.test", "127.0.0.4"))
PORT_BASE = 30000


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        return udp.getsockname()[1]


def make_ca(directory: Path, domains):
    """A CA, and a certificate it signed for each domain (and its
    mta-sts name and address)."""
    run = lambda *args: subprocess.run(args, check=True, capture_output=True)
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-days", "2", "-subj", "/CN=domain relays test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", str(ca_key), "-out", str(ca))
    certs = {}
    for domain, address in domains:
        key, csr, cert = (directory / f"{domain}.{ext}" for ext in ("key", "csr", "pem"))
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-nodes", "-subj", f"/CN={domain}", "-keyout", str(key), "-out", str(csr))
        extensions = directory / f"{domain}.ext"
        extensions.write_text(
            "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            f"subjectAltName=DNS:{domain},DNS:mta-sts.{domain},IP:{address}\n"
        )
        run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert))
        for path in (cert, key):
            path.chmod(0o644)
        certs[domain] = (cert, key)
    ca.chmod(0o644)
    return ca, certs


@pytest.fixture(autouse=True)
def time_limit():
    """A test that waits for a message that never comes fails instead of
    holding the whole run."""

    def expire(signum, frame):
        raise TimeoutError("the test took longer than 180 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(180)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def domain_relays(notification_server):
    directory = Path(tempfile.mkdtemp(prefix="chatmail-e2e-domains-", dir="/var/tmp"))
    directory.chmod(0o755)
    ca, certs = make_ca(directory, DOMAINS)
    dns_port = free_port()
    started, dns = [], None
    try:
        for domain, address in DOMAINS:
            state = tempfile.mkdtemp(prefix=f"chatmail-e2e-{domain}-", dir="/var/tmp")
            os.chmod(state, 0o755)
            cert, key = certs[domain]
            settings = relay_settings(notification_server) + [
                f"dns_resolver=127.0.0.1:{dns_port}",
                "dns_dnssec_validation=no",
                f"filtermail_transport_ca_file={ca}",
            ]
            started.append(LocalRelay(
                address, PORT_BASE, state, settings, mail_domain=domain,
                extra_args=["--tls-cert", str(cert), "--tls-key", str(key)],
            ))
        # What each operator would publish: the records chatmail-configure
        # prints, with the relay's DKIM key.
        zones = []
        for relay in started:
            zone = subprocess.run(
                [str(bin_dir() / "chatmail-configure"), "dns", str(relay.state_dir / "chatmail.ini"),
                 "--ipv4", relay.address,
                 "--dkim-key", str(relay.state_dir / "opendkim" / "keys" / "opendkim.private")],
                check=True, capture_output=True, text=True,
            ).stdout
            path = directory / f"{relay.domain}.zone"
            path.write_text(zone)
            zones += ["--zone", f"{relay.domain}={path}"]
        dns = subprocess.Popen(
            [str(bin_dir() / "test-dns"), "--listen", f"127.0.0.1:{dns_port}", *zones],
            stdout=subprocess.PIPE, text=True,
        )
        assert dns.stdout.readline().strip() == "ready"
        yield started
    finally:
        if dns is not None:
            dns.kill()
            dns.wait()
        for relay in started:
            relay.stop()
            relay.remove_state()
        shutil.rmtree(directory, ignore_errors=True)


def test_domain_relays_exchange_signed_encrypted_mail(domain_relays, online_account):
    alpha, beta = domain_relays
    alice = online_account(alpha)
    bob = online_account(beta)
    assert alice.addr.endswith("@alpha.test") and bob.addr.endswith("@beta.test")
    # The securejoin handshake itself crosses the relays both ways.
    secure_join(alice, bob)
    for sender, recipient, text in [(alice, bob, "hello beta"), (bob, alice, "hello alpha")]:
        _, snapshot = exchange(sender, recipient, text)
        assert snapshot.text == text
        assert snapshot.show_padlock
    # Each receiving filter checked the other's OpenDKIM signature (an
    # unsigned message from a domain is refused, see below) and took the
    # message over HTTPS /mxdeliv.
    for relay in (alpha, beta):
        assert "POST /mxdeliv" not in relay.log("nginx-error")
        assert "554" not in relay.log("filtermail-incoming")


def encrypted_mail(sender, recipient):
    text = (REPO / "tests" / "data" / "mail" / "encrypted.eml").read_text()
    return (
        text.replace("{subject}", "Hi")
        .replace("From: one@example.org", f"From: <{sender}>", 1)
        .replace("From: <one@example.org>", f"From: <{sender}>", 1)
        .replace("To: two@example.org", f"To: <{recipient}>", 1)
        .replace("To: <two@example.org>", f"To: <{recipient}>", 1)
    )


def test_unsigned_mail_from_a_domain_is_refused(domain_relays, online_account):
    alpha, beta = domain_relays
    alice = online_account(alpha)
    bob = online_account(beta)
    # alice's mail as alpha would send it, without alpha's signature.
    message = encrypted_mail(alice.addr, bob.addr)
    with smtplib.SMTP(beta.address, beta.port(25)) as smtp:
        smtp.starttls(context=insecure_tls())
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail(alice.addr, [bob.addr], message)
    assert refused.value.smtp_code == 554
    assert b"5.7.1 No DKIM signature found" in refused.value.smtp_error


def inbox_texts(relay, addr):
    texts = []
    for sub in ("new", "cur"):
        folder = relay.state_dir / "mail" / addr / sub
        for path in folder.glob("*") if folder.exists() else []:
            data = path.read_bytes()
            texts.append((gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode(
                errors="replace"))
    return texts


def test_a_bounce_reaches_the_sender_signed(domain_relays, online_account):
    alpha, beta = domain_relays
    alice = online_account(alpha)
    nobody = "nobody123@beta.test"
    with smtplib.SMTP_SSL(alpha.address, alpha.port(465), context=insecure_tls()) as smtp:
        smtp.login(alice.addr, alice.password)
        smtp.sendmail(alice.addr, [nobody], encrypted_mail(alice.addr, nobody))
    # beta's Postfix bounces (Dovecot has no such account); the bounce is
    # signed by beta's OpenDKIM and passes alpha's strict DKIM check.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        bounces = [t for t in inbox_texts(alpha, alice.addr) if "MAILER-DAEMON@beta.test" in t]
        if bounces:
            break
        time.sleep(0.5)
    else:
        pytest.fail("no bounce arrived:\n" + beta.log("postfix")[-3000:]
                    + alpha.log("filtermail-incoming")[-3000:])
    assert nobody in bounces[0]
