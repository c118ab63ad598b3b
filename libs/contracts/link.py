"""The SSH link between a hostd and a gateway: what both ends must agree on.

hostd dials every gateway and serves SSH on that outbound connection; the
gateway is its client. Both ends offer the same ciphers and read the socket in
the same bounded chunks, so neither end's event loop stalls on bulk data.
"""

import asyncio
from typing import Any

#: Offered on the hop to the gateway, best first (aes128-gcm is the fastest with AES-NI).
LINK_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com")
#: Key exchanges on that hop: post-quantum hybrid first, then X25519; no SHA-1, no NIST curves
#: (issue 13). A hostd from before this list offers asyncssh's defaults, which include both.
LINK_KEX_ALGS = ("mlkem768x25519-sha256", "curve25519-sha256", "curve25519-sha256@libssh.org")
#: Used only with a non-AEAD cipher, which LINK_CIPHERS has none of; SHA-2 encrypt-then-MAC.
LINK_MAC_ALGS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com")


#: Bytes in flight per session on each hop, each way (SSH channel window): asyncssh's default,
#: named so both ends and users' sessions say the same. 8 MiB was tried (bench/README.md,
#: `transfer`): on the 2-core bench machine, CPU bound, it did not speed scp, and bench
#: `gateway`'s upload through `cat` ran slower with it; it also holds 4x more per session.
LINK_WINDOW = 2 * 1024 * 1024


#: Bytes one read from a socket may take (asyncio's default is 256 KiB). See `limit_reads`.
READ_CHUNK = 64 * 1024


def limit_reads(transport: object) -> None:
    """Cap how much one read of `transport` takes (a transport, or an asyncssh connection's).

    One event-loop turn handles every ready socket, and asyncssh decrypts (and the
    gateway re-encrypts) all of a read at once; with 256 KiB reads a bulk transfer
    holds the loop for milliseconds, and every other session's keystrokes wait that
    long at each hop. Smaller reads keep turns short; asyncssh also copies its input
    buffer once per packet, so they cost no throughput.
    """
    target = getattr(transport, "_transport", transport)
    if hasattr(target, "max_size"):
        target.max_size = READ_CHUNK


class _CoalescedWrites:
    """A transport whose writes within one event-loop turn leave in one `send`.

    asyncssh writes every packet to its transport as it is made, and precedes each
    data packet with an SSH_MSG_IGNORE (against traffic analysis): two `send` calls
    per packet, each a syscall that takes as long as encrypting the packet. This
    gathers what one turn writes and sends it at the end of the turn, joined.
    Everything else is the transport's.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pending: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._flush()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def coalesce_writes(conn: object) -> None:
    """Have an asyncssh connection's writes of one event-loop turn sent together (see
    `_CoalescedWrites`): call from its owner's `connection_made`, before anything is sent."""
    transport = getattr(conn, "_transport", None)
    if isinstance(transport, asyncio.Transport):
        conn._transport = _CoalescedWrites(transport)  # type: ignore[attr-defined]
