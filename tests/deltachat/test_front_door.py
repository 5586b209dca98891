"""The front door people meet: IMAP and SMTP on port 443 (routed by
ALPN), the relay's pages in a real browser with QR codes a scanner reads,
onboarding links opened in a browser, and mail clients' autoconfig.

Everything runs in a network namespace of its own with nothing but
loopback (the relays, Delta Chat, Chromium, curl): a browser talks to
the world by itself, and here it cannot send a packet beyond loopback."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from deltachat_rpc_client import DeltaChat, Rpc

from relay import REPO, LocalRelay, NetworkNamespace, random_text, time_limit
from test_relay import exchange, secure_join

PORT_BASE = 30000
IP_ONLY = "127.0.0.1"
DOMAIN, DOMAIN_ADDRESS = "door.test", "127.0.0.2"
# Where the screenshots go (README shows them).
SCREENSHOTS = Path(os.environ.get("CHATMAIL_SCREENSHOTS", REPO / "target" / "screenshots"))


@pytest.fixture(autouse=True)
def limit():
    with time_limit(240):
        yield


@pytest.fixture(scope="module")
def door():
    """(namespace, IP-only relay, domain relay) in a fresh namespace. The
    domain relay says its certificate is a CA's (tls_self_signed=false),
    as a relay with a Let's Encrypt certificate does, so its page offers
    DCACCOUNT; clients here still accept its self-signed one."""
    netns = NetworkNamespace(f"chatmail-door-{os.getpid()}")
    started = []
    try:
        for address, domain in ((IP_ONLY, None), (DOMAIN_ADDRESS, DOMAIN)):
            state = tempfile.mkdtemp(prefix=f"chatmail-e2e-door-{address}-", dir="/var/tmp")
            os.chmod(state, 0o755)
            ini = ["tls_self_signed=false"] if domain else []
            started.append(LocalRelay(address, PORT_BASE, state, ini, mail_domain=domain,
                                      netns=netns))
        yield netns, started[0], started[1]
    finally:
        for relay in started:
            relay.stop()
            relay.remove_state()
        netns.delete()


@pytest.fixture
def door_dc(door, tmp_path):
    netns, _, _ = door
    server = netns.program(tmp_path, "deltachat-rpc-server", shutil.which("deltachat-rpc-server"))
    with Rpc(accounts_dir=str(tmp_path / "accounts"), rpc_server_path=str(server)) as rpc:
        yield DeltaChat(rpc)


# What the client snippets below share: a TLS context that takes the
# relays' self-signed certificates and asks for one ALPN protocol.
CLIENT_TLS = """
    import ssl

    def tls(alpn):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols([alpn])
        return context
