"""Coalesced writes on the SSH link (potluck.contracts.link.coalesce_writes), over a real socket pair."""

import asyncio
import socket
from typing import Any

from potluck.contracts.link import coalesce_writes


class _Conn:
    """Stands for an asyncssh connection: all coalesce_writes touches is `_transport`."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport: Any = transport


async def _pair() -> tuple[_Conn, asyncio.Transport, socket.socket]:
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    conn = _Conn(transport)
    coalesce_writes(conn)
    theirs.setblocking(False)
    return conn, transport, theirs


async def _read_all(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    got = b""
    while len(got) < size:
        got += await asyncio.wait_for(loop.sock_recv(sock, size - len(got)), 5)
    return got


def test_writes_of_one_turn_leave_together_in_order() -> None:
    """Several writes in one event-loop turn: nothing is sent during the turn, then all of it
    is sent at its end, in the order written."""

    async def scenario() -> None:
        conn, real, theirs = await _pair()
        sends: list[bytes] = []
        write = real.write

        def counted(data: bytes | bytearray | memoryview) -> None:
            sends.append(bytes(data))
            write(data)

        real.write = counted  # type: ignore[method-assign]
        for piece in (b"ignore", b"packet-1", b"packet-2"):
            conn._transport.write(piece)
        assert sends == []
        assert await _read_all(theirs, 22) == b"ignorepacket-1packet-2"
        assert sends == [b"ignorepacket-1packet-2"]
        conn._transport.close()
        theirs.close()

    asyncio.run(scenario())


def test_close_sends_what_is_pending_first() -> None:
    """A write then a close in the same turn (asyncssh's disconnect message): the bytes still
    reach the peer before the end of stream."""

    async def scenario() -> None:
        conn, _, theirs = await _pair()
        conn._transport.write(b"goodbye")
        conn._transport.close()
        assert await _read_all(theirs, 7) == b"goodbye"
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(loop.sock_recv(theirs, 10), 5) == b""
        theirs.close()

    asyncio.run(scenario())
