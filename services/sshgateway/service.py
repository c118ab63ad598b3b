"""The gateway process: fold the log, listen for users and for hosts, record sessions.

`run_gateway(store, settings, bus=nc)` runs until cancelled (the CLI runs it under
`potluck.bootstrap.serve`, which cancels it on SIGTERM). It

1. makes or loads its two keys (settings.py says which is which);
2. folds the log from the start into its view (projection.py), then keeps
   following it, with the one `potluck.events.Fold` every reader uses (an
   event it cannot read is skipped, counted and logged, and the gateway goes
   on), so that a key added to an allocation, a release, or a new host counts
   within moments;
3. with a bus: puts its run's liveness entry up (liveness.py), keeps it
   fresh, and sweeps for sessions that lost gateways left open
   (gateway_sweep.py), from then on every `lost_sweep_s`;
4. listens for users and for hosts (server.py);
5. writes session audit events (audit.AuditLog).

When an allocation stops running, its sessions end with a message; when a
host deregisters or registers a new key, its idle connections are closed
(reactions.py). On
shutdown the listeners close first, sessions in progress end with "the
gateway is shutting down", the pending audit events are written, and then its
run's entry is deleted.

The log is all it needs to serve: the bus carries only its run's liveness. A
gateway run without one (tests, benchmarks) records no run id in its
sessions, so no other gateway ever ends them for it.
"""

import asyncio
import uuid
from pathlib import Path

import asyncssh
import structlog
from nats.aio.client import Client as NATS

from potluck.contracts.link import LINK_SIGNATURE_ALGS, request_short_slice
from potluck.events import EventStore, Fold
from potluck.kernel.cancellation import cancel_until_done
from potluck.kernel.ssh_identity import load_key, load_or_create_key, public_key_line, require_key_type
from potluck.sshgateway.admitted_listener import AdmittedListener
from potluck.sshgateway.audit import AuditLog
from potluck.sshgateway.context import GatewayContext, SessionRegistry
from potluck.sshgateway.gateway_sweep import LostSessionSweep
from potluck.sshgateway.links import LinkPool
from potluck.sshgateway.liveness import RunEntry
from potluck.sshgateway.projection import GatewayView
from potluck.sshgateway.reactions import GatewayReactions
from potluck.sshgateway.server import listen_for_hosts, listen_for_users
from potluck.sshgateway.settings import GatewaySettings
from potluck.sshgateway.start_wait import StartWaits
from potluck.sshgateway.view_refresh import ViewRefresh

__all__ = ["Gateway", "client_public_key", "host_public_key", "load_tunnel_key", "run_gateway"]

log = structlog.get_logger(__name__)

#: How long a stopping gateway lets users' clients read why their session ended.
_USER_GOODBYE_SECONDS = 1.0


#: Where the gateway's keys are and what makes them, for a message that found none.
_MADE_BY = (
    "give the gateway's state directory, the --state-dir (or POTLUCK_SSHGATEWAY_STATE_DIR) that "
    "`potluck sshgateway` runs with: the gateway makes its keys there when it first starts, so "
    "start it once if it never ran"
)


#: What to do about a tunnel key of a type the link does not take.
_NEW_TUNNEL_KEY = (
    "remove it and its .pub and start the gateway again: it makes an ed25519 key there. Members "
    "then pin the new key as client_key in their hostd's config (`potluck sshgateway --print-client-key`)"
)


def _public_line(path: Path, comment: str, make: bool) -> str:
    # Only read unless `make`: printed for pinning, a key made here (a mistyped state directory)
    # would be one no gateway holds, and everyone pinning it would be refused.
    key = load_or_create_key(path, comment=comment) if make else load_key(path, made_by=_MADE_BY)
    return public_key_line(key)


def host_public_key(settings: GatewaySettings, *, make: bool = False) -> str:
    """The host key line users pin (`potluck login --gateway-key`). SSHIdentityError names the
    directory looked in when there is none; `make` is for a pool that sets up its own gateway's
    directory before starting it (`potluck up`)."""
    return _public_line(settings.host_key_path, "potluck-sshgateway-host", make)


