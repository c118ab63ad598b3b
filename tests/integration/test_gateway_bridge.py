"""The gateway's bridge (services/sshgateway/bridge.py) between two real asyncssh channels on
loopback, at the moment one side is gone and the other still sends.

asyncssh closes a channel's sending side as soon as the peer's CLOSE is read, but tells the
session (`connection_lost`) only on a later turn of the loop. A user's input read in between
(an upload still streaming when the container's `head -c N` has exited: both sockets readable
in one poll) went to `host.write`, which raised BrokenPipeError inside the user's connection;
asyncssh took that for an internal error and reset the user's whole TCP connection, so a
finished upload exited 255 ("client_loop: send disconnect: Broken pipe") and every other
channel on that connection died with it.
"""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncssh
import pytest

from potluck.sshgateway.audit import ByteCounts
from potluck.sshgateway.bridge import Bridge, HostSide


class _Served(asyncssh.SSHServerSession[bytes]):
    """A server session that hands its channel to the test and records what it is sent."""

    def __init__(self, channels: "asyncio.Queue[_Served]") -> None:
        self._channels = channels
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.received = b""

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan

    def shell_requested(self) -> bool:
        return True

    def session_started(self) -> None:
        self._channels.put_nowait(self)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.received += data


@dataclass
class _Loopback:
    conn: asyncssh.SSHClientConnection
    served: "asyncio.Queue[_Served]"
    closed: list[Exception | None] = field(default_factory=list)


class _Open(asyncssh.SSHServer):
    def __init__(self, served: "asyncio.Queue[_Served]") -> None:
        self._served = served

    def begin_auth(self, username: str) -> bool:
        return False  # no authentication: the test's own loopback server

    def session_requested(self) -> _Served:
        return _Served(self._served)


@pytest.fixture
async def loopback() -> AsyncIterator[_Loopback]:
    served: asyncio.Queue[_Served] = asyncio.Queue()
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_factory=lambda: _Open(served),
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        encoding=None,
        line_editor=False,
    )
    port = server.sockets[0].getsockname()[1]
    conn = await asyncssh.connect("127.0.0.1", port, known_hosts=None, username="t", client_keys=None)
    try:
        yield _Loopback(conn, served)
    finally:
        conn.close()
        server.close()
        await server.wait_closed()


async def _bridged(loop: _Loopback) -> tuple[Bridge, _Served, _Served]:
    """A bridge whose user side and host side are each a real channel: (bridge, user's peer, host's peer)."""
    bridge = Bridge(ByteCounts())
    await loop.conn.create_session(asyncssh.SSHClientSession[bytes], encoding=None)
    async with asyncio.timeout(10):
        user = await loop.served.get()
    assert user.chan is not None
    bridge.user = user.chan
    host_chan, _ = await loop.conn.create_session(
        lambda: HostSide(bridge, lambda side, exc: loop.closed.append(exc)), encoding=None
    )
    async with asyncio.timeout(10):
        host = await loop.served.get()
    bridge.connect(host_chan)
    return bridge, user, host


async def _received(peer: _Served, data: bytes) -> None:
    async with asyncio.timeout(10):
        while peer.received != data:
            await asyncio.sleep(0.01)


async def test_input_after_the_hosts_session_closed_is_dropped_not_raised(loopback: _Loopback) -> None:
    """Tried: the host's session exits and closes; then the user's input, end of input, a window
    change, a signal and a break arrive. Must hold: none raises (each would have reset the
    user's connection), the late input reaches nobody and is not counted as delivered, and the
    connection still carries a new session."""
    bridge, _, host = await _bridged(loopback)
    bridge.from_user(b"before")
    await _received(host, b"before")
    assert host.chan is not None
    host.chan.exit(0)
    assert bridge.host is not None
    await bridge.host.wait_closed()
    assert bridge.host.is_closing()

    bridge.from_user(b"after the close")
    bridge.user_eof()
    bridge.resize(80, 24, 0, 0)
    bridge.signal("INT")
    assert bridge.send_break(100) is False

    assert bridge.counts.bytes_in == len(b"before")
    assert host.received == b"before"  # and nothing after the close
    assert loopback.closed == [None]  # the host's side ended once, cleanly
    again, _, again_host = await _bridged(loopback)  # the connection lives on
    again.from_user(b"x")
    await _received(again_host, b"x")


async def test_input_after_the_gateway_closed_the_hosts_side_is_dropped(loopback: _Loopback) -> None:
    """Tried: the gateway closes the host's side itself (the session ends from the gateway) and
    the user's input still arrives. Must hold: nothing raises, nothing more is counted."""
    bridge, _, _ = await _bridged(loopback)
    bridge.close_host()
    bridge.from_user(b"late")
    bridge.user_eof()
    assert bridge.counts.bytes_in == 0
