"""The allocator's shell: it folds the log into its model, and runs users' commands on it.

The model (model.py: hosts, the capacity ledger, allocations, users, quota
versions) is folded from the log by one `Fold`, in log order. Decisions
(decisions.py) are made on it and appended with expected versions: the
allocation's own stream and the chosen host's `capacity-<host>` stream, in one
transaction. If another replica reserved on that host first, the append fails,
`decide_and_append` waits until our model has caught up with the log and
decides again: no host is ever over-committed, whatever the number of
replicas. A new request also appends to its user's `quota-<user>` stream with
its expected version, so that replicas deciding requests of one user at once
cannot together pass the user's quota. When other writers win every attempt,
the user is told the pool is busy.

A command that appends waits until the fold has taken in its own append
before answering, so a user reads their own writes. A refusal that no host
could ever give a request (422) is said only after the fold has caught up with
the log once more: the host that a member saw join a moment ago (in the log,
`potluck ops hosts list`) may not be folded here yet, and "no host matches" is
no answer to give about it.

New requests are decided one at a time (under `placing`) but not committed one
at a time: each decision queues its append and lets the next decision go while
it commits, counting the requests still in flight (in_flight.py). Concurrent
requests so share transactions instead of each waiting for a commit and a
round trip through the follower. What the allocator does of its own accord
(lost hosts, expiry, the pending queue) is in reactions.py.
"""

import asyncio
import contextlib
import gc
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

import structlog

from potluck.allocator import idempotency
from potluck.allocator.capacity import CapacityLedger
from potluck.allocator.decisions import (
    Outlook,
    check_quota,
    extension,
    gone_reason,
    new_alloc_id,
    release,
    request_appends,
    requested,
)
from potluck.allocator.idempotency import keyed_alloc_id, keyed_job_id, replayed, replayed_job
from potluck.allocator.in_flight import InFlight, InFlightRequests
from potluck.allocator.job_decisions import (
    attempt_request,
    cancellation,
    check_job_size,
    check_unfinished_jobs,
    new_job_id,
)
from potluck.allocator.job_reactions import _Tracked
from potluck.allocator.job_schemas import CreateJob
from potluck.allocator.model import AllocatorModel
from potluck.allocator.reactions import Reactions
from potluck.allocator.scheduler import (
    NO_HOST_REGISTERED,
    Decision,
    Impossible,
    Placed,
    Scheduler,
    Strategy,
    Wait,
)
from potluck.allocator.schemas import CreateAllocation, HistoryEntry, Pool
from potluck.allocator.ssh_key_check import check_ssh_keys
from potluck.allocator.stored import ALLOC_ID, stored_allocation, stored_job
from potluck.allocator.user_rates import DEFAULT_FETCH_RATE, TooManyFetches, UserRates
from potluck.allocator.users import User, UsersView
from potluck.allocator.waiting import KeptIndex, Standing, kept_freed, queue_positions, standing_in
from potluck.contracts.allocation_events import AllocationRequested, CapacityReserved, alloc_stream
from potluck.contracts.job_events import JobSubmitted, job_stream
from potluck.events import (
    TRANSIENT_DB_ERRORS,
    Contended,
    Event,
    EventStore,
    Fold,
    RecordedEvent,
    RetryPolicy,
    StreamAppend,
    decide_and_append,
)
from potluck.events.checkpoints import Checkpoint, Checkpoints
from potluck.kernel.key_rates import RatePolicy
from potluck.kernel.rejections import Rejected
from potluck.readmodels.allocations import AllocationState, AllocationsView
from potluck.readmodels.hosts import HostsView
from potluck.readmodels.jobs import JobState
from potluck.readmodels.retention import DEFAULT_RETENTION_S, Retirement

__all__ = ["FOLD_VERSION", "AllocatorEngine", "Clock", "utcnow"]

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
T = TypeVar("T")