def client_public_key(settings: GatewaySettings, *, make: bool = False) -> str:
    """The public line members pin as `client_key` in hostd's config; as `host_public_key`.

    A key of a type the link does not take is refused as `load_tunnel_key` refuses it: printed,
    members would pin a key whose every link then fails its handshake."""
    line = _public_line(settings.tunnel_key_path, "potluck-sshgateway", make)
    require_key_type(
        settings.tunnel_key_path, line.split(" ", 1)[0], LINK_SIGNATURE_ALGS, remedy=_NEW_TUNNEL_KEY
    )
    return line


def load_tunnel_key(settings: GatewaySettings) -> asyncssh.SSHKey:
    """The key that signs the gateway's login to every hostd, made if missing.

    SSHIdentityError, naming the file and what to do, for a key of a type the link does not
    take (LINK_SIGNATURE_ALGS: a key file replaced by hand): without this check every link
    failed its handshake, and hostd's log said only that no authentication method was left.
    """
    path = settings.tunnel_key_path
    key = load_or_create_key(path, comment="potluck-sshgateway")
    require_key_type(path, key.get_algorithm(), LINK_SIGNATURE_ALGS, remedy=_NEW_TUNNEL_KEY)
    return key


class Gateway:
    def __init__(
        self,
        store: EventStore,
        settings: GatewaySettings,
        *,
        bus: NATS | None = None,
        stream_replicas: int | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.view = GatewayView()
        self.run_id = uuid.uuid4().hex
        self.entry: RunEntry | None = None
        self.sweep: LostSessionSweep | None = None
        if bus is not None:
            self.entry = RunEntry(
                bus.jetstream(),
                self.run_id,
                gateway=settings.name,
                refresh_s=settings.run_refresh_s,
                replicas=stream_replicas,
            )
            self.sweep = LostSessionSweep(
                store,
                self.view,
                self.entry,
                gateway=settings.name,
                lost_after_s=settings.run_lost_after_s,
                interval_s=settings.lost_sweep_s,
            )
        links = LinkPool(settings.max_idle_links_per_host)
        sessions = SessionRegistry()
        starts = StartWaits()
        #: The log folded into `view`, reacting to changes (reactions.py); unreadable events skipped.
        self.fold = Fold(GatewayReactions(self.view, sessions, links, starts), reader="sshgateway")
        self.ctx = GatewayContext(
            settings=settings,
            view=self.view,
            links=links,
            audit=AuditLog(store),
            view_refresh=ViewRefresh(self.fold, store),
            sessions=sessions,
            starts=starts,
            run_id=self.run_id if bus is not None else None,
        )
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
        tunnel_key = load_tunnel_key(settings)
        await self.fold.catch_up(self.store)
        if self.entry is not None:
            # Up before any session of this run is recorded: a sweeper that finds this run in a
            # SessionStarted finds its entry too.
            await self.entry.put()
        audit = asyncio.ensure_future(self.ctx.audit.run())
        fresh = asyncio.ensure_future(self.entry.keep_fresh()) if self.entry is not None else None
        sweep = asyncio.ensure_future(self.sweep.run()) if self.sweep is not None else None
        acceptors: list[AdmittedListener] = []
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
                run=self.ctx.run_id,
            )
            self.ready.set()
            await self.fold.follow(self.store)
        finally:
            for acceptor in acceptors:
                acceptor.close()
            await _cancel(sweep)
            await self._shutdown()
            await _cancel(fresh)
            if self.entry is not None:
                # Only once the ends are written: if they could not be, the entry is gone
                # and another gateway records them lost.
                await self.entry.withdraw()
            await _cancel(audit)

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
        self.ctx.tasks.cancel()
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


async def _cancel(task: "asyncio.Future[None] | None") -> None:
    """End `task` (cancel_until_done: its NATS requests may swallow one cancellation), raising
    what it failed with, if anything but the cancellation."""
    if task is not None:
        await cancel_until_done([task])
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error


async def run_gateway(
    store: EventStore,
    settings: GatewaySettings,
    *,
    ready: asyncio.Event | None = None,
    bus: NATS | None = None,
    stream_replicas: int | None = None,
) -> None:
    """Run the gateway until cancelled. `ready` is set once both listeners accept connections;
    `bus` carries its run's liveness, and lets it end the sessions of lost gateways."""
    gateway = Gateway(store, settings, bus=bus, stream_replicas=stream_replicas)
    if ready is not None:
        gateway.ready = ready
    await gateway.run()
