"""A NATS connection the server refuses leaves no socket behind (real nats-server with nkeys).

nats-py leaves the socket of a refused connect open; `potluck join` asks again every half
second until a reload admits its key, and a test process collected those sockets later, in
another test, as unraisable ResourceWarnings.
"""

import gc
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from potluck.events.connection import IdentityRefused, connect_bus
from potluck.localstack import NatsServer
from potluck.member.join import _connect
from potluck.registry.nats_auth import new_user_key, public_key_of, render_authorization, write_authorization


@pytest.fixture
def guarded_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server that admits only one service key (not the ones the tests connect with)."""
    server = NatsServer(tmp_path / "nats", authorization=True)
    server.auth_file.parent.mkdir(parents=True, exist_ok=True)
    write_authorization(server.auth_file, render_authorization([public_key_of(new_user_key().seed)], [], []))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def leaked_sockets() -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


async def test_refused_connects_leave_no_socket_open(guarded_nats: NatsServer) -> None:
    """Tried: five joins' connects with a key the server does not admit, and a service's
    connect_bus refused until it gives up. Must hold: each is refused as such (PermissionError,
    IdentityRefused), and the garbage collector finds no unclosed socket or transport after."""
    gc.collect()
    stranger = new_user_key().seed
    for _ in range(5):
        with pytest.raises(PermissionError):
            await _connect(guarded_nats.url, stranger, "h-stranger")
    with pytest.raises(IdentityRefused):
        await connect_bus(guarded_nats.url, name="stranger", seed=stranger, refused_after=2)
    assert leaked_sockets() == []
