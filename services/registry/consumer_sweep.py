"""The registry removes the JetStream consumers of hosts that are out of the pool.

What to remove is decided by gone_consumers.py from the folded view and the consumer names
on the server; this module only lists, asks and deletes. It sweeps when the registry starts
(so a registry stopped after HostLeft was recorded but before the consumer went still
removes it), whenever the view folds a host going out, again every `recheck_s` while some
consumer still waits for its hostd or its grace, and otherwise every `idle_s`.

Replicated registries all sweep: a consumer another replica removed first answers "not
found", which is the outcome wanted, not an error. A sweep that fails (NATS away) is logged
and tried again at the next turn.
"""

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime

import structlog
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError, ServiceUnavailableError

from potluck.events import EVENTS_STREAM, RecordedEvent
from potluck.events.bus import EVENT_PREFIX, TRANSIENT_BUS_ERRORS
from potluck.readmodels.hosts import HostsView
from potluck.registry.gone_consumers import OUT_EVENT, Candidate, candidates, to_remove

__all__ = ["ConsumerSweep"]

log = structlog.get_logger(__name__)

#: nats-server answers a consumer list in pages of this many.
LIST_PAGE = 256
OUT_TYPES = frozenset(OUT_EVENT.values())
#: A sweep that fails with one of these (NATS away, slow, or the stream not there yet) is
#: tried again at the next turn instead of ending the registry.
SWEPT_AGAIN: tuple[type[BaseException], ...] = (
    TimeoutError,
    NotFoundError,
    ServiceUnavailableError,
    *TRANSIENT_BUS_ERRORS,
)


class ConsumerSweep:
    def __init__(
        self,
        js: JetStreamContext,
        view: HostsView,
        *,
        grace_s: float = 60.0,
        recheck_s: float = 2.0,
        idle_s: float = 300.0,
    ) -> None:
        self.js = js
        self.view = view
        self.grace_s = grace_s
        self.recheck_s = recheck_s
        self.idle_s = idle_s
        self.removed = 0
        self._wake = asyncio.Event()

    def notice(self, batch: Sequence[RecordedEvent]) -> None:
        """A fold hook: a host went out in this batch, so sweep now rather than at the next turn."""
        if any(r.type in OUT_TYPES for r in batch):
            self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                waiting = await self.sweep()
            except SWEPT_AGAIN as exc:
                log.warning("registry.consumer_sweep_failed", error=repr(exc), hint="tried again later")
                waiting = 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.recheck_s if waiting else self.idle_s):
                    await self._wake.wait()

    async def sweep(self) -> int:
        """Remove what is due; the number of consumers of out hosts still kept for now."""
        found = candidates(self.view.hosts, await self._consumers())
        if not found:
            return 0
        acknowledged = {c.consumer: await self._acknowledged(c) for c in found}
        due = to_remove(found, acknowledged, datetime.now(UTC), self.grace_s)
        for c in due:
            await self._remove(c, acknowledged[c.consumer])
        return len(found) - len(due)

    async def _consumers(self) -> dict[str, datetime | None]:
        """The consumers on the events stream, each with when it was made."""
        made: dict[str, datetime | None] = {}
        offset = 0
        while True:
            page = await self.js.consumers_info(EVENTS_STREAM, offset=offset)
            made |= {info.name: info.created for info in page}
            offset += len(page)
            if len(page) < LIST_PAGE:
                return made

    async def _acknowledged(self, c: Candidate) -> bool:
        """Has hostd acknowledged the last event that put its host out?"""
        try:
            out = await self.js.get_last_msg(EVENTS_STREAM, f"{EVENT_PREFIX}.host.{c.out_event}.{c.host_id}")
            info = await self.js.consumer_info(EVENTS_STREAM, c.consumer)
        except NotFoundError:
            # Not published yet, aged out of the stream, or the consumer went meanwhile: the
            # grace decides.
            return False
        floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
        return out.seq is not None and floor >= out.seq

    async def _remove(self, c: Candidate, acknowledged: bool) -> None:
        try:
            await self.js.delete_consumer(EVENTS_STREAM, c.consumer)
        except NotFoundError:
            # Another replica, or an earlier sweep whose answer was lost, removed it first.
            return
        self.removed += 1
        log.info(
            "registry.consumer_removed",
            host_id=c.host_id,
            consumer=c.consumer,
            because=c.out_event,
            acknowledged=acknowledged,
        )
