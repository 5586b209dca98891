"""Two domain relays, alpha.test and beta.test, on loopback: each signs
its mail with OpenDKIM as chatmail-configure sets it up, DNS (the tests'
server on loopback) serves the records `chatmail-configure dns` prints,
and their certificates come from an ACME CA (Debian's pebble, through
certbot over HTTP-01 on the relay's HTTP port) whose root the transports
trust. Delta Chat accounts on each exchange encrypted messages both ways,
a bounce from one relay reaches the other signed, and unsigned mail from
a domain is refused with 554 5.7.1."""

import gzip
import json
import os
import ssl
import urllib.request
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
from relay import REPO, LocalRelay, bin_dir, insecure_tls, time_limit
from test_relay import exchange, secure_join

# Their own addresses, beside the IP-only relays of the other tests.
DOMAINS = (("alpha.test", "127.0.0.3"), ("beta.test", "127.0.0.4"))
PORT_BASE = 30000
# The DNS servers (UDP and TCP) and pebble on 127.0.0.1, at fixed ports
# below Linux's ephemeral range (32768 and up) that no relay uses: a port
# picked there as free may be an outgoing connection's by the time the
# server binds it (it happened in CI).
DNS_PORT_PEBBLE = PORT_BASE + 53
DNS_PORT_RELAYS = PORT_BASE + 54
PEBBLE_API, PEBBLE_MANAGEMENT, PEBBLE_TLS = PORT_BASE + 61, PORT_BASE + 62, PORT_BASE + 63


def make_ca(directory: Path):
    """A CA and a certificate it signed for 127.0.0.1 (pebble's API)."""
    run = lambda *args: subprocess.run(args, check=True, capture_output=True)
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-days", "2", "-subj", "/CN=pebble API test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", str(ca_key), "-out", str(ca))
    key, csr, cert = (directory / f"pebble.{ext}" for ext in ("key", "csr", "pem"))
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(csr))
    extensions = directory / "pebble.ext"
    extensions.write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
                          "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert))
    return ca, cert, key


