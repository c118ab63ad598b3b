"""What the allocator does of its own accord: lost hosts, expiry, allocations frozen too long,
the pending queue.

Nobody asks for these; the log does. The engine tells `Reactions` of each
event its model has folded (`notice`): a host lost, deregistered, left or
revoked takes its allocations with it (each lost with the reason its user
reads, `loss_reason`), and any change of hosts, a freed reservation or a new
request may let a pending request be placed. `run` reacts to those, and
expires what has outlived its lifetime, once a `tick` at least. The same
round marks allocations that a host's owner policy has kept frozen past its
member's `max_frozen_s`, and releases those that asked for it (`on_preempt`).
Stopped containers kept past their `keep_for` are discarded in the round too,
and those of a host that is gone with its allocations (kept.py). The round
also ends the work of users an operator removed and refuses the waiting
requests a lowered quota no longer admits (user_reactions.py), and drives
batch jobs (job_reactions.py).

Each reaction decides with the pure functions of decisions.py on the engine's
model and appends through the engine, like a user's command: ends of
allocations are retried by `decide_and_append` when another writer moved a
stream first. The pending queue is served fairly by user (queue.py) under the
engine's `placing` lock, so it never decides against a user's request at the
same time; a placement that loses a race is left pending for the next round.
"""

import asyncio
import contextlib
import functools
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from potluck.allocator.decisions import (
    expiry,
    frozen_too_long,
    loss,
    loss_reason,
    never_fits,
    placement,
    queue_deadline,
    timed_out,
)
from potluck.allocator.job_reactions import JobDriver
from potluck.allocator.kept import TIME_UP, discard, due
from potluck.allocator.queue import fair_order
from potluck.allocator.scheduler import Decision, Impossible, Placed
from potluck.allocator.user_reactions import UserReactions
from potluck.contracts.allocation_events import AllocationRequested, AllocationUnplaced, CapacityReserved
from potluck.events import TRANSIENT_DB_ERRORS, Event, RecordedEvent, WrongExpectedVersion
from potluck.events.tracing import continuing, trace_carrier_of, tracer
from potluck.kernel.rejections import Rejected
from potluck.readmodels.allocations import TERMINAL_EVENTS, AllocationState

if TYPE_CHECKING:
    from potluck.allocator.engine import AllocatorEngine

__all__ = ["Reactions", "makes_room"]

#: A round that fails with one of these is tried again a tick later instead of ending the service.
RETRIED_NEXT_ROUND: tuple[type[BaseException], ...] = (Rejected, *TRANSIENT_DB_ERRORS)

log = structlog.get_logger(__name__)

#: Logs whose every event may let a waiting request fit: a host came, went, recovered, was
#: resumed or changed what it donates; the images a host holds changed.
_ROOM_CATEGORIES = frozenset({"host", "images"})


def makes_room(event: Event, category: str) -> bool:
    """Whether `event` (of a log of `category`) may let a request that had to wait fit now.

    Events of hosts and of the images they hold, and capacity given back (freed, or retained
    as a kept container's disk only). Not a reservation, which only takes room, nor anything
    of allocations or users: what ends an allocation's hold on a host is its CapacityFreed.
    """
    if category in _ROOM_CATEGORIES:
        return True
    return category == "capacity" and not isinstance(event, CapacityReserved)