#: The fold's own version, part of its checkpoints' key (potluck.events.checkpoints): bump it
#: when a change to how the model folds makes a log fold to another model than before in a
#: module the checkpoint does not hold a class of (a change to those makes it stale by itself).
FOLD_VERSION = 2
#: How long a request no host could give waits for the fold to catch up with the log before
#: it is refused all the same (a database that does not answer must not hold a refusal up).
IMPOSSIBLE_RECHECK_S = 2.0
#: The model's parts a checkpoint holds: not the placement index, which follows from the
#: others and points at the requests in flight.
_KEPT = tuple(f.name for f in fields(AllocatorModel) if f.name != "placement")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Requested(NamedTuple):
    """What a request for an allocation, or to extend one, got: the allocation, and whether an
    earlier request with the same Idempotency-Key had made it, or extended it (idempotency.py)."""

    state: AllocationState
    replayed: bool


class Submitted(NamedTuple):
    """What a job's submission got: the job, and whether an earlier request with the same
    Idempotency-Key had made it (idempotency.py)."""

    job: JobState
    replayed: bool


def _not_yours(alloc_id: str) -> Rejected:
    return Rejected("NOT_FOUND", f"no allocation {alloc_id[:64]} of yours", field="alloc_id", status=404)


class _NeverPossible(Rejected):
    """No host registered could ever give the request, as the model has folded the log so far."""

    def __init__(self, impossible: Impossible) -> None:
        super().__init__(impossible.code, impossible.message, field=impossible.field, status=422)


class _NoHostYet(Exception):
    """The pool as folded so far has no host: decided again once the fold has caught up with the
    log, since a host may have registered a moment ago (an allocator just started, say)."""


#: Set while a request is decided again after the fold caught up (decided_on_the_whole_log).
_WHOLE_LOG_SEEN: ContextVar[bool] = ContextVar("whole_log_seen", default=False)


def _judged(decision: Decision) -> Decision:
    """`decision`, unless it is to be looked at again on the whole log: no host could ever give
    the request, or there is no host at all (which then waits, once the whole log says so)."""
    if isinstance(decision, Impossible):
        raise _NeverPossible(decision)
    if isinstance(decision, Wait) and decision.reason == NO_HOST_REGISTERED and not _WHOLE_LOG_SEEN.get():
        raise _NoHostYet
    return decision


class _Watched:
    """The model as the engine folds it: after each event, the engine notes what follows from it."""

    def __init__(self, model: AllocatorModel, noticed: Callable[[Event, RecordedEvent], None]) -> None:
        self.model = model
        self.noticed = noticed
        self.categories = model.categories

    def apply(self, event: Event, record: RecordedEvent) -> None:
        self.model.apply(event, record)
        self.noticed(event, record)

    def passed_over(self, record: RecordedEvent) -> None:
        self.model.passed_over(record)


