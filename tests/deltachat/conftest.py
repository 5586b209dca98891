import os
import shutil
import tempfile
from pathlib import Path
import pytest
from deltachat_rpc_client import DeltaChat, Rpc

from relay import LocalRelay, NotificationServer

# Ports PORT_BASE + 25, + 465, ... on each relay's own loopback address;
# away from the 20000 of a local relay a developer may be running.
PORT_BASE = 30000


@pytest.fixture(scope="session")
def notification_server():
    # Readable by the relay's daemons, which run as vmail.
    directory = tempfile.mkdtemp(prefix="chatmail-e2e-notifications-", dir="/var/tmp")
    os.chmod(directory, 0o755)
    server = NotificationServer(Path(directory))
    yield server
    server.close()
    shutil.rmtree(directory, ignore_errors=True)


def relay_settings(notification_server):
    return [
        # Tests and the benchmark send faster than a person.
        "max_user_send_per_minute=6000",
        "max_user_send_burst_size=1000",
        f"notification_url={notification_server.url}",
        f"notification_ca_file={notification_server.ca}",
    ]


@pytest.fixture(scope="session")
def relays(notification_server):
    """Two relays, [127.0.0.1] and [127.0.0.2], delivering to each other
    through filtermail-transport (their port bases are equal, so each
    one's remote SMTP port is the other's port 25)."""
    started = []
    try:
        for address in ("127.0.0.1", "127.0.0.2"):
            state = tempfile.mkdtemp(prefix=f"chatmail-e2e-{address}-", dir="/var/tmp")
            os.chmod(state, 0o755)
            started.append(
                LocalRelay(address, PORT_BASE, state, relay_settings(notification_server))
            )
        yield started
    finally:
        for relay in started:
            relay.stop()
            relay.remove_state()


@pytest.fixture
def relay(relays):
    return relays[0]


@pytest.fixture
def dc(tmp_path):
    with Rpc(accounts_dir=str(tmp_path / "accounts")) as rpc:
        yield DeltaChat(rpc)


@pytest.fixture
def online_account(dc):
    """Makes an account on a relay from a dclogin: URL, online and idle."""

    def make(relay):
        url, addr, password = relay.dclogin()
        account = dc.add_account()
        account.add_transport_from_qr(url)
        account.bring_online()
        account.addr, account.password = addr, password
        return account

    return make
