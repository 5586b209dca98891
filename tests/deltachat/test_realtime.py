"""Webxdc realtime channels through the relay's own iroh relay: two Delta
Chat accounts on a local relay share a webxdc app and exchange realtime
data, which can only pass through the iroh relay the relay runs behind
its nginx (the URL chatmail-metadata hands out). The relay and the
clients run in a network namespace of their own with nothing but
loopback, so no packet of iroh's (which tries every address it has)
leaves it."""

import os
import shutil
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import pytest
from deltachat_rpc_client import DeltaChat, EventType, Rpc

from relay import LocalRelay, NetworkNamespace, parse_metrics, time_limit
from test_relay import secure_join

PORT_BASE = 30000


@pytest.fixture(autouse=True)
def limit():
    with time_limit(240):
        yield


@pytest.fixture(scope="module")
def isolated():
    """(namespace, relay) on 127.0.0.1 inside a fresh network namespace."""
    netns = NetworkNamespace(f"chatmail-realtime-{os.getpid()}")
    state = tempfile.mkdtemp(prefix="chatmail-e2e-realtime-", dir="/var/tmp")
    os.chmod(state, 0o755)
    relay = None
    try:
        relay = LocalRelay("127.0.0.1", PORT_BASE, state, netns=netns)
        yield netns, relay
    finally:
        if relay is not None:
            relay.stop()
            relay.remove_state()
        netns.delete()


@pytest.fixture
def isolated_dc(isolated, tmp_path):
    netns, _ = isolated
    server = netns.program(tmp_path, "deltachat-rpc-server", shutil.which("deltachat-rpc-server"))
    with Rpc(accounts_dir=str(tmp_path / "accounts"), rpc_server_path=str(server)) as rpc:
        yield DeltaChat(rpc)


def webxdc_app(directory: Path):
    path = directory / "realtime.xdc"
    with zipfile.ZipFile(path, "w") as app:
        app.writestr("manifest.toml", 'name = "realtime test"\n')
        app.writestr("index.html", "<html><body>realtime</body></html>\n")
    return path


def iroh_metrics(netns, relay):
    """The iroh relay's metrics, fetched from inside the namespace."""
    fetch = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())"
    return parse_metrics(netns.run(sys.executable, "-c", fetch, relay.metrics_url("iroh-relay")))


def test_webxdc_realtime_data_passes_through_our_iroh_relay(isolated, isolated_dc, tmp_path):
    netns, relay = isolated
    accounts = []
    for _ in range(2):
        url, addr, _password = relay.dclogin()
        account = isolated_dc.add_account()
        account.set_config("webxdc_realtime_enabled", "1")
        account.add_transport_from_qr(url)
        account.bring_online()
        accounts.append(account)
    alice, bob = accounts
    before = iroh_metrics(netns, relay)
    secure_join(alice, bob)

    chat = alice.create_chat(bob)
    alice_app = chat.send_message(text="play", file=str(webxdc_app(tmp_path)))
    bob_app = bob.wait_for_incoming_msg()
    assert bob_app.get_snapshot().text == "play"
    bob_app.get_snapshot().chat.accept()
    alice_app.send_webxdc_realtime_advertisement()
    bob_app.send_webxdc_realtime_advertisement()

    stop = threading.Event()

    def keep_sending():
        while not stop.is_set():
            alice_app.send_webxdc_realtime_data(b"hello over iroh")
            time.sleep(1)

    sender = threading.Thread(target=keep_sending, daemon=True)
    sender.start()
    try:
        event = bob.wait_for_event(EventType.WEBXDC_REALTIME_DATA)
        assert bytes(event.data) == b"hello over iroh"
        assert event.msg_id == bob_app.id
    finally:
        stop.set()
        sender.join(timeout=5)

    after = iroh_metrics(netns, relay)
    # Both clients connected to the relay's iroh relay, and it forwarded
    # their packets to each other.
    assert after["relayserver_relay_accepts_total"] - before.get(
        "relayserver_relay_accepts_total", 0) >= 2, after
    assert after["relayserver_send_packets_sent_total"] > 0, after
    assert after["relayserver_bytes_sent_total"] > 0, after