class Reactions:
    def __init__(self, engine: "AllocatorEngine") -> None:
        self.engine = engine
        #: Hosts gone (lost, deregistered, left, revoked) whose allocations are still to be
        #: given up, each with the reason their users read.
        self.lost_hosts: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.capacity_changed = asyncio.Event()
        self.jobs = JobDriver(engine)
        #: Users removed, or given another quota, whose work the next round looks at.
        self.users = UserReactions(engine)
        #: How many events may have let a waiting request fit where it did not (`makes_room`).
        self.room_changes = 0
        #: What the whole queue was last tried against (`room_changes` and the placements in
        #: flight that failed to land), and how many times it was.
        self._queue_tried_against: tuple[int, int] | None = None
        self.queue_passes = 0
        #: Requests that began waiting since the queue was last tried: tried in the next round,
        #: with the room as it is, without trying the whole queue again.
        self._newcomers: set[str] = set()
        #: No waiting request times out before this (None: not known, look at each): the
        #: earliest queue deadline when they were last looked at, or a newcomer's, if earlier.
        self._next_timeout: datetime | None = None
        #: How many times every waiting request was looked at for its queue timeout.
        self.timeout_walks = 0
        #: The trace each waiting request was made in (its AllocationRequested's metadata), so
        #: that a placement the queue makes later joins it: `potluck ops trace ALLOC` of a
        #: request that waited showed its request and its start apart, and no placement.
        self.request_traces: dict[str, dict[str, str]] = {}

    def notice(self, event: Event, record: RecordedEvent) -> None:
        """After the model folded `event`: remember what to react to."""
        reason = loss_reason(event)
        if reason is not None:
            self.lost_hosts.put_nowait((str(getattr(event, "host_id", "")), reason))
        if makes_room(event, record.category):
            self.room_changes += 1
            self.capacity_changed.set()
        elif isinstance(event, AllocationRequested | AllocationUnplaced):
            state = self.engine.model.allocations.allocations.get(event.alloc_id)
            if state is not None and state.status == "pending":
                self._newcomers.add(event.alloc_id)
                self._times_out_at(queue_deadline(state))
                self.capacity_changed.set()
                if isinstance(event, AllocationRequested) and (carrier := trace_carrier_of(record.metadata)):
                    self.request_traces[event.alloc_id] = carrier
        if isinstance(event, TERMINAL_EVENTS):
            self.request_traces.pop(event.alloc_id, None)
        if self.jobs.notice(event, record):
            self.capacity_changed.set()  # wakes the round, which drives the job
        if self.users.notice(event):
            self.capacity_changed.set()

    async def run(self, tick: float = 1.0) -> None:
        """Lost hosts, expiry and the pending queue, until cancelled.

        A round that fails (the database away, other writers winning every attempt) is
        logged and tried again a tick later: the allocator keeps serving its API, and
        nothing is lost, since every reaction is decided again from the log.
        """
        while True:
            try:
                await self._round()
            except RETRIED_NEXT_ROUND as exc:
                log.error(
                    "allocator.reaction_failed",
                    error=str(exc) or type(exc).__name__,
                    retry_in_s=tick,
                    hint="check that Postgres is up; the allocator tries again",
                )
                self.capacity_changed.set()
                await asyncio.sleep(tick)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick):
                    await self.capacity_changed.wait()

    async def _round(self) -> None:
        while not self.lost_hosts.empty():
            host_id, reason = self.lost_hosts.get_nowait()
            try:
                await self.lose_allocations_of(host_id, reason)
            except BaseException:
                self.lost_hosts.put_nowait((host_id, reason))  # not done: again next round
                raise
        # Before the queue and the jobs: nothing of a removed user's is placed or requested, and
        # what a lowered quota no longer admits is refused, not placed.
        await self.users.run()
        await self.expire_due()
        await self.discard_due()
        await self.mark_frozen_too_long()
        # Before the queue: the attempts jobs request now are placed in this round.
        await self.jobs.drive()
        if self.capacity_changed.is_set() or self.engine.model.allocations.pending_ids:
            self.capacity_changed.clear()
            await self.place_pending()

    async def lose_allocations_of(self, host_id: str, reason: str = "host lost") -> None:
        engine = self.engine
        allocations = engine.model.allocations.allocations
        for alloc_id in engine.model.active_on(host_id):

            async def attempt(alloc_id: str = alloc_id) -> None:
                await engine.append(loss(allocations[alloc_id], host_id, reason), "allocator")

            await engine.decide(attempt)
            log.warning("allocation.lost", alloc_id=alloc_id, host_id=host_id, reason=reason)
        kept = [a.alloc_id for a in engine.model.allocations.kept_on(host_id)]
        await self._discard(kept, f"its host is gone ({reason})")

    async def discard_due(self) -> int:
        """Remove the kept containers whose keep_for is up; how many."""
        kept = self.engine.model.allocations.kept()
        return await self._discard(due(kept, self.engine.clock()), TIME_UP)

    async def _discard(self, alloc_ids: list[str], reason: str) -> int:
        engine = self.engine
        allocations = engine.model.allocations.allocations
        for alloc_id in alloc_ids:

            async def attempt(alloc_id: str = alloc_id) -> None:
                await engine.append(discard(allocations[alloc_id], reason), "allocator")

            await engine.decide(attempt)
            log.info("allocation.discarded", alloc_id=alloc_id, reason=reason)
        return len(alloc_ids)

    async def expire_due(self) -> int:
        engine = self.engine
        allocations = engine.model.allocations.allocations
        due = engine.model.due(engine.clock())
        for alloc_id in due:

            async def attempt(alloc_id: str = alloc_id) -> None:
                await engine.append(expiry(allocations[alloc_id], engine.clock()), "allocator")

            await engine.decide(attempt)
            log.info("allocation.expired", alloc_id=alloc_id)
        return len(due)

    async def mark_frozen_too_long(self) -> int:
        """Mark what a frozen host kept frozen too long (and release what asked for it); how many."""
        engine = self.engine
        model = engine.model
        due = model.frozen_too_long(engine.clock())
        for alloc_id in due:

            async def attempt(alloc_id: str = alloc_id) -> None:
                state = model.allocations.allocations[alloc_id]
                host = model.hosts.hosts.get(state.host_id) if state.host_id else None
                if host is not None:
                    await engine.append(frozen_too_long(state, host, engine.clock()), "allocator")

            await engine.decide(attempt)
            state = model.allocations.allocations[alloc_id]
            log.warning(
                "allocation.frozen_too_long",
                alloc_id=alloc_id,
                host_id=state.host_id,
                on_preempt=state.spec.on_preempt,
                status=state.status,
            )
        return len(due)

    async def place_pending(self) -> int:
        """Places what waits, fairly by user; refuses what waited past its queue timeout.

        Placement is a pure function of the hosts, the capacity ledger, the images on hosts and
        the placements in flight, and the room a request needs only shrinks unless one of
        these changes in a way `makes_room` (or a placement in flight fails to land). A queue
        tried whole since then would get the same answers, so only the requests that began
        waiting since (the newcomers) are tried, in their fair order: requests ahead of them
        that still cannot fit hold nothing back. A long queue behind a full pool so costs one
        pass when room may have grown, not one per request that joins it. The queue timeouts,
        which move with the clock, are looked at in any round once one may be due
        (`_refuse_timed_out`).
        """
        engine = self.engine
        placed = 0
        async with engine.placing:
            await self._refuse_timed_out(engine.clock())
            tried_against = (self.room_changes, engine.in_flight.failed_to_land)
            whole = tried_against != self._queue_tried_against
            if not whole and not self._newcomers:
                return 0
            trying, self._newcomers = self._newcomers, set()
            try:
                placed = await self._place_in_turn(None if whole else trying)
            except BaseException:
                self._newcomers |= trying  # cut short: tried again next round
                raise
            if whole:
                # Only a pass that went through counts: one cut short is tried whole again.
                self.queue_passes += 1
                self._queue_tried_against = tried_against
        return placed

    async def _place_in_turn(self, only: set[str] | None) -> int:
        """Try the pending requests (`only` these, when given) in the fair queue's order; how
        many were placed. One that lost a race to another writer is a newcomer again."""
        engine = self.engine
        view = engine.model.allocations
        waiting = view.pending() if only is None else [view.allocations[a] for a in only]
        placed = 0
        for waited in fair_order(waiting, view.active(), view.last_placed):
            # Events folded while an earlier one's placement was appended may have moved it.
            current = view.allocations[waited.alloc_id]
            if current.status != "pending" or current.user in engine.model.users.removed:
                continue  # a removed user's: released in the next round (user_reactions.py)
            outlook = engine.outlook()
            decision = outlook.place(current, engine.strategy)
            try:
                if isinstance(decision, Placed):
                    appends = placement(
                        current,
                        decision.host_id,
                        now=engine.clock(),
                        alloc_version=current.version,
                        capacity_version=outlook.capacity_version(decision.host_id),
                    )
                    with self._in_request_trace(current.alloc_id, "queued placement"):
                        await engine.append(appends, "allocator")
                    placed += 1
                elif isinstance(decision, Impossible):
                    with self._in_request_trace(current.alloc_id, "queued refusal"):
                        await engine.append(never_fits(current, decision), "allocator")
            except WrongExpectedVersion:
                self._newcomers.add(current.alloc_id)
                await engine.caught_up_with_log()
        return placed

    @contextlib.contextmanager
    def _in_request_trace(self, alloc_id: str, name: str) -> Iterator[None]:
        """A span `name` in the trace the request was made in (none known: a trace of its own),
        so the append carries it on to hostd's start of the container."""
        with (
            continuing(self.request_traces.get(alloc_id)),
            tracer().start_as_current_span(name, attributes={"potluck.alloc_id": alloc_id}),
        ):
            yield

    def _placing_now(self, pending: AllocationState) -> Decision:
        return self.engine.outlook().place(pending, self.engine.strategy)

    async def _refuse_timed_out(self, now: datetime) -> None:
        """Refuse what has waited past its queue timeout at `now`. Each request that waits is
        looked at only once one may be due, not every round: a round comes with each request
        that joins, and a long queue would cost a walk each."""
        if self._next_timeout is not None and now <= self._next_timeout:
            return
        self.timeout_walks += 1
        for pending in self.engine.model.pending():
            refused = timed_out(pending, now, functools.partial(self._placing_now, pending))
            if refused:
                with contextlib.suppress(WrongExpectedVersion):
                    await self.engine.append(refused, "allocator")
        # Worked out with no await in between: no request that joins meanwhile is missed. One
        # whose refusal lost a race (still waiting, past its deadline) makes the next round look.
        self._next_timeout = datetime.max.replace(tzinfo=UTC)
        for pending in self.engine.model.pending():
            self._times_out_at(queue_deadline(pending))

    def _times_out_at(self, deadline: datetime | None) -> None:
        if deadline is not None and self._next_timeout is not None and deadline < self._next_timeout:
            self._next_timeout = deadline
