"""The NATS users file, rendered by the registry whenever no one else would.

nats-server admits the keys its users file lists (rendered by enrollment.py from the hosts
as the log has them: public keys only; admitted_keys.py says which) and closes the connections
of a key a reload removes. Operators' commands render it when they change a host. The registry
renders it as it starts (for what changed while no registry ran), for each join it answers
(joining.py), and each time the passing of time takes a key out (`next_key_change`): a spent
token's answer window ends, an unspent token expires, the window of a machine whose member
left ends. Without those last renders the key stayed until some later join or enrollment, and
a registry that stopped inside an answer window left it there.

Nothing renders when a member leaves (`potluck host leave`): its key stays for its window
(LEFT_KEY_WINDOW), whoever renders meanwhile, and its tools hear HOST_LEFT from the registry
rather than a refused connection.

Each render reads the hosts with the log's head folded (`fresh_view`) and the log's clock, so
a render never takes out a key that an event already in the log admits.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import structlog

from potluck.events import EventStore
from potluck.readmodels.hosts import HostsView
from potluck.registry.admitted_keys import next_key_change
from potluck.registry.enrollment import current_hosts, read_seed, render_nats_authorization
from potluck.registry.nats_auth import reload_nats

__all__ = ["NatsAuthFiles", "UsersFileKeeper"]

log = structlog.get_logger(__name__)

#: How far past a key's deadline the render comes, so that the render's own reading of the
#: log's clock is past it too.
RENDER_MARGIN = timedelta(seconds=0.5)


@dataclass(frozen=True)
class NatsAuthFiles:
    """What the registry needs to change who may connect: the users file nats-server includes,
    nats-server's PID file (to make it reload), and the services' seed, whose key stays in."""

    auth_file: Path
    pid_file: Path | None
    service_seed_file: Path
    #: The PID files of a cluster's other nodes on this machine, reloaded with `pid_file`'s: a
    #: key taken out (a host capped, a token spent) closes its connections on every node.
    more_pid_files: tuple[Path, ...] = ()

    def service_seeds(self) -> list[str]:
        return [read_seed(self.service_seed_file)]


@dataclass
class UsersFileKeeper:
    store: EventStore
    view: HostsView
    auth: NatsAuthFiles
    #: The hosts as the log has them now. The registry passes its own view once its fold has
    #: caught up with the log's head; the default reads them for each render (current_hosts).
    fresh_view: Callable[[], Awaitable[HostsView]] | None = None
    #: The longest `run` waits without looking again: tokens another process issues get
    #: deadlines without a render here to say so, and a failed render is tried again.
    recheck_s: float = 30.0
    #: Deadlines of answers given here (joining.py), which the view may not have folded yet.
    _answered: set[datetime] = field(default_factory=set)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: The log's time at the last look: a deadline between it and now has passed unrendered.
    _looked_at: datetime | None = None
    #: The start's render failed: `run` owes it from its first look.
    _owed_at_start: bool = False

    async def render(self, *, also_joining: Sequence[tuple[str, str]] = ()) -> bool:
        """Render the file from the hosts as the log has them now, with the join keys in their
        time on the log's clock; `also_joining` adds throwaway keys the log no longer lists."""
        view = await (self.fresh_view or self._read_from_log)()
        return self._render(view, await self.store.log_clock(), also_joining)

    async def render_at_start(self) -> bool:
        """Render the file from the registry's view as it starts (caught up by then); whether it
        was rendered. A failed one is owed: `run` tries it again every `recheck_s`."""
        try:
            changed = self._render(self.view, await self.store.log_clock(), ())
        except (OSError, ValueError) as exc:
            self._owed_at_start = True
            log.error(
                "registry.nats_users_unrendered",
                file=str(self.auth.auth_file),
                error=str(exc),
                retry_in_s=self.recheck_s,
                hint="joins cannot admit keys until this registry can write --nats-auth-file and read "
                "--nats-seed-file; fix their permissions (the registry tries again on its own)",
            )
            return False
        log.info("registry.nats_users_rendered", file=str(self.auth.auth_file), changed=changed)
        return True

    def answered(self, window_ends: datetime) -> None:
        """A join answered here: render again once its answer window has ended."""
        self.render_again_at(window_ends)

    def render_again_at(self, moment: datetime) -> None:
        """Render again at `moment` (a join's answer window, a host's connection cap ending),
        which the view may not have folded yet."""
        self._answered.add(moment)
        self._wake.set()

    async def run(self) -> None:
        """Render each time a key's time in the file ends, until cancelled. A render that fails
        is owed and tried again at the next look; the key stays meanwhile, and the registry
        refuses what it asks (a throwaway can only ask to join; a machine that left hears
        HOST_LEFT). A start render that failed is owed from the first look."""
        owed = self._owed_at_start
        while True:
            self._wake.clear()
            try:
                passed, wait = await self._look()
            except Exception as exc:  # the database away: look again later
                log.warning("registry.nats_users_unchecked", error=str(exc), retry_in_s=self.recheck_s)
                passed, wait = False, self.recheck_s
            if passed or owed:
                owed = not await self._render_logged()
                if owed:
                    wait = self.recheck_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _look(self) -> tuple[bool, float]:
        """Has a key's time ended since the last look, and how long to wait for the next?"""
        now = await self.store.log_clock()
        since = self._looked_at
        passed = any(d <= now for d in self._answered) or (
            since is not None and (end := next_key_change(self.view, since)) is not None and end <= now
        )
        self._looked_at = now
        self._answered = {d for d in self._answered if d > now}
        ahead = [d for d in (*self._answered, next_key_change(self.view, now)) if d is not None]
        if not ahead:
            return passed, self.recheck_s
        return passed, min(self.recheck_s, (min(ahead) - now + RENDER_MARGIN).total_seconds())

    async def _render_logged(self) -> bool:
        try:
            changed = await self.render()
        except Exception:
            log.exception(
                "registry.nats_users_unrendered",
                retry_in_s=self.recheck_s,
                hint="a key whose time ended (a spent or expired join token's, a machine's that left) "
                "stays in the NATS users file until a render succeeds (the registry refuses what it "
                "asks); check the database and the file's permissions",
            )
            return False
        if changed:
            log.info("registry.nats_users_rendered", file=str(self.auth.auth_file), changed=changed)
        return True

    def _render(self, view: HostsView, now: datetime, also_joining: Sequence[tuple[str, str]]) -> bool:
        changed = render_nats_authorization(
            view,
            self.auth.auth_file,
            self.auth.service_seeds(),
            self.auth.pid_file,
            now,
            also_joining=also_joining,
        )
        if changed:
            for pid_file in self.auth.more_pid_files:
                with contextlib.suppress(FileNotFoundError):  # that node not started: it reads the file then
                    reload_nats(pid_file)
        return changed

    async def _read_from_log(self) -> HostsView:
        return await current_hosts(self.store)