"""


def python_in(netns, code, *args):
    """Runs `code` (which may use `tls(alpn)`) with this Python inside the
    namespace; its stdout."""
    program = textwrap.dedent(CLIENT_TLS) + textwrap.dedent(code)
    return netns.run(sys.executable, "-c", program, *args)


def curl(netns, *args):
    """curl inside the namespace: (status, headers, body); never follows
    redirects, accepts the relays' self-signed certificates."""
    output = netns.run(
        "curl", "--silent", "--insecure", "--max-time", "10",
        "--resolve", f"{DOMAIN}:{PORT_BASE + 443}:{DOMAIN_ADDRESS}",
        "--resolve", f"autoconfig.{DOMAIN}:{PORT_BASE + 443}:{DOMAIN_ADDRESS}",
        "--dump-header", "-", *args,
    )
    # (Read as text, the line ends are plain newlines.)
    head, _, body = output.partition("\n\n")
    lines = head.split("\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def screenshot(netns, url, name):
    """Headless Chromium loads `url` (scripts run) and writes a PNG of the
    page under SCREENSHOTS; returns its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    path.unlink(missing_ok=True)
    profile = tempfile.mkdtemp(prefix="chatmail-chromium-")
    try:
        netns.run(
            "chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
            "--ignore-certificate-errors", "--no-first-run",
            "--disable-background-networking", "--disable-component-update",
            # Names other than the relays' resolve to nothing.
            f"--host-resolver-rules=MAP {DOMAIN} {DOMAIN_ADDRESS}, MAP * ~NOTFOUND, "
            f"EXCLUDE {IP_ONLY}",
            f"--user-data-dir={profile}", "--window-size=800,1000",
            "--virtual-time-budget=5000", f"--screenshot={path}", url,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert path.exists() and path.stat().st_size > 0, f"no screenshot of {url}"
    return path


def qr_codes(path):
    """Every QR code zbar finds in the image, decoded."""
    output = subprocess.run(
        ["zbarimg", "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", str(path)],
        capture_output=True, text=True,
    ).stdout
    return [line for line in output.splitlines() if line]


@pytest.fixture
def walled(door):
    """Delta Chat's usual ports of the IP-only relay refused inside the
    namespace, as a network that lets only HTTPS out does."""
    netns, relay, _ = door
    ports = ", ".join(str(relay.port(port)) for port in (993, 143, 465, 587))
    netns.run("nft", "add", "table", "inet", "chatmail_wall")
    netns.run("nft", "add", "chain", "inet", "chatmail_wall", "out",
              "{ type filter hook output priority 0; }")
    netns.run("nft", "add", "rule", "inet", "chatmail_wall", "out", "ip", "daddr", relay.address,
              "tcp", "dport", f"{{ {ports} }}", "reject", "with", "tcp", "reset")
    try:
        yield netns, relay
    finally:
        netns.run("nft", "delete", "table", "inet", "chatmail_wall")


CONNECTS = """
    import socket, sys
    for port in sys.argv[2:]:
        try:
            socket.create_connection((sys.argv[1], int(port)), timeout=5).close()
            print(port, "open")
        except OSError:
            print(port, "refused")
"""


def test_delta_chat_sends_and_receives_through_port_443_alone(walled, door_dc):
    netns, relay = walled
    ports = [relay.port(port) for port in (993, 143, 465, 587, 443)]
    reachable = python_in(netns, CONNECTS, relay.address, *map(str, ports)).split("\n")
    assert reachable[:5] == [f"{port} {'open' if port == relay.port(443) else 'refused'}"
                             for port in ports], reachable

    accounts = []
    for _ in range(2):
        user, password = random_text(9), random_text(20)
        url = (
            f"dclogin:{user}@{relay.domain}?p={password}&v=1"
            f"&ih={relay.address}&ip={relay.port(443)}&is=ssl"
            f"&sh={relay.address}&sp={relay.port(443)}&ss=ssl&ic=3"
        )
        account = door_dc.add_account()
        account.add_transport_from_qr(url)
        account.bring_online()
        assert account.get_config("configured_addr") == f"{user}@{relay.domain}"
        accounts.append(account)
    alice, bob = accounts
    secure_join(alice, bob)
    for sender, recipient, text in [(alice, bob, "through 443"), (bob, alice, "back through 443")]:
        _, snapshot = exchange(sender, recipient, text)
        assert snapshot.text == text
        assert snapshot.show_padlock


PROXIED_CLIENTS = """
    import smtplib, socket, sys
    address, port = sys.argv[1], int(sys.argv[2])

    raw = socket.create_connection((address, port), timeout=10, source_address=("127.0.0.9", 0))
    imap = tls("imap").wrap_socket(raw)
    print(imap.recv(300).decode().split()[0:2])
    imap.sendall(b"a LOGIN x@[127.0.0.1] wrongpassword1\\r\\n")
    print(imap.recv(300).decode().split()[0:2])
    imap.close()
    with smtplib.SMTP_SSL(address, port, context=tls("smtp"), timeout=10,
                          source_address=("127.0.0.10", 0)) as smtp:
        print(smtp.ehlo()[0])
    # A client that sends a PROXY header of its own is not believed: the
    # stream reads no ClientHello, passes it to the web site, and there
    # the TLS handshake fails.
    raw = socket.create_connection((address, port), timeout=10)
    raw.sendall(b"PROXY TCP4 127.0.0.66 127.0.0.1 4000 993\\r\\n")
    try:
        tls("imap").wrap_socket(raw).recv(300)
        print("forged: answered")
    except (ssl.SSLError, OSError):
        print("forged: refused")
"""


def test_the_servers_behind_443_learn_each_clients_own_address(door):
    netns, relay, _ = door
    dovecot, postfix = len(relay.log("dovecot")), len(relay.log("postfix"))
    lines = python_in(netns, PROXIED_CLIENTS, relay.address, str(relay.port(443))).splitlines()
    assert lines == ["['*', 'OK']", "['a', 'NO']", "250", "forged: refused"], lines
    dovecot_log = relay.log("dovecot")[dovecot:]
    assert "rip=127.0.0.9" in dovecot_log, dovecot_log
    assert "127.0.0.66" not in dovecot_log, dovecot_log
    postfix_log = relay.log("postfix")[postfix:]
    assert "connect from unknown[127.0.0.10]" in postfix_log, postfix_log


def test_browsers_that_open_the_account_link_are_sent_on(door):
    netns, ip_only, domain = door
    https = f"https://{ip_only.address}:{ip_only.port(443)}"
    domain_https = f"https://{DOMAIN}:{domain.port(443)}"
    # A CA-certified relay: on to Delta Chat, which then POSTs.
    for path in ("/new", "/cgi-bin/newemail.py"):
        status, headers, _ = curl(netns, f"{domain_https}{path}")
        assert (status, headers.get("location")) == (
            302, f"dcaccount:https://{domain.address}:{domain.port(443)}/new")
        status, headers, _ = curl(netns, "--head", f"{domain_https}{path}")
        assert status == 302, headers
    # An IP-only relay: to its page, which makes a login link.
    status, headers, _ = curl(netns, f"{https}/new")
    assert (status, headers.get("location")) == (302, f"{https}/")
    # Delta Chat's POST still gets an account, at the old address too.
    for path in ("/new", "/cgi-bin/newemail.py"):
        status, _, body = curl(netns, "--request", "POST", f"{domain_https}{path}")
        assert status == 200, body
        assert json.loads(body)["email"].endswith(f"@{DOMAIN}")
    status, _, _ = curl(netns, "--request", "PUT", f"{https}/new")
    assert status == 403


AUTOCONFIG_SERVERS_ANSWER = """
    import imaplib, json, smtplib, sys
    address = sys.argv[1]
    servers = json.loads(sys.argv[2])

    for protocol, port, socket_type in servers:
        port = int(port)
        if protocol == "imap" and socket_type == "SSL":
            with imaplib.IMAP4_SSL(address, port, ssl_context=tls("imap"), timeout=10) as imap:
                greeting = imap.welcome.decode().split()[1]
        elif protocol == "imap":
            with imaplib.IMAP4(address, port, timeout=10) as imap:
                imap.starttls(ssl_context=tls("imap"))
                greeting = imap.noop()[0]
        elif socket_type == "SSL":
            with smtplib.SMTP_SSL(address, port, context=tls("smtp"), timeout=10) as smtp:
                greeting = smtp.noop()[0]
        else:
            with smtplib.SMTP(address, port, timeout=10) as smtp:
                smtp.starttls(context=tls("smtp"))
                greeting = smtp.noop()[0]
        print(protocol, port, socket_type, greeting)
"""


def autoconfig_servers(xml):
    root = ElementTree.fromstring(xml)
    servers = []
    for element in root.iter():
        if element.tag in ("incomingServer", "outgoingServer"):
            servers.append((element.get("type"), element.findtext("port"),
                            element.findtext("socketType")))
    return root, servers


def test_autoconfig_names_every_door_and_each_answers(door):
    netns, relay, domain = door
    status, headers, xml = curl(
        netns, f"https://{relay.address}:{relay.port(443)}"
               "/.well-known/autoconfig/mail/config-v1.1.xml")
    assert status == 200 and headers.get("content-type") == "application/xml", headers
    root, servers = autoconfig_servers(xml)
    assert root.tag == "clientConfig"
    assert root.findtext("emailProvider/incomingServer/hostname") == relay.address
    expected = [
        ("imap", relay.port(993), "SSL"), ("imap", relay.port(143), "STARTTLS"),
        ("imap", relay.port(443), "SSL"), ("smtp", relay.port(465), "SSL"),
        ("smtp", relay.port(587), "STARTTLS"), ("smtp", relay.port(443), "SSL"),
    ]
    assert servers == [(kind, str(port), socket_type) for kind, port, socket_type in expected]
    answers = python_in(netns, AUTOCONFIG_SERVERS_ANSWER, relay.address, json.dumps(servers))
    assert answers.splitlines() == [
        f"{kind} {port} {socket_type} {'OK' if kind == 'imap' else 250}"
        for kind, port, socket_type in expected
    ], answers
    # A domain relay serves it at autoconfig.<domain> too.
    status, _, xml = curl(
        netns, f"https://autoconfig.{DOMAIN}:{domain.port(443)}/mail/config-v1.1.xml")
    assert status == 200
    root, servers = autoconfig_servers(xml)
    assert root.findtext("emailProvider/domain") == DOMAIN
    assert len(servers) == 6


def test_the_pages_show_qr_codes_that_work(door, door_dc):
    netns, ip_only, domain = door
    # A CA-certified relay's page: the DCACCOUNT code, drawn on the server.
    page = screenshot(netns, f"https://{DOMAIN}:{domain.port(443)}/", "index-domain")
    assert qr_codes(page) == [f"DCACCOUNT:https://{domain.address}:{domain.port(443)}/new"]
    for name in ("info", "privacy"):
        shot = screenshot(netns, f"https://{DOMAIN}:{domain.port(443)}/{name}.html", name)
        assert qr_codes(shot) == []
    status, _, privacy = curl(netns, f"https://{DOMAIN}:{domain.port(443)}/privacy.html")
    assert status == 200 and "20 days" in privacy and "<script" not in privacy

    # An IP-only relay's page makes a login link in the browser; each
    # load a new one, and Delta Chat logs in with it.
    links = []
    for load in range(2):
        shot = screenshot(netns, f"https://{ip_only.address}:{ip_only.port(443)}/",
                          "index-ip-only" if load == 0 else "index-ip-only-again")
        codes = qr_codes(shot)
        assert len(codes) == 1, codes
        links.append(codes[0])
    assert links[0] != links[1]
    link = links[0]
    assert link.startswith("dclogin:")
    address, _, query = link[len("dclogin:"):].partition("?")
    name, _, at = address.partition("@")
    assert at == ip_only.domain and len(name) == 9 and name.isalnum(), link
    settings = {key: values[0] for key, values in parse_qs(query).items()}
    assert settings == {
        "p": settings["p"], "v": "1", "ih": ip_only.address, "ip": str(ip_only.port(993)),
        "is": "ssl", "sh": ip_only.address, "sp": str(ip_only.port(465)), "ss": "ssl", "ic": "3",
    }, link
    assert len(settings["p"]) == 12
    account = door_dc.add_account()
    account.add_transport_from_qr(link)
    account.bring_online()
    assert account.get_config("configured_addr") == address
    assert (ip_only.state_dir / "mail" / address / "password").exists()


VRFY_AND_RCPT = """
    import smtplib, sys
    with smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=10) as smtp:
        smtp.starttls(context=tls("smtp"))
        smtp.ehlo("client.example.org")
        for argument in sys.argv[3:]:
            code, text = smtp.docmd("VRFY", argument)
            print(code, text.decode().split()[0])
        print(smtp.docmd("MAIL FROM:<someone@example.org>")[0])
        # VRFY's answer changes nothing about RCPT TO.
        print(smtp.docmd("RCPT TO:<echo>")[0])
"""


def test_vrfy_on_port_25_answers_252_whatever_it_names(door):
    netns, relay, _ = door
    arguments = ["echo", "<echo>", f"echo@{relay.domain}", "nobody@example.org", "a b c"]
    answers = python_in(netns, VRFY_AND_RCPT, relay.address, str(relay.port(25)),
                        *arguments).splitlines()
    assert answers == ["252 2.0.0"] * len(arguments) + ["250", "504"], answers
