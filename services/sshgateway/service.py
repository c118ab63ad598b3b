"""The gateway process: fold the log, listen for users and for hosts, record sessions.

`run_gateway(store, settings)` runs until cancelled (the CLI runs it under
`potluck.bootstrap.serve`, which cancels it on SIGTERM). It

1. makes or loads its two keys (settings.py says which is which);
2. folds the log from the start into its view (projection.py), then keeps
   following it (`LogFollower`), so that a key added to an allocation, a
   release, or a new host counts within moments;
3. listens for users and for hosts (server.py);
4. writes session audit events (sessions.AuditLog).

When an allocation stops running, its sessions end with a message; when a
host deregisters or registers a new key, its idle connections are closed. On
shutdown the listeners close first, sessions in progress end with "the
gateway is shutting down", and the pending audit events are written.

The gateway needs only the database: it publishes nothing on NATS.
"""

import asyncio
import contextlib

import asyncssh
import structlog

from potluck.contracts.host_events import HostDeregistered, HostRegistered
from potluck.events import EventStore, LogFollower, RecordedEvent, SchemaError, registry
from potluck.kernel.ssh_identity import load_or_create_key, public_key_line
from potluck.readmodels.allocations import AllocationState
from potluck.sshgateway.projection import GatewayView, HostKeyConflict
from potluck.sshgateway.server import listen_for_hosts, listen_for_users
from potluck.sshgateway.sessions import AuditLog, GatewayContext, LinkPool
from potluck.sshgateway.settings import GatewaySettings

__all__ = ["Gateway", "client_public_key", "run_gateway"]

log = structlog.get_logger(__name__)

#: How long a stopping gateway lets users' clients read why their session ended.
_USER_GOODBYE_SECONDS = 1.0

#: Stream categories the gateway folds; everything else is skipped without decoding.
_CATEGORIES = frozenset({"alloc", "host"})


def client_public_key(settings: GatewaySettings) -> str:
    """The public line members pin as `client_key` in hostd's config (made if missing)."""
    return public_key_line(load_or_create_key(settings.tunnel_key_path, comment="potluck-sshgateway"))


class Gateway:
    def __init__(self, store: EventStore, settings: GatewaySettings) -> None:
        self.store = store
        self.settings = settings
        self.view = GatewayView()
        self.ctx = GatewayContext(settings=settings, view=self.view, links=LinkPool(), audit=AuditLog(store))
        self.ready = asyncio.Event()

    def apply(self, record: RecordedEvent) -> None:
        if record.category not in _CATEGORIES:
            self.view.position = max(self.view.position, record.position)
            self.view.allocations.position = self.view.position
            return
        try:
            event = registry.decode_record(record)
        except SchemaError as exc:
            log.warning("gateway.event_skipped", position=record.position, type=record.type, error=str(exc))
            self.view.position = max(self.view.position, record.position)
            self.view.allocations.position = self.view.position
            return
        host_id = getattr(event, "host_id", None)
        key_before = self.view.host_keys.get(host_id) if isinstance(host_id, str) else None
        result = self.view.apply(
            event, position=record.position, version=record.version, at=record.recorded_at
        )
        if isinstance(result, AllocationState):
            if result.status != "running":
                for session in self.ctx.sessions.of(result.alloc_id):
                    session.end(
                        "ALLOCATION_ENDED",
                        f"allocation {result.alloc_id} is now {result.status}; the session ended",
                    )
        elif isinstance(result, HostKeyConflict):
            log.warning(
                "gateway.host_key_conflict",
                host_id=result.host_id,
                owner=result.owner,
                hint="two hosts registered the same SSH key (a copied state_dir?); the second is ignored",
            )
        if (
            isinstance(event, HostRegistered | HostDeregistered)
            and key_before is not None
            and self.view.host_keys.get(event.host_id) != key_before
        ):
            self.ctx.links.close_host(event.host_id)

    async def catch_up(self) -> None:
        while records := await self.store.read_all(self.view.position, 5000):
            for record in records:
                self.apply(record)

    async def follow(self) -> None:
        follower = LogFollower(self.store, after_position=self.view.position)
        async for batch in follower.batches():
            for record in batch:
                self.apply(record)

    async def run(self) -> None:
        settings = self.settings
        host_key = load_or_create_key(settings.host_key_path, comment="potluck-sshgateway-host")
        tunnel_key = load_or_create_key(settings.tunnel_key_path, comment="potluck-sshgateway")
        await self.catch_up()
        audit = asyncio.ensure_future(self.ctx.audit.run())
        acceptors: list[asyncssh.SSHAcceptor] = []
        try:
            acceptors.append(await listen_for_users(self.ctx, host_key))
            acceptors.append(await listen_for_hosts(self.ctx, tunnel_key))
            log.info(
                "gateway.listening",
                users=settings.listen,
                hosts=settings.tunnel_listen,
                host_key=host_key.get_fingerprint(),
                client_key=public_key_line(tunnel_key),
                position=self.view.position,
            )
            self.ready.set()
            await self.follow()
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
