"""The gateway's ports: accept, admit or refuse before SSH starts, then run SSH on what was admitted.

asyncssh's own listener starts SSH (sends its banner, then a key exchange)
on every connection it accepts. This one asks `Admission` first
(admission.py), so a flood of connections from one address, or too many
half-open logins, is closed with one line saying why, as OpenSSH does past
MaxStartups, and a DISCONNECT the client prints (early_refusal.py), before any
key exchange is spent on it; when the places for logins in progress are full, a
connection from an address holding fewer of them takes the place of the oldest
of the address holding the most, which is ended (admission.py says why). An
admitted connection runs SSH (`start_ssh`: the users' port serves it with
`asyncssh.run_server`, the hosts' port is its client with `asyncssh.run_client`)
and holds its admission place until it has authenticated or gone.

The hosts' port needs it as much as the users': it must be reachable from
every member's machine, and asyncssh's reverse listener gave a connection that
never spoke SSH no deadline and no cap. 1,500 idle TCP connections from a
stranger, with no key at all, stayed open there indefinitely, each a
descriptor of the gateway's, on the way to running it out of them for users
and hosts alike.
"""

import asyncio
import contextlib
import contextvars
import functools
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh
import structlog

from potluck.kernel.client_address import client_of
from potluck.sshgateway.admission import Admission
from potluck.sshgateway.context import GatewayContext
from potluck.sshgateway.early_refusal import refusal_bytes

__all__ = ["ACCEPTED_FROM", "AdmittedListener"]

log = structlog.get_logger(__name__)

#: The address accept() gave the connection SSH runs on, for its SSH objects (set in the task
#: that starts SSH; asyncssh makes them in that task's context). A connection reset before
#: SSH starts has no peer name left to ask its socket for.
ACCEPTED_FROM: contextvars.ContextVar[str] = contextvars.ContextVar("accepted_from", default="")

#: How long to wait after accept() fails (out of file descriptors) before trying again.
_ACCEPT_RETRY_S = 0.1
#: A flood is refused thousands of times a second: one log line per address per this long.
_REFUSAL_LOG_EVERY_S = 10.0
_REFUSAL_LOG_SOURCES = 1000
#: A refused connection stays open this long, its input read and dropped, so that the client
#: reads why before it writes again: closed at once, the client's next write (OpenSSH's
#: KEXINIT) met a reset and it printed "Broken pipe" instead (33 times in 40).
_LINGER_S = 2.0
#: Refused connections held open at once (each a descriptor for up to _LINGER_S); past it, a
#: refused connection is closed at once, as before: a flood does not buy descriptors with it.
_LINGERING_MAX = 256


