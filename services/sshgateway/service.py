"""The gateway process: fold the log, listen for users and for hosts, record sessions.

`run_gateway(store, settings)` runs until cancelled (the CLI runs it under
`potluck.bootstrap.serve`, which cancels it on SIGTERM). It

1. makes or loads its two keys (settings.py says which is which);
2. folds the log from the start into its view (projection.py), then keeps
   following it, with the one `potluck.events.Fold` every reader uses (an
   event it cannot read is skipped, counted and logged, and the gateway goes
   on), so that a key added to an allocation, a release, or a new host counts
   within moments;
3. listens for users and for hosts (server.py);
4. writes session audit events (audit.AuditLog).

When an allocation stops running, its sessions end with a message; when a
host deregisters or registers a new key, its idle connections are closed
(reactions.py). On
shutdown the listeners close first, sessions in progress end with "the
gateway is shutting down", and the pending audit events are written.

The gateway needs only the database: it publishes nothing on NATS.
"""

import asyncio
import contextlib

import asyncssh
import structlog

from potluck.contracts.link import request_short_slice
from potluck.events import EventStore, Fold
from potluck.kernel.ssh_identity import load_or_create_key, public_key_line
from potluck.sshgateway.audit import AuditLog
from potluck.sshgateway.context import GatewayContext
from potluck.sshgateway.links import LinkPool
from potluck.sshgateway.projection import GatewayView
from potluck.sshgateway.reactions import GatewayReactions
from potluck.sshgateway.server import listen_for_hosts, listen_for_users
from potluck.sshgateway.settings import GatewaySettings
from potluck.sshgateway.user_listener import UserListener

__all__ = ["Gateway", "client_public_key", "run_gateway"]

log = structlog.get_logger(__name__)

#: How long a stopping gateway lets users' clients read why their session ended.
_USER_GOODBYE_SECONDS = 1.0


def client_public_key(settings: GatewaySettings) -> str:
    """The public line members pin as `client_key` in hostd's config (made if missing)."""
    return public_key_line(load_or_create_key(settings.tunnel_key_path, comment="potluck-sshgateway"))


class Gateway:
    def __init__(self, store: EventStore, settings: GatewaySettings) -> None:
        self.store = store
        self.settings = settings
        self.view = GatewayView()
        self.ctx = GatewayContext(settings=settings, view=self.view, links=LinkPool(), audit=AuditLog(store))
        #: The log folded into `view`, reacting to changes (reactions.py); unreadable events skipped.
        reactions = GatewayReactions(self.view, self.ctx.sessions, self.ctx.links)
        self.fold = Fold(reactions, reader="sshgateway")
        self.ready = asyncio.Event()

    @property
    def position(self) -> int:
        """How far into the log the gateway has read."""
        return self.fold.position

    async def run(self) -> None:
        settings = self.settings
        short = request_short_slice(settings.cpu_slice_us)
        log.debug("gateway.cpu_slice", short=short, slice_us=settings.cpu_slice_us)
        host_key = load_or_create_key(settings.host_key_path, comment="potluck-sshgateway-host")
        tunnel_key = load_or_create_key(settings.tunnel_key_path, comment="potluck-sshgateway")
        await self.fold.catch_up(self.store)
        audit = asyncio.ensure_future(self.ctx.audit.run())
        acceptors: list[asyncssh.SSHAcceptor | UserListener] = []
        try:
            acceptors.append(await listen_for_users(self.ctx, host_key))
            acceptors.append(await listen_for_hosts(self.ctx, tunnel_key))
            log.info(
                "gateway.listening",
                users=settings.listen,
                hosts=settings.tunnel_listen,
                host_key=host_key.get_fingerprint(),
                client_key=public_key_line(tunnel_key),
                position=self.position,
            )
            self.ready.set()
            await self.fold.follow(self.store)
        finally:
            for acceptor in acceptors:
                acceptor.close()
            await self._shutdown()
            audit.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await audit

    async def _shutdown(self) -> None:
        self.ctx.stopping = True
        sessions = self.ctx.sessions.all()
        for session in sessions:
            session.end("GATEWAY_STOPPING", "the gateway is shutting down; the session ended")
        self.ctx.links.close_all()
        await self._let_users_leave(_USER_GOODBYE_SECONDS)
        for conn in list(self.ctx.connections):
            conn.close()
        if not await self.ctx.audit.flush(10.0):
            log.error("gateway.audit_not_flushed", hint="some SessionEnded events were not written")
        for task in list(self.ctx.tasks):
            task.cancel()
        log.info("gateway.stopped", sessions_ended=len(sessions))

    async def _let_users_leave(self, timeout: float) -> None:
        # Closing a connection right after writing "shutting down" and the exit status
        # can drop both before the client reads them; clients whose session ended
        # disconnect by themselves, so wait briefly for them before closing the rest.
        waiting = [asyncio.ensure_future(conn.wait_closed()) for conn in self.ctx.connections]
        if not waiting:
            return
        _, still_open = await asyncio.wait(waiting, timeout=timeout)
        for waiter in still_open:
            waiter.cancel()


async def run_gateway(
    store: EventStore, settings: GatewaySettings, *, ready: asyncio.Event | None = None
) -> None:
    """Run the gateway until cancelled. `ready` is set once both listeners accept connections."""
    gateway = Gateway(store, settings)
    if ready is not None:
        gateway.ready = ready
    await gateway.run()
