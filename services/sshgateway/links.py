"""Links to hosts: the reverse SSH connections hostds dial in, and opening a session on one.

Each hostd keeps a few authenticated connections to the gateway idle
(server.py's `TunnelClient` checks the host's key and offers them here).
A user's session takes one for itself and never shares it, and closes it
when it ends; hostd dials a new spare as soon as one is taken
(potluck.hostd.gateway_link says why: a connection per session keeps one
user's bulk transfer from delaying another's keystrokes).

`LinkPool.take` waits a bounded time for a link from a host that has none
idle (a laptop that just woke up); a link handed to a session that gave up
meanwhile goes back to the pool. `open_host_session` asks the host for what
the user asked the gateway for, with the same terminal, and raw bytes.

A host keeps at most `max_idle` links idle here (hostd keeps two spares): one
more closes its oldest idle link. A member controls their hostd, and nothing
else bounded how many authenticated connections it may park on the gateway:
one host key, dialling in at the tunnel port's admitted rate, could hold
thousands of the gateway's descriptors (tests/e2e/test_gateway_hostile_host.py).
The oldest goes rather than the newest: a laptop that changed networks leaves
dead links behind until keepalives find them, and its new ones must serve.
"""

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

import asyncssh
import structlog

from potluck.sshgateway.request import SessionRequest

__all__ = ["LinkPool", "open_host_session"]

log = structlog.get_logger(__name__)


class LinkPool:
    """Idle, authenticated reverse connections per host; each is taken for exactly one session."""

    def __init__(self, max_idle: int = 8) -> None:
        #: Idle links kept per host; one more closes the host's oldest idle link.
        self.max_idle = max_idle
        self._idle: dict[str, deque[asyncssh.SSHClientConnection]] = {}
        self._waiters: dict[str, deque[asyncio.Future[asyncssh.SSHClientConnection]]] = {}
        self._host_of: dict[asyncssh.SSHClientConnection, str] = {}

    def offer(self, host_id: str, conn: asyncssh.SSHClientConnection) -> None:
        self._host_of[conn] = host_id
        waiters = self._waiters.get(host_id)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        idle = self._idle.setdefault(host_id, deque())
        idle.append(conn)
        while len(idle) > self.max_idle:
            oldest = idle.popleft()
            self._host_of.pop(oldest, None)
            log.info("link.idle_cap_reached", host_id=host_id, max_idle=self.max_idle)
            oldest.close()

    def discard(self, conn: asyncssh.SSHClientConnection) -> None:
        host_id = self._host_of.pop(conn, None)
        if host_id is not None:
            idle = self._idle.get(host_id)
            if idle is not None:
                with contextlib.suppress(ValueError):
                    idle.remove(conn)

    def idle(self, host_id: str) -> int:
        return sum(1 for c in self._idle.get(host_id, ()) if not c.is_closed())

    async def take(self, host_id: str, timeout: float) -> asyncssh.SSHClientConnection | None:
        """An idle connection from `host_id`, waiting up to `timeout` for one to arrive."""
        idle = self._idle.get(host_id)
        while idle:
            conn = idle.popleft()
            if not conn.is_closed():
                return conn
        waiter: asyncio.Future[asyncssh.SSHClientConnection] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(host_id, deque())
        waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            return None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed over just as the session gave up: keep it for the next one.
                self.offer(host_id, waiter.result())
            raise
        finally:
            with contextlib.suppress(ValueError):
                waiters.remove(waiter)

    def close_host(self, host_id: str) -> None:
        for conn in list(self._idle.pop(host_id, ())):
            conn.close()

    def sever_host(self, host_id: str) -> None:
        """Close every link of `host_id`, idle or carrying a session (a revoked host)."""
        self.close_host(host_id)
        for conn, owner in list(self._host_of.items()):
            if owner == host_id:
                conn.close()

    def close_all(self) -> None:
        for host_id in list(self._idle):
            self.close_host(host_id)
        for conn in list(self._host_of):
            conn.close()


async def open_host_session(
    link: asyncssh.SSHClientConnection,
    session_factory: Callable[[], asyncssh.SSHClientSession[bytes]],
    request: SessionRequest,
    env: dict[str | bytes, str | bytes],
    *,
    window: int,
    timeout: float,
) -> asyncssh.SSHClientChannel[bytes]:
    """Ask the host, on `link`, for what the user asked for, with `env`; the host's channel.

    Raises TimeoutError, asyncssh.Error or OSError if the session cannot be opened."""
    async with asyncio.timeout(timeout):
        chan, _ = await link.create_session(
            session_factory,
            request.command,
            subsystem=request.subsystem,
            env=env,
            request_pty=request.pty,
            term_type=request.term_type,
            term_size=request.term_size if request.pty else (),
            term_modes=request.term_modes if request.pty else (),
            encoding=None,
            window=window,
        )
    return chan