class AdmittedListener:
    def __init__(
        self,
        ctx: GatewayContext,
        sock: socket.socket,
        admission: Admission,
        start_ssh: Callable[[socket.socket], Awaitable[object]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ctx = ctx
        self._sock = sock
        self.admission = admission
        #: SSH on an admitted socket, returning once it has authenticated (or raising).
        self._start_ssh = start_ssh
        self._clock = clock
        self._accepting: asyncio.Task[Any] | None = None
        #: Per event and address: when it was last logged, and how many since.
        self._refusals: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()
        #: Per address: the tasks of its connections still logging in, oldest first.
        self._logging_in: dict[str, deque[asyncio.Task[None]]] = {}
        #: Tasks whose place admission gave to another connection: not `done` again.
        self._evicted: set[asyncio.Task[None]] = set()
        admission.on_evict = self._evict
        #: Refused connections still open for their client to read why (_refuse_lingering).
        self._lingering = 0

    @classmethod
    async def start(
        cls,
        ctx: GatewayContext,
        host: str,
        port: int,
        admission: Admission,
        start_ssh: Callable[[socket.socket], Awaitable[object]],
    ) -> "AdmittedListener":
        loop = asyncio.get_running_loop()
        family, _, _, _, address = (await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))[0]
        sock = socket.create_server(address[:2], family=family, backlog=128)
        sock.setblocking(False)
        listener = cls(ctx, sock, admission, start_ssh)
        listener._accepting = asyncio.ensure_future(listener._accept())
        return listener

    def close(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
        self._sock.close()

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(self._sock)
            except OSError as exc:
                # Out of file descriptors, or the client gave up already: the next one may do.
                log.warning("listen.accept_failed", error=repr(exc))
                await asyncio.sleep(_ACCEPT_RETRY_S)
                continue
            # Counted as a client: an IPv6 address's /64, not each of its addresses.
            source = client_of(str(peer[0]))
            refusal = self.admission.admit(source, self._clock())
            if refusal is not None:
                self._log_refusal(source, refusal)
                if self._lingering < _LINGERING_MAX:
                    self._lingering += 1
                    self._ctx.tasks.start(self._refuse_lingering(conn, refusal))
                else:
                    _refuse(conn, refusal)
                continue
            task = self._ctx.tasks.start(self._serve(conn, source, str(peer[0])))
            self._logging_in.setdefault(source, deque()).append(task)
            # A callback, not a `finally`: a task cancelled before it first ran runs no finally.
            task.add_done_callback(functools.partial(self._ended, source, conn))

    def _evict(self, source: str) -> None:
        tasks = self._logging_in.get(source)
        if not tasks:
            return
        task = tasks.popleft()
        if not tasks:
            del self._logging_in[source]
        self._evicted.add(task)
        # Cancelling run_server aborts the connection (asyncssh closes what it started).
        task.cancel()
        self._log_refusal(source, "its address held the most logins in progress", event="connection.evicted")

    def _ended(self, source: str, conn: socket.socket, task: "asyncio.Task[None]") -> None:
        """SSH on `conn` has logged in, or ended, or was evicted: its place is free."""
        if task in self._evicted:
            self._evicted.discard(task)
            # A task evicted as it logged in (its end not yet seen here) keeps its connection:
            # it gave its place up by logging in. A cancelled one may hold a socket asyncssh did
            # not get to own yet (closing one it owned and aborted again does nothing).
            if task.cancelled():
                conn.close()
            return
        tasks = self._logging_in.get(source)
        if tasks is not None:
            with contextlib.suppress(ValueError):
                tasks.remove(task)
            if not tasks:
                del self._logging_in[source]
        self.admission.done(source)

    def _log_refusal(self, source: str, reason: str, event: str = "connection.refused") -> None:
        now = self._clock()
        key = (event, source)
        logged_at, since = self._refusals.pop(key, (float("-inf"), 0))
        if now - logged_at < _REFUSAL_LOG_EVERY_S:
            self._refusals[key] = (logged_at, since + 1)
            return
        log.info(event, source=source, reason=reason, refused_since_last_logged=since)
        self._refusals[key] = (now, 0)
        while len(self._refusals) > _REFUSAL_LOG_SOURCES:
            self._refusals.popitem(last=False)

    async def _refuse_lingering(self, conn: socket.socket, reason: str) -> None:
        """Say why, then read and drop what the client sends until it closes or _LINGER_S."""
        loop = asyncio.get_running_loop()
        try:
            conn.setblocking(False)
            await loop.sock_sendall(conn, refusal_bytes(reason))
            conn.shutdown(socket.SHUT_WR)
            async with asyncio.timeout(_LINGER_S):
                while await loop.sock_recv(conn, 4096):
                    pass
        except (OSError, TimeoutError):
            pass  # gone, or slow to go: either way it was told
        finally:
            conn.close()
            self._lingering -= 1

    async def _serve(self, conn: socket.socket, source: str, address: str) -> None:
        ACCEPTED_FROM.set(address)
        try:
            await self._start_ssh(conn)
        except (asyncssh.Error, OSError, TimeoutError, UnicodeError) as exc:
            # Not logged in (GatewayServer and TunnelClient log why) or gone: nothing more to do.
            # UnicodeError: asyncssh decodes the peer's version line as ASCII and fails on any
            # other byte, as an internal error; it was logged as this gateway's own error.
            log.debug("connection.ssh_ended", source=source, error=repr(exc))
        except Exception as exc:
            log.error("connection.failed", source=source, error=repr(exc))


def _refuse(conn: socket.socket, reason: str) -> None:
    """Say why (early_refusal.py), close at once: a client that writes before it reads it
    may see a reset instead (_refuse_lingering is used while there are places)."""
    with contextlib.suppress(OSError):
        conn.send(refusal_bytes(reason))
        # Unread input (the client's own banner) would turn the close into a reset that can
        # overtake our line: read what is there, then close.
        with contextlib.suppress(BlockingIOError):
            conn.recv(4096)
        conn.shutdown(socket.SHUT_WR)
    conn.close()
