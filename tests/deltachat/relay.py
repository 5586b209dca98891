"""Local relays (chatmail-local-relay), a notification server and Delta
Chat accounts for the end-to-end tests and the latency benchmark."""

import contextlib
import http.server
import imaplib
import json
import os
import random
import shutil
import signal
import ssl
import string
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def bin_dir() -> Path:
    """Where the workspace's binaries are (CHATMAIL_BIN_DIR or target/debug)."""
    return Path(os.environ.get("CHATMAIL_BIN_DIR", REPO / "target" / "debug"))


def random_text(n, alphabet=string.ascii_lowercase + string.digits):
    return "".join(random.choice(alphabet) for _ in range(n))


def parse_metrics(text):
    """Every series of a Prometheus text exposition, with its value."""
    series = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            series[key] = float(value)
    return series


@contextlib.contextmanager
def time_limit(seconds):
    """A test that waits for something that never comes fails after
    `seconds` instead of holding the whole run."""

    def expire(signum, frame):
        raise TimeoutError(f"the test took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


class LocalRelay:
    """A running chatmail-local-relay; `stop()` sends Ctrl-C (SIGINT)."""

    def __init__(self, address, port_base, state_dir, ini=(), mail_domain=None, extra_args=(),
                 netns=None):
        self.address = address
        self.mail_domain = mail_domain
        self.port_base = port_base
        self.state_dir = Path(state_dir)
        # A network namespace of its own (see NetworkNamespace): the relay
        # and everything it starts see only that namespace's loopback.
        self.netns = netns
        args = [
            *(netns.command() if netns else ()),
            str(bin_dir() / "chatmail-local-relay"),
            "--listen", address,
            "--port-base", str(port_base),
            "--state-dir", str(state_dir),
            *extra_args,
        ]
        if mail_domain:
            args += ["--ini", f"mail_domain={mail_domain}"]
        for setting in ini:
            args += ["--ini", setting]
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.output = []
        deadline = time.monotonic() + 60
        for line in self.process.stdout:
            self.output.append(line)
            if "is running" in line:
                break
            if time.monotonic() > deadline:
                break
        else:
            raise RuntimeError("chatmail-local-relay exited:\n" + "".join(self.output))
        # Keep reading so the relay never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.process.stdout:
            self.output.append(line)

    @property
    def domain(self):
        return self.mail_domain or f"[{self.address}]"

    def port(self, standard):
        return self.port_base + standard

    def dclogin(self, user=None, password=None):
        """A `dclogin:` URL for a new account (created by its first login)."""
        user = user or random_text(9)
        password = password or random_text(20, string.ascii_letters + string.digits)
        url = (
            f"dclogin:{user}@{self.domain}?p={password}&v=1"
            f"&ih={self.address}&ip={self.port(993)}&is=ssl"
            f"&sh={self.address}&sp={self.port(465)}&ss=ssl&ic=3"
        )
        return url, f"{user}@{self.domain}", password

    def https(self, path, method="POST"):
        """(status, body) of a request to the relay's nginx."""
        request = urllib.request.Request(
            f"https://{self.address}:{self.port(443)}{path}", method=method
        )
        try:
            with urllib.request.urlopen(request, context=insecure_tls(), timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def new_account(self):
        """What a DCACCOUNT QR code gets: an address and password from
        POST /new, as a dclogin: URL with this relay's ports."""
        status, body = self.https("/new")
        if status != 200:
            raise RuntimeError(f"POST /new: {status} {body}")
        account = json.loads(body)
        user = account["email"].split("@")[0]
        return self.dclogin(user, account["password"])

    def metrics_url(self, name):
        """The metrics address the relay printed for `name`
        (`filtermail-transport`, `dovecot`, ...)."""
        deadline = time.monotonic() + 10
        while True:
            for line in list(self.output):
                words = line.split()
                if words[:1] == ["metrics"] and len(words) == 3 and words[2] == f"({name})":
                    return words[1]
            if time.monotonic() > deadline:
                raise RuntimeError(f"no metrics line for {name}:\n" + "".join(self.output))
            time.sleep(0.1)

    def scrape(self, name):
        """Every series of `name`'s metrics endpoint, with its value."""
        with urllib.request.urlopen(self.metrics_url(name), timeout=10) as response:
            return parse_metrics(response.read().decode())

    def nginx_pid(self):
        return int((self.state_dir / "nginx" / "nginx.pid").read_text())

    def log(self, name):
        path = self.state_dir / "log" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout=60):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=timeout)
        return self.process.returncode

    def remove_state(self):
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def register_device_token(self, addr, password, token):
        """What Delta Chat does with a device token on a relay that
        supports it: SETMETADATA on the INBOX, over its IMAP login."""
        imaplib.Commands.setdefault("SETMETADATA", ("AUTH", "SELECTED"))
        with imaplib.IMAP4_SSL(self.address, self.port(993), ssl_context=insecure_tls()) as imap:
            imap.login(addr, password)
            typ, data = imap._simple_command(
                "SETMETADATA", "INBOX", f'(/private/devicetoken "{token}")'
            )
            if typ != "OK":
                raise RuntimeError(f"SETMETADATA: {typ} {data}")


def insecure_tls(maximum_version=None):
    """A client TLS context that takes the relay's self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if maximum_version is not None:
        context.maximum_version = maximum_version
    return context


def make_tls_files(directory: Path):
    """A CA and a certificate it signed for 127.0.0.1 (rustls refuses a
    self-signed CA certificate as a server certificate)."""
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    run = lambda *args: subprocess.run(args, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-days", "2", "-subj", "/CN=test notification CA",
        "-keyout", str(ca_key), "-out", str(ca_cert))
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(csr))
    extensions = directory / "server.ext"
    extensions.write_text("basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert))
    for path in (ca_cert, cert, key):
        path.chmod(0o644)
    return ca_cert, cert, key


class NotificationServer:
    """An HTTPS server that records the device tokens posted to /notify."""

    def __init__(self, directory: Path):
        self.ca, cert, key = make_tls_files(directory)
        self.tokens = []
        self.arrived = threading.Condition()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length).decode()
                with server.arrived:
                    server.tokens.append(body)
                    server.arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}/notify"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait_for(self, token, timeout):
        deadline = time.monotonic() + timeout
        with self.arrived:
            while token not in self.tokens:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.arrived.wait(left)
        return True

    def close(self):
        self.httpd.shutdown()


class NetworkNamespace:
    """A network namespace with nothing but its own loopback interface:
    programs run in it (`command()`) can reach only each other, so a test
    whose client would try every address it has (iroh does) sends no
    packet beyond loopback."""

    def __init__(self, name):
        self.name = name
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        subprocess.run(self.command() + ["ip", "link", "set", "lo", "up"], check=True,
                       capture_output=True)

    def command(self):
        return ["ip", "netns", "exec", self.name]

    def run(self, *args):
        return subprocess.run(self.command() + list(args), check=True, capture_output=True,
                              text=True).stdout

    def program(self, directory: Path, name, program):
        """A script in `directory` that runs `program` in the namespace
        (for clients that take a program path, such as Rpc)."""
        script = directory / name
        script.write_text(f"#!/bin/sh\nexec ip netns exec {self.name} {program} \"$@\"\n")
        script.chmod(0o755)
        return script

    def delete(self):
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)