class AllocatorEngine:
    def __init__(
        self,
        store: EventStore,
        *,
        strategy: Strategy = "best_fit",
        clock: Clock = utcnow,
        conflict_attempts: int = 20,
        freeze_loaded: bool = False,
        pool_registry: str | None = None,
        retention_s: float = DEFAULT_RETENTION_S,
        fetch_rate: RatePolicy = DEFAULT_FETCH_RATE,
    ) -> None:
        self.store = store
        #: Each user's fetches (user_rates.py): reads of the log (what the model no longer
        #: holds, histories) and of the pool registry. Reads the model answers take nothing.
        self.fetches = UserRates(fetch_rate, refusal=TooManyFetches)
        #: The pool registry's address (`127.0.0.1:5000`), whose images hosts pull with the
        #: allocator's token even when it is on their own machine or network.
        self.pool_registry = pool_registry
        #: After catching up, exempt what was loaded from the cyclic GC (`gc.freeze`): the
        #: model lives as long as the process, and scanning it on every full collection
        #: cost the decisions after it about half their time (bench/README.md, placement).
        #: For the allocator's own process only: it is never collected afterwards.
        self.freeze_loaded = freeze_loaded
        self.strategy: Strategy = strategy
        self.clock = clock
        self.conflict_attempts = conflict_attempts
        #: How long what ended stays in the model (retention.py): part of the fold, so of its
        #: checkpoints' key too, and what `potluck ops replay` must fold with to agree.
        self.retention_s = retention_s
        self.model = AllocatorModel(retirement=Retirement(retention_s=retention_s))
        self.fold = Fold(_Watched(self.model, self._noticed), reader="allocator")
        self.fold.after_batch.append(self._applied)
        self.ready = asyncio.Event()
        #: The position of the checkpoint the model was loaded from (0: folded from zero).
        self.resumed_from = 0
        #: Held while deciding where new work goes: one placement decision at a time.
        self.placing = asyncio.Lock()
        self.in_flight = InFlightRequests()
        self.reactions = Reactions(self)
        #: The fair queue's order and the log position it was worked out at (queue_positions).
        self._queue_positions: tuple[int, dict[str, int]] | None = None
        #: The hosts with kept containers' disk given back, and the log position of that (_kept_freed).
        self._kept_freed_at: tuple[int, KeptIndex | None] | None = None
        #: Called with each record folded while following the log (not while catching up): metrics.
        self.on_applied: list[Callable[[RecordedEvent], None]] = []
        #: By user, the jobs being submitted (checked against the cap, not folded yet).
        self._submitting: dict[str, set[str]] = {}

    # The model, as others read it.

    @property
    def hosts(self) -> HostsView:
        return self.model.hosts

    @property
    def ledger(self) -> CapacityLedger:
        return self.model.ledger

    @property
    def allocations(self) -> AllocationsView:
        return self.model.allocations

    @property
    def users(self) -> UsersView:
        return self.model.users

    @property
    def quota_versions(self) -> dict[str, int]:
        return self.model.quota_versions

    @property
    def position(self) -> int:
        return self.fold.position

    def outlook(self) -> Outlook:
        """The model and the requests in flight: what the next decision decides on."""
        return Outlook(self.model, self.in_flight, self.pool_registry)

    def queue_positions(self) -> dict[str, int]:
        """Each pending allocation's place in the fair queue (waiting.queue_positions), worked out
        once per log position: every answer about a pending allocation shows its place, and a
        page of them would otherwise order the whole queue once per allocation shown."""
        if self._queue_positions is None or self._queue_positions[0] != self.position:
            self._queue_positions = (self.position, queue_positions(self.model.allocations))
        return self._queue_positions[1]

    def standing(self, state: AllocationState) -> Standing | None:
        """Why `state` waits, while it is pending (None otherwise): decided as its placement would
        be now."""
        if state.status != "pending":
            return None
        return standing_in(self.outlook(), state, self.strategy, self.queue_positions(), self._kept_freed)

    def _kept_freed(self) -> KeptIndex | None:
        """The hosts with the disk of the containers kept on them given back, indexed (and those
        containers by host), worked out once per log position as the queue's positions are:
        a page of a thousand waiting tasks asks it once each, and 10,000 hosts looked at each
        time would take seconds."""
        if self._kept_freed_at is None or self._kept_freed_at[0] != self.position:
            freed = kept_freed(self.outlook().snapshots(), self.model.allocations.kept())
            indexed = None if freed is None else (Scheduler(freed.hosts), freed.held)
            self._kept_freed_at = (self.position, indexed)
        return self._kept_freed_at[1]

    # Folding the log.

    def _noticed(self, event: Event, record: RecordedEvent) -> None:
        # A request in flight no longer counts once the last event of its append is folded.
        if isinstance(event, CapacityReserved):
            self.in_flight.settle(event.alloc_id)
        elif isinstance(event, AllocationRequested):
            entry = self.in_flight.get(event.alloc_id)
            if entry is not None and entry.host_id is None:
                self.in_flight.settle(event.alloc_id)
        self.reactions.notice(event, record)

    def _applied(self, batch: Sequence[RecordedEvent]) -> None:
        for record in batch:
            for hook in self.on_applied:
                hook(record)

    def checkpoints(self) -> Checkpoints:
        # A model folded with another retention window holds other rows: never resumed from.
        name = f"allocator-model-retain-{self.retention_s:g}s"
        return Checkpoints(self.store, "allocator", name, FOLD_VERSION)

    def checkpoint_state(self) -> object:
        """What a checkpoint keeps: the model's parts and what the fold could not read."""
        return ({name: getattr(self.model, name) for name in _KEPT}, self.fold.skipped)

    def resume(self, checkpoint: Checkpoint) -> None:
        """Take the model a checkpoint holds, before catching up from its position."""
        parts: dict[str, Any]
        parts, skipped = checkpoint.state
        for name in _KEPT:
            setattr(self.model, name, parts[name])
        self.model.placement = type(self.model.placement)()
        self.fold.position = checkpoint.position
        self.fold.skipped = skipped
        self._notice_resumed()

    def _notice_resumed(self) -> None:
        """What the reactions would have noticed folding the log up to the checkpoint: every
        host gone with allocations still on it, every job (all are driven once after a fold from
        zero, with the tasks they requested open), every removed user and every user with
        requests waiting (user_reactions.py), and a look at the pending queue."""
        reactions = self.reactions
        allocations = self.model.allocations
        with_allocations = {
            a.host_id for a in (*allocations.active(), *allocations.kept()) if a.host_id is not None
        }
        for host_id in sorted(with_allocations):
            host = self.model.hosts.hosts.get(host_id)
            reason = None if host is None else gone_reason(host)
            if reason is not None:
                reactions.lost_hosts.put_nowait((host_id, reason))
        driver = reactions.jobs
        for job in self.model.jobs.jobs.values():
            driver.dirty.add(job.job_id)
            driver.tracked[job.job_id] = _Tracked(open=set(job.attempts))
            if job.deadline is not None and not job.terminal:
                driver.deadlines[job.job_id] = job.deadline
        reactions.users.notice_resumed()
        reactions.capacity_changed.set()

    async def catch_up(self, *, resume: bool = False) -> None:
        """Fold the log; with `resume`, from the newest checkpoint this code can read."""
        if resume:
            checkpoint = await self.checkpoints().load()
            if checkpoint is not None:
                self.resume(checkpoint)
                self.resumed_from = checkpoint.position
        await self.fold.catch_up(self.store)
        if self.freeze_loaded:
            gc.freeze()
        self.ready.set()
        log.info(
            "allocator.loaded",
            position=self.position,
            resumed_from=self.resumed_from,
            hosts=len(self.hosts.hosts),
            allocations=len(self.allocations.allocations),
            retired=self.model.retirement.allocations_retired,
            retention_s=self.retention_s,
            skipped=self.fold.skipped.count,
        )

    async def follow(self) -> None:
        await self.fold.follow(self.store)

    async def caught_up_with_log(self) -> None:
        await self.fold.caught_up_with(self.store)

    async def append(
        self, appends: Sequence[StreamAppend], actor: str, context: Mapping[str, Any] | None = None
    ) -> None:
        """Append (nothing, when `appends` is empty) and wait until the model includes it;
        `context`: more of the request's, in every event's metadata beside the actor."""
        if not appends:
            return
        recorded = await self.store.append_streams(appends, metadata={"actor": actor, **(context or {})})
        if recorded:
            await self.fold.seen(recorded[-1].position)

    async def decide(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt` (decide, append) until no other writer wins; BUSY when they always do."""
        try:
            return await decide_and_append(
                attempt,
                before_retry=self.caught_up_with_log,
                policy=RetryPolicy(attempts=self.conflict_attempts),
            )
        except Contended as exc:
            log.info("allocator.contended", stream=exc.conflict.stream, attempts=exc.attempts)
            raise Rejected("BUSY", "the pool is changing too fast to decide; try again", status=503) from exc

    async def decided_on_the_whole_log(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """`decide(attempt)`; when `attempt` finds that no host could ever give the request, or
        no host at all (`_judged`), once more after the fold has caught up with the log, if that
        took in anything new (a host that registered or changed its labels or donation a moment
        ago). A pool still without a host then takes the request to wait for one."""
        try:
            return await self.decide(attempt)
        except (_NeverPossible, _NoHostYet) as first:
            before = self.fold.position
            try:
                await self.fold.caught_up_with(self.store, timeout=IMPOSSIBLE_RECHECK_S)
            except TRANSIENT_DB_ERRORS as exc:  # TimeoutError among them
                if isinstance(first, _NeverPossible):
                    log.info("allocator.recheck_skipped", code=first.code, reason=type(exc).__name__)
                    raise first from None
            else:
                if self.fold.position == before and isinstance(first, _NeverPossible):
                    raise
        seen = _WHOLE_LOG_SEEN.set(True)
        try:
            return await self.decide(attempt)
        finally:
            _WHOLE_LOG_SEEN.reset(seen)

    # Queries.

    def _mine(self, user: User, alloc_id: str) -> AllocationState:
        state = self.allocations.allocations.get(alloc_id)
        if state is None or state.user != user.name:
            # Another user's allocation is as good as absent: no disclosure.
            raise _not_yours(alloc_id)
        return state

    async def _mine_or_stored(self, user: User, alloc_id: str) -> AllocationState:
        """`_mine`, or, for an allocation the model no longer holds (ended longer than the
        retention window ago, retention.py), its state folded from its own stream in the log."""
        state = self.allocations.allocations.get(alloc_id)
        if state is None and ALLOC_ID.fullmatch(alloc_id):
            self.fetches.admit(user.name)
            state = await stored_allocation(self.store, alloc_id)
        if state is None or state.user != user.name:
            raise _not_yours(alloc_id)
        return state

    async def stored_cursor(self, user: User, after: str | None) -> AllocationState | None:
        """The allocation a list's `after` names, when it is one of the user's that the model no
        longer holds (read from the log); None otherwise (held, another's, or none at all)."""
        if after is None or after in self.allocations.allocations or not ALLOC_ID.fullmatch(after):
            return None
        self.fetches.admit(user.name)
        stored = await stored_allocation(self.store, after)
        return stored if stored is not None and stored.user == user.name else None

    async def allocation_of(self, user: User, alloc_id: str) -> AllocationState:
        """The user's allocation, held by the model or, ended long ago, read from the log."""
        return await self._mine_or_stored(user, alloc_id)

    async def wait_for(self, user: User, alloc_id: str, status: str, timeout: float) -> AllocationState:
        """Returns once the allocation is in `status` or a terminal state, or when `timeout` passes."""
        now = await self._mine_or_stored(user, alloc_id)
        if now.terminal:  # as it will stay: no second read
            return now

        def reached() -> bool:
            state = self.allocations.allocations.get(alloc_id)
            # Gone from the model: it ended (only what ended leaves it).
            return state is None or state.status == status or state.terminal

        with contextlib.suppress(TimeoutError):
            await self.fold.wait_until(reached, timeout)
        return await self._mine_or_stored(user, alloc_id)

    async def history(self, user: User, alloc_id: str) -> list[HistoryEntry]:
        await self._mine_or_stored(user, alloc_id)
        self.fetches.admit(user.name)  # the events are only in the log
        return [
            HistoryEntry(
                position=r.position,
                version=r.version,
                type=r.type,
                recorded_at=r.recorded_at,
                # A row whose data is no JSON object (a hand-made INSERT, another writer's) is
                # listed with none: it failed the whole answer as the user's INVALID_FIELD.
                data=r.data if isinstance(r.data, dict) else {},
            )
            for r in await self.store.read_stream(alloc_stream(alloc_id))
        ]

    def pool(self) -> Pool:
        return self.model.pool()

    # Users' commands.

    async def request_allocation(
        self, user: User, body: CreateAllocation, *, idempotency_key: str | None = None
    ) -> Requested:
        """A new allocation, or with `idempotency_key` the one an earlier request with the same
        key made (idempotency.py): its id is the key's, so the log holds at most one."""
        check_ssh_keys(body.ssh_keys)
        alloc_id = new_alloc_id() if idempotency_key is None else keyed_alloc_id(user.name, idempotency_key)
        request = requested(user.name, alloc_id, body)
        tries = 0
        earlier: list[AllocationState] = []

        async def made_already() -> AllocationState | None:
            """The allocation of an earlier request with this key: in memory, or after an
            append lost to its stream (ended long ago, retention.py), in the log."""
            state = self.allocations.allocations.get(alloc_id)
            if state is None and tries > 1:
                state = await stored_allocation(self.store, alloc_id)
            if state is None:
                refuse_while_in_flight()
            return state

        def refuse_while_in_flight() -> None:
            if self.in_flight.get(alloc_id) is not None:
                raise idempotency.in_flight()

        async def attempt() -> AllocationState:
            nonlocal tries
            tries += 1
            if idempotency_key is not None and (state := await made_already()) is not None:
                earlier.append(replayed(state, request))
                return state
            async with self.placing:
                if idempotency_key is not None:
                    # Again under the lock: another request with the key may have queued its
                    # append while this one waited for it.
                    refuse_while_in_flight()
                outlook = self.outlook()
                decision = _judged(outlook.place(request, self.strategy))
                check_quota(user.quota, outlook.held_by(user.name), request.spec.resources)
                host_id = decision.host_id if isinstance(decision, Placed) else None
                appends = request_appends(
                    request,
                    host_id,
                    now=self.clock(),
                    quota_version=outlook.quota_version(user.name),
                    capacity_version=outlook.capacity_version(host_id) if host_id else 0,
                )
                # Queued now, in decision order; the next decision counts it until it is folded.
                self.in_flight.add(InFlight(alloc_id, user.name, request.spec.resources, host_id))
                outcome = self.store.append_streams_nowait(appends, metadata={"actor": f"user:{user.name}"})
                outcome.add_done_callback(lambda f: self._landed_or_not(alloc_id, f))
            recorded = await asyncio.shield(outcome)
            await self.fold.seen(recorded[-1].position)
            return self.allocations.allocations[alloc_id]

        state = await self.decided_on_the_whole_log(attempt)
        if earlier:
            log.info("allocation.request_replayed", alloc_id=alloc_id, user=user.name, status=state.status)
            return Requested(state, replayed=True)
        log.info(
            "allocation.requested",
            alloc_id=alloc_id,
            user=user.name,
            status=state.status,
            host_id=state.host_id,
        )
        return Requested(state, replayed=False)

    def _landed_or_not(self, alloc_id: str, outcome: "asyncio.Future[list[RecordedEvent]]") -> None:
        # A failed append no longer counts; one that landed counts until the fold takes it in.
        if outcome.cancelled() or outcome.exception() is not None:
            self.in_flight.settle(alloc_id, landed=False)

    async def release(self, user: User, alloc_id: str) -> AllocationState:
        async def attempt() -> AllocationState:
            state = await self._mine_or_stored(user, alloc_id)
            await self.append(release(state, f"user:{user.name}"), f"user:{user.name}")
            return await self._mine_or_stored(user, alloc_id)

        return await self.decide(attempt)

    async def extend(
        self, user: User, alloc_id: str, by_s: float, *, idempotency_key: str | None = None
    ) -> Requested:
        """Push the allocation's expiry `by_s` later; with `idempotency_key`, only if no earlier
        request with that key did (idempotency.py), which is then answered as it is now."""

        async def attempt() -> Requested:
            state = await self._mine_or_stored(user, alloc_id)
            if idempotency_key is None:
                await self.append(extension(state, by_s, self.clock()), f"user:{user.name}")
                return Requested(self._mine(user, alloc_id), replayed=False)
            stream = await self.store.read_stream(alloc_stream(alloc_id))
            earlier = idempotency.earlier_extension(stream, idempotency_key, by_s)
            if earlier is not None:
                await self.fold.seen(earlier.position)
                return Requested(await self._mine_or_stored(user, alloc_id), replayed=True)
            # Decided on the state the stream was read at or later: an append it did not see
            # (this key's, from a request at the same moment) fails the expected version.
            appends = extension(state, by_s, self.clock())
            context = idempotency.extension_metadata(idempotency_key, by_s)
            await self.append(appends, f"user:{user.name}", context)
            return Requested(self._mine(user, alloc_id), replayed=False)

        return await self.decide(attempt)

    # Batch jobs: the engine records them; the reactions' job driver (job_reactions.py) runs them.

    def _my_job(self, user: User, job_id: str) -> JobState:
        job = self.model.jobs.jobs.get(job_id)
        if job is None or job.user != user.name:
            # Another user's job is as good as absent, like their allocations.
            raise Rejected("NOT_FOUND", f"no job {job_id[:64]} of yours", field="job_id", status=404)
        return job

    def job_of(self, user: User, job_id: str) -> JobState:
        return self._my_job(user, job_id)

    async def submit_job(
        self, user: User, body: CreateJob, *, idempotency_key: str | None = None
    ) -> Submitted:
        """Record a new job; refused when its tasks' specs together are too large (400,
        check_job_size), when the user has MAX_UNFINISHED_JOBS jobs not finished
        (403, before anything is appended), when no host could ever hold one task (422) or one
        task alone is more than the user's whole quota (403). Its tasks wait for room otherwise.
        With `idempotency_key`, the job an earlier request with the same key made, if one did
        (idempotency.py): its id is the key's, so the log holds at most one."""
        job_id = new_job_id() if idempotency_key is None else keyed_job_id(user.name, idempotency_key)
        spec = body.spec()
        check_job_size(spec)
        check_ssh_keys(body.ssh_keys)
        # The first task stands for all: they differ only in their environment.
        probe = attempt_request(job_id, user.name, spec, 0, 1, new_alloc_id())
        check_quota(user.quota, {}, spec.task.resources)
        tries = 0
        earlier: list[JobState] = []
        submitted_here = False

        async def made_already() -> JobState | None:
            """The job of an earlier request with this key: in memory, or after an append lost
            to its stream (ended long ago, retention.py), in the log."""
            job = self.model.jobs.jobs.get(job_id)
            if job is None and tries > 1:
                job = await stored_job(self.store, job_id)
            if job is None and job_id in self._submitting.get(user.name, ()):
                raise idempotency.in_flight()
            return job

        async def attempt() -> JobState:
            nonlocal tries, submitted_here
            tries += 1
            if idempotency_key is not None and (job := await made_already()) is not None:
                earlier.append(replayed_job(job, user.name, spec))
                return job
            # The jobs being submitted count too: requests of one user at once cannot together
            # pass the cap (checked and counted with no await between). Another replica's are
            # counted once folded: replicas taking one user's jobs at the same moment could
            # each let one past the cap, never more.
            submitting = self._submitting.setdefault(user.name, set())
            unfinished = self.model.jobs.unfinished_of(user.name) | submitting
            unfinished.discard(job_id)
            check_unfinished_jobs(len(unfinished))
            _judged(self.outlook().place(probe, self.strategy))
            submitted = JobSubmitted(job_id=job_id, user=user.name, spec=spec)
            submitting.add(job_id)
            submitted_here = True
            await self.append([StreamAppend(job_stream(job_id), [submitted], 0)], f"user:{user.name}")
            return self.model.jobs.jobs[job_id]

        try:
            job = await self.decided_on_the_whole_log(attempt)
        finally:
            submitting = self._submitting.get(user.name)
            # Only this request's own mark: a replayed or refused one leaves the first's.
            if submitting is not None and submitted_here:
                submitting.discard(job_id)
                if not submitting:
                    del self._submitting[user.name]
        if earlier:
            log.info("job.request_replayed", job_id=job_id, user=user.name, status=job.status)
            return Submitted(job, replayed=True)
        log.info("job.submitted", job_id=job_id, user=user.name, tasks=spec.tasks)
        return Submitted(job, replayed=False)

    async def cancel_job(self, user: User, job_id: str) -> JobState:
        """Cancel the job (nothing to do once it has ended), release what it still runs and
        remove the containers its tasks keep."""

        async def attempt() -> None:
            job = self._my_job(user, job_id)
            await self.append(cancellation(job, f"user:{user.name}", ""), f"user:{user.name}")

        await self.decide(attempt)
        if self._my_job(user, job_id).status == "cancelled":
            await self.reactions.jobs.release_attempts(job_id)
        # Removed, ended or not: the containers its finished tasks keep for results go too.
        await self.reactions.jobs.discard_kept(job_id)
        return self._my_job(user, job_id)

    def _job_over(self, job_id: str) -> bool:
        job = self.model.jobs.jobs.get(job_id)
        return job is None or job.terminal  # gone from the model: it ended long ago

    async def wait_for_job(self, user: User, job_id: str, timeout: float) -> JobState:
        """Returns once the job has ended, or when `timeout` passes."""
        self._my_job(user, job_id)
        with contextlib.suppress(TimeoutError):
            await self.fold.wait_until(lambda: self._job_over(job_id), timeout)
        return self._my_job(user, job_id)

    # What the allocator does of its own accord (reactions.py).

    async def run_reactions(self, tick: float = 1.0) -> None:
        """Lost hosts, expiry and the pending queue, until cancelled."""
        await self.reactions.run(tick)

    async def lose_allocations_of(self, host_id: str) -> None:
        await self.reactions.lose_allocations_of(host_id)

    async def expire_due(self) -> int:
        return await self.reactions.expire_due()

    async def place_pending(self) -> int:
        return await self.reactions.place_pending()
