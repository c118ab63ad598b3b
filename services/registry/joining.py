"""A new member's machine redeems its join token (JOIN.<host_id>, asked with the token's throwaway key).

The Host aggregate decides (host.py `join`: unknown, spent or expired tokens and gone hosts
are refused, each with its own code); HostJoined records the public key the machine made
for itself. Before answering, the NATS users file is rendered again with that key in it and
nats-server reloads, so the member can connect as itself as soon as it reads the answer.

The throwaway key stays in the file for that answer: nats-server closes the connections of
users a reload removes, and the answer travels on the throwaway's connection. How long is
the log's to say (`JOIN_ANSWER_WINDOW` after HostJoined, on the log's clock), so every render
keeps it, whoever makes it.

Time takes keys out of the file (a window's end, a token's expiry), but only a render writes
that down: the registry renders again at each such moment (`keep_users_file_current`), and as
it starts, for what changed while no registry ran.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from potluck.contracts.join_token import secret_digest
from potluck.contracts.messages import JoinRequest
from potluck.events import EventStore
from potluck.kernel.rejections import Rejected
from potluck.readmodels.hosts import HostsView
from potluck.registry import host as aggregate
from potluck.registry.enrollment import (
    JOIN_ANSWER_WINDOW,
    current_hosts,
    next_key_change,
    read_seed,
    render_nats_authorization,
)
from potluck.registry.repository import decide_on_host

__all__ = ["JoinHandler", "NatsAuthFiles"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class NatsAuthFiles:
    """What the registry needs to change who may connect: the users file nats-server includes,
    nats-server's PID file (to make it reload), and the services' seed, whose key stays in."""

    auth_file: Path
    pid_file: Path | None
    service_seed_file: Path

    def service_seeds(self) -> list[str]:
        return [read_seed(self.service_seed_file)]


#: How far past a key's deadline the render comes, so that the render's own reading of the
#: log's clock is past it too.
RENDER_MARGIN = timedelta(seconds=0.5)


@dataclass
class JoinHandler:
    store: EventStore
    view: HostsView
    auth: NatsAuthFiles | None
    #: The hosts as the log has them now. The registry passes its own view once its fold has
    #: caught up with the log's head; the default folds the whole log again, for each render.
    fresh_view: Callable[[], Awaitable[HostsView]] | None = None
    #: How long nats-server gets to apply a reload (SIGHUP is answered asynchronously).
    reload_settle_s: float = 0.3
    #: The longest `keep_users_file_current` waits without looking again: tokens another process
    #: issues get deadlines without a join here to say so, and a failed render is tried again.
    recheck_s: float = 30.0
    #: Answer windows of joins this registry answered, which its view may not have folded yet.
    _answered: set[datetime] = field(default_factory=set)
    _joined: asyncio.Event = field(default_factory=asyncio.Event)
    #: The log's time at the last look: a deadline between it and now has passed unrendered.
    _looked_at: datetime | None = None

    async def join(self, host_id: str, payload: bytes) -> dict[str, Any]:
        req = JoinRequest.model_validate_json(payload)
        if self.auth is None:
            raise Rejected(
                "JOIN_UNAVAILABLE",
                "this pool's registry runs without --nats-auth-file, so it cannot admit a new key; "
                "ask the operator to enroll with --credentials-out instead",
                status=503,
            )
        now = await self.store.log_clock()
        outcome = await decide_on_host(
            self.store,
            host_id,
            lambda s: aggregate.join(
                s, host_id, token_sha256=secret_digest(req.token), nkey=req.nkey, now=now
            ),
            {"actor": f"host:{host_id}"},
            known=lambda: self.view.hosts.get(host_id),
        )
        # The log keeps the throwaway in for JOIN_ANSWER_WINDOW; named here too, so that this
        # render keeps it whatever the render's clock says.
        throwaway = outcome.state.join_nkey if outcome.state is not None else ""
        await self._refresh(also_joining=[(host_id, throwaway)] if throwaway else [])
        await asyncio.sleep(self.reload_settle_s)
        log.info("registry.host_joined", host_id=host_id, nkey=req.nkey)
        # HostJoined was logged before this reading, so its window ends before this deadline.
        self._answered.add(await self.store.log_clock() + JOIN_ANSWER_WINDOW)
        self._joined.set()
        return {"host_id": host_id, "recorded": [type(e).type_name for e in outcome.events]}

    async def _refresh(self, *, also_joining: Sequence[tuple[str, str]] = ()) -> None:
        """Render the users file from the hosts as the log has them now (with the join just
        recorded), the join keys taken at the log's time."""
        assert self.auth is not None
        view = await (self.fresh_view or self._folded_from_zero)()
        render_nats_authorization(
            view,
            self.auth.auth_file,
            self.auth.service_seeds(),
            self.auth.pid_file,
            await self.store.log_clock(),
            also_joining=also_joining,
        )

    async def _folded_from_zero(self) -> HostsView:
        return await current_hosts(self.store)

    async def render_at_start(self) -> None:
        """Render the users file from the registry's view as it starts: what changed while no
        registry ran (one that stopped between recording HostJoined and rendering the member's
        key, or before a spent throwaway's window ended) is put right."""
        if self.auth is None:
            return
        try:
            changed = render_nats_authorization(
                self.view,
                self.auth.auth_file,
                self.auth.service_seeds(),
                self.auth.pid_file,
                await self.store.log_clock(),
            )
        except (OSError, ValueError) as exc:
            log.error(
                "registry.nats_users_unrendered",
                file=str(self.auth.auth_file),
                error=str(exc),
                hint="joins cannot admit keys until this registry can write --nats-auth-file and read "
                "--nats-seed-file; fix their permissions, then restart it",
            )
            return
        log.info("registry.nats_users_rendered", file=str(self.auth.auth_file), changed=changed)

    async def keep_users_file_current(self) -> None:
        """Render the users file again each time a key's time in it ends (`next_key_change`: a
        spent token's answer window, an unspent token's expiry), until cancelled.

        A render that fails is owed and tried again at the next look; the key stays meanwhile,
        and it can only ask to join, which is refused."""
        if self.auth is None:
            return
        owed = False
        while True:
            self._joined.clear()
            try:
                passed, wait = await self._look()
            except Exception as exc:  # the database away: look again later
                log.warning("registry.join_keys_unchecked", error=str(exc), retry_in_s=self.recheck_s)
                passed, wait = False, self.recheck_s
            if passed or owed:
                owed = not await self._render_logged()
                if owed:
                    wait = self.recheck_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._joined.wait()

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
            await self._refresh()
        except Exception:
            log.exception(
                "registry.join_keys_unrendered",
                retry_in_s=self.recheck_s,
                hint="a spent or expired join token's key stays in the NATS users file until a render "
                "succeeds; it can only ask to join, which is refused. Check the database and the file's "
                "permissions",
            )
            return False
        return True