def wait_for_port(port, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def start_dns(port, zones):
    """The tests' DNS server on 127.0.0.1:`port` with `zones` (domain ->
    zone file)."""
    args = [str(bin_dir() / "test-dns"), "--listen", f"127.0.0.1:{port}"]
    for domain, path in zones.items():
        args += ["--zone", f"{domain}={path}"]
    dns = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert dns.stdout.readline().strip() == "ready"
    return dns


def certificates_from_pebble(directory: Path):
    """A certificate for each domain (and its mta-sts name) from pebble,
    through certbot answering HTTP-01 on the relay's address and HTTP port
    before the relay runs; returns (pebble's root, {domain: (chain,
    key)})."""
    ca, cert, key = make_ca(directory)
    zones = {}
    for domain, address in DOMAINS:
        zones[domain] = directory / f"{domain}.a.zone"
        zones[domain].write_text(
            f"{domain}. 60 IN A {address}\nmta-sts.{domain}. 60 IN A {address}\n")
    dns_port, api, management = DNS_PORT_PEBBLE, PEBBLE_API, PEBBLE_MANAGEMENT
    dns = start_dns(dns_port, zones)
    config = directory / "pebble.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{api}",
        "managementListenAddress": f"127.0.0.1:{management}",
        "certificate": str(cert), "privateKey": str(key),
        "httpPort": PORT_BASE + 80, "tlsPort": PEBBLE_TLS,
        "ocspResponderURL": "", "externalAccountBindingRequired": False,
    }}))
    environment = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
    pebble = subprocess.Popen(
        ["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{dns_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment,
    )
    try:
        wait_for_port(api)
        wait_for_port(management)
        certs = {}
        certbot_dir = directory / "certbot"
        for domain, address in DOMAINS:
            subprocess.run(
                ["certbot", "certonly", "--non-interactive", "--agree-tos",
                 "--register-unsafely-without-email", "--standalone",
                 "--http-01-address", address, "--http-01-port", str(PORT_BASE + 80),
                 "--server", f"https://127.0.0.1:{api}/dir", "--cert-name", domain,
                 "--domains", f"{domain},mta-sts.{domain}",
                 "--config-dir", str(certbot_dir / "config"),
                 "--work-dir", str(certbot_dir / "work"),
                 "--logs-dir", str(certbot_dir / "logs")],
                check=True, capture_output=True,
                env=dict(os.environ, REQUESTS_CA_BUNDLE=str(ca)),
            )
            live = certbot_dir / "config" / "live" / domain
            certs[domain] = (live / "fullchain.pem", live / "privkey.pem")
        context = ssl.create_default_context(cafile=str(ca))
        with urllib.request.urlopen(f"https://127.0.0.1:{management}/roots/0",
                                    context=context, timeout=10) as answer:
            root = directory / "pebble-root.pem"
            root.write_bytes(answer.read())
    finally:
        pebble.kill()
        pebble.wait()
        dns.kill()
        dns.wait()
    # The relays' daemons (vmail) read the root; the servers read the rest
    # as root.
    root.chmod(0o644)
    return root, certs


@pytest.fixture(autouse=True)
def limit():
    with time_limit(180):
        yield


@pytest.fixture(scope="module")
def domain_relays(notification_server):
    directory = Path(tempfile.mkdtemp(prefix="chatmail-e2e-domains-", dir="/var/tmp"))
    directory.chmod(0o755)
    root, certs = certificates_from_pebble(directory)
    dns_port = DNS_PORT_RELAYS
    started, dns = [], None
    try:
        for domain, address in DOMAINS:
            state = tempfile.mkdtemp(prefix=f"chatmail-e2e-{domain}-", dir="/var/tmp")
            os.chmod(state, 0o755)
            cert, key = certs[domain]
            settings = relay_settings(notification_server) + [
                f"dns_resolver=127.0.0.1:{dns_port}",
                "dns_dnssec_validation=no",
                f"filtermail_transport_ca_file={root}",
            ]
            started.append(LocalRelay(
                address, PORT_BASE, state, settings, mail_domain=domain,
                extra_args=["--tls-cert", str(cert), "--tls-key", str(key)],
            ))
        # What each operator would publish: the records chatmail-configure
        # prints, with the relay's DKIM key.
        zones = {}
        for relay in started:
            zone = subprocess.run(
                [str(bin_dir() / "chatmail-configure"), "dns", str(relay.state_dir / "chatmail.ini"),
                 "--ipv4", relay.address,
                 "--dkim-key", str(relay.state_dir / "opendkim" / "keys" / "opendkim.private")],
                check=True, capture_output=True, text=True,
            ).stdout
            path = directory / f"{relay.domain}.zone"
            path.write_text(zone)
            zones[relay.domain] = path
        dns = start_dns(dns_port, zones)
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
        receiver = beta if recipient is bob else alpha
        offset = len(receiver.log("postfix"))
        _, snapshot = exchange(sender, recipient, text)
        assert snapshot.text == text
        assert snapshot.show_padlock
        # Taken over HTTPS /mxdeliv and reinjected by filtermail-incoming,
        # which refuses a domain's mail without its DKIM signature (see
        # the next test): no session on the port-25 service.
        received = receiver.log("postfix")[offset:]
        assert "postfix/reinject_incoming/smtpd" in received, received
        assert "postfix/smtpd/smtpd" not in received, received


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


def slow_mxdeliv_upload(relay, source, declared):
    """A TLS connection from `source` to the relay's nginx that starts a
    POST /mxdeliv declaring `declared` body bytes and sends only the
    first one; the caller trickles or closes it."""
    raw = socket.create_connection((relay.address, relay.port(443)), timeout=10,
                                   source_address=(source, 0))
    tls = insecure_tls().wrap_socket(raw, server_hostname=relay.domain)
    tls.sendall(
        (f"POST /mxdeliv HTTP/1.1\r\nHost: {relay.domain}\r\n"
         f"Content-Type: message/rfc822\r\nContent-Length: {declared}\r\n\r\nF").encode())
    return tls


def test_slow_peers_at_mxdeliv_do_not_hold_up_other_relays(domain_relays, online_account):
    """Six peers (from their own address) trickle 30 MiB bodies into
    beta's nginx; alpha's relay still delivers to beta through the same
    door at once, since nginx takes a body whole before the filter sees
    it. The stalled uploads are answered nothing but their close: none
    was taken."""
    alpha, beta = domain_relays
    alice = online_account(alpha)
    bob = online_account(beta)
    secure_join(alice, bob)
    slow = [slow_mxdeliv_upload(beta, "127.0.0.9", 30 << 20) for _ in range(6)]
    try:
        time.sleep(1)
        offset = len(beta.log("postfix"))
        seconds, snapshot = exchange(alice, bob, "through a crowded door")
        assert snapshot.text == "through a crowded door"
        assert seconds < 10, f"{seconds:.1f} s"
        received = beta.log("postfix")[offset:]
        assert "postfix/reinject_incoming/smtpd" in received, received
        # The slow peers are still waiting: nothing answered them.
        for connection in slow:
            connection.settimeout(0.2)
            with pytest.raises(socket.timeout):
                connection.recv(1)
            connection.sendall(b"r")
    finally:
        for connection in slow:
            connection.close()


def test_nginx_takes_at_most_30_connections_per_address_at_mxdeliv(domain_relays):
    """A 31st /mxdeliv upload from one address is answered 503 while the
    30 others are open; another address is not affected."""
    _, beta = domain_relays
    held = [slow_mxdeliv_upload(beta, "127.0.0.10", 1000) for _ in range(30)]
    try:
        time.sleep(0.5)
        extra = slow_mxdeliv_upload(beta, "127.0.0.10", 1000)
        extra.settimeout(10)
        answer = extra.recv(200).decode(errors="replace")
        extra.close()
        assert answer.startswith("HTTP/1.1 503"), answer
        other = slow_mxdeliv_upload(beta, "127.0.0.11", 1000)
        other.settimeout(0.5)
        with pytest.raises(socket.timeout):
            other.recv(1)
        other.close()
    finally:
        for connection in held:
            connection.close()
