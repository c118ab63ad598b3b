"""The allocator's state and decisions: what the HTTP API and the bus handlers call.

Read model: hosts (registry events), the capacity ledger, allocations and
users, all folded from the log by one follower, in log order. Decisions are
made on that model and appended with expected versions: the allocation's own
stream and the chosen host's `capacity-<host>` stream, in one transaction. If
another replica reserved on that host first, the append fails, we wait until
our model has caught up with the log and decide again: no host is ever
over-committed, whatever the number of replicas. A new request also appends to
its user's `quota-<user>` stream with its expected version, so that replicas
deciding requests of one user at once cannot together pass the user's quota.

A handler that appends waits until the follower has folded its own append
before answering, so a user reads their own writes.

New requests are decided one at a time (under `_placing`) but not committed one
at a time: each decision queues its append and lets the next decision go while
it commits, counting the requests still in flight (in_flight.py). Concurrent
requests so share transactions instead of each waiting for a commit and a
round trip through the follower.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import structlog

from potluck.allocator.capacity import CapacityLedger, host_snapshots, placement_request
from potluck.allocator.in_flight import InFlight, InFlightRequests, sum_of
from potluck.allocator.queue import FairQueue
from potluck.allocator.scheduler import Decision, Impossible, Placed, Strategy, place
from potluck.allocator.schemas import CapacityFigures, CreateAllocation, HistoryEntry, Pool, PoolHost
from potluck.allocator.users import User, UsersView
from potluck.contracts.allocation_events import (
    AllocationEvent,
    AllocationExpired,
    AllocationExtended,
    AllocationLost,
    AllocationPlaced,
    AllocationRefused,
    AllocationReleased,
    AllocationRequested,
    AllocationSpec,
    CapacityFreed,
    CapacityReserved,
    QuotaCharged,
    alloc_stream,
    capacity_stream,
    quota_stream,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.host_events import HostDeregistered, HostLost
from potluck.events import (
    Event,
    EventStore,
    LogFollower,
    RecordedEvent,
    StreamAppend,
    WrongExpectedVersion,
    registry,
)
from potluck.kernel.rejections import Rejected
from potluck.readmodels.allocations import ACTIVE, AllocationState, AllocationsView
from potluck.readmodels.hosts import HostsView

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
FOLDED = frozenset({"host", "capacity", "alloc", "user", "quota"})


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_alloc_id() -> str:
    return f"a-{uuid4().hex[:12]}"


def figures(c: Capacity) -> CapacityFigures:
    return CapacityFigures(cpus=round(c.cpus, 6), memory=c.memory_bytes, disk=c.disk_bytes)


ZERO = Capacity.model_construct(cpus=0.0, memory_bytes=0, disk_bytes=0)


class AllocatorEngine:
    def __init__(
        self,
        store: EventStore,
        *,
        strategy: Strategy = "best_fit",
        clock: Clock = utcnow,
        conflict_attempts: int = 20,
    ) -> None:
        self.store = store
        self.strategy: Strategy = strategy
        self.clock = clock
        self.conflict_attempts = conflict_attempts
        self.hosts = HostsView()
        self.ledger = CapacityLedger()
        self.allocations = AllocationsView()
        self.users = UsersView()
        self.position = 0
        self.ready = asyncio.Event()
        self._advanced = asyncio.Condition()
        self._capacity_changed = asyncio.Event()
        self._reactions: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
        self._placing = asyncio.Lock()
        self.in_flight = InFlightRequests()
        #: Version of each user's `quota-<user>` stream, as folded.
        self.quota_versions: dict[str, int] = {}
        #: Called with each record folded while following the log (not while catching up): metrics.
        self.on_applied: list[Callable[[RecordedEvent], None]] = []

    # Folding the log.

    def apply(self, record: RecordedEvent) -> None:
        if record.category in FOLDED:
            event = registry.decode_record(record)
            at = record.recorded_at
            if record.category == "host":
                self.hosts.apply(event, position=record.position, version=record.version, at=at)
                if isinstance(event, HostLost | HostDeregistered):
                    host_id = event.host_id
                    self._reactions.put_nowait(lambda: self.lose_allocations_of(host_id))
                self._capacity_changed.set()
            elif record.category == "capacity":
                self.ledger.apply(event, version=record.version)
                if isinstance(event, CapacityFreed):
                    self._capacity_changed.set()
                elif isinstance(event, CapacityReserved):
                    self.in_flight.settle(event.alloc_id)
            elif record.category == "alloc":
                self.allocations.apply(event, position=record.position, version=record.version, at=at)
                if isinstance(event, AllocationRequested):
                    self._capacity_changed.set()
                    entry = self.in_flight.get(event.alloc_id)
                    if entry is not None and entry.host_id is None:
                        self.in_flight.settle(event.alloc_id)
            elif record.category == "quota":
                if isinstance(event, QuotaCharged):
                    self.quota_versions[event.user] = record.version
            else:
                self.users.apply(event)
        self.position = record.position

    async def catch_up(self) -> None:
        while records := await self.store.read_all(self.position, 5000):
            for record in records:
                self.apply(record)
        self.ready.set()
        log.info(
            "allocator.loaded",
            position=self.position,
            hosts=len(self.hosts.hosts),
            allocations=len(self.allocations.allocations),
        )

    async def follow(self) -> None:
        async for batch in LogFollower(self.store, after_position=self.position).batches():
            for record in batch:
                self.apply(record)
                for hook in self.on_applied:
                    hook(record)
            async with self._advanced:
                self._advanced.notify_all()

    async def _seen(self, position: int, timeout: float = 30.0) -> None:
        """Until the read model includes `position` (our own append)."""
        async with self._advanced:
            await asyncio.wait_for(self._advanced.wait_for(lambda: self.position >= position), timeout)

    async def _append(self, appends: Sequence[StreamAppend], actor: str) -> None:
        recorded = await self.store.append_streams(appends, metadata={"actor": actor})
        if recorded:
            await self._seen(recorded[-1].position)

    async def caught_up_with_log(self) -> None:
        await self._seen(await self.store.head_position())

    async def _retrying(
        self, attempt: Callable[[], Awaitable[AllocationState | None]]
    ) -> AllocationState | None:
        for _ in range(self.conflict_attempts):
            try:
                return await attempt()
            except WrongExpectedVersion as exc:
                log.debug("allocator.conflict", stream=exc.stream, expected=exc.expected, actual=exc.actual)
                await self.caught_up_with_log()
        raise Rejected("BUSY", "the pool is changing too fast to decide; try again", status=503)

    # Queries.

    def _mine(self, user: User, alloc_id: str) -> AllocationState:
        state = self.allocations.allocations.get(alloc_id)
        if state is None or state.user != user.name:
            # Another user's allocation is as good as absent: no disclosure.
            raise Rejected("NOT_FOUND", f"no allocation {alloc_id} of yours", field="alloc_id", status=404)
        return state

    def allocation_of(self, user: User, alloc_id: str) -> AllocationState:
        return self._mine(user, alloc_id)

    def allocations_of(self, user: str, status: str | None = None) -> list[AllocationState]:
        found = [
            a
            for a in self.allocations.allocations.values()
            if a.user == user and (status is None or a.status == status)
        ]
        return sorted(found, key=lambda a: (a.requested_at or datetime.min.replace(tzinfo=UTC), a.alloc_id))

    async def wait_for(self, user: User, alloc_id: str, status: str, timeout: float) -> AllocationState:
        """Returns once the allocation is in `status` or a terminal state, or when `timeout` passes."""
        self._mine(user, alloc_id)

        def reached() -> bool:
            state = self.allocations.allocations[alloc_id]
            return state.status == status or state.terminal

        async with self._advanced:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._advanced.wait_for(reached), timeout)
        return self._mine(user, alloc_id)

    async def history(self, user: User, alloc_id: str) -> list[HistoryEntry]:
        self._mine(user, alloc_id)
        return [
            HistoryEntry(
                position=r.position, version=r.version, type=r.type, recorded_at=r.recorded_at, data=r.data
            )
            for r in await self.store.read_stream(alloc_stream(alloc_id))
        ]

    def pool(self) -> Pool:
        rows = []
        donated_total = reserved_total = ZERO
        for host in sorted(self.hosts.hosts.values(), key=lambda h: h.host_id):
            if host.donated is None or host.admin == "deregistered":
                continue
            reserved = self.ledger.reserved(host.host_id)
            rows.append(
                PoolHost(
                    host_id=host.host_id,
                    name=host.name,
                    status=host.status,
                    labels=dict(host.labels),
                    donated=figures(host.donated),
                    reserved=figures(reserved),
                    free=figures(host.donated - reserved),
                )
            )
            donated_total = donated_total + host.donated
            reserved_total = reserved_total + reserved
        return Pool(
            hosts=rows,
            total={
                "donated": figures(donated_total),
                "reserved": figures(reserved_total),
                "free": figures(donated_total - reserved_total),
            },
        )

    # Decisions.

    def _check_quota(self, user: User, wanted: Capacity) -> None:
        # By allocation id: a request being folded is in the view and maybe still in flight.
        held = {e.alloc_id: e.resources for e in self.in_flight.of_user(user.name)}
        held.update(
            (a.alloc_id, a.spec.resources)
            for a in self.allocations.allocations.values()
            if a.user == user.name and (a.status in ACTIVE or a.status == "pending")
        )
        quota = user.quota
        if len(held) + 1 > quota.allocations:
            raise Rejected(
                "QUOTA_EXCEEDED",
                f"you hold {len(held)} allocations, your quota is {quota.allocations}; release one first",
                status=403,
            )
        cpus = sum(r.cpus for r in held.values()) + wanted.cpus
        if cpus > quota.cpus + 1e-9:
            raise Rejected(
                "QUOTA_EXCEEDED",
                f"this would hold {cpus:g} CPUs, your quota is {quota.cpus:g}",
                field="cpus",
                status=403,
            )
        memory = sum(r.memory_bytes for r in held.values()) + wanted.memory_bytes
        if memory > quota.memory_bytes:
            raise Rejected(
                "QUOTA_EXCEEDED",
                f"this would hold {memory} bytes of memory, your quota is {quota.memory_bytes}",
                field="memory",
                status=403,
            )

    def _in_flight_on(self, host_id: str) -> dict[str, Capacity]:
        """Reservations queued on the host that the ledger does not hold yet."""
        return {
            alloc_id: amount
            for alloc_id, amount in self.in_flight.on_host(host_id).items()
            if not self.ledger.holds(host_id, alloc_id)
        }

    def _decide(self, wanted: AllocationState | AllocationRequested) -> Decision:
        pending = {
            host_id: sum_of(self._in_flight_on(host_id).values())
            for host_id in {e.host_id for e in self.in_flight.of_all() if e.host_id is not None}
        }
        return place(
            host_snapshots(self.hosts, self.ledger, in_flight=pending),
            placement_request(wanted),
            self.strategy,
        )

    def _capacity_version(self, host_id: str) -> int:
        """The version `capacity-<host_id>` will have once the reservations queued on it land."""
        return self.ledger.version(host_id) + len(self._in_flight_on(host_id))

    def _quota_version(self, user: str) -> int:
        """The version `quota-<user>` will have once the user's requests in flight land.

        Each request charges its quota in the transaction that records it, before its
        allocation's events, so a request whose allocation is folded has been counted
        in `quota_versions` already.
        """
        unfolded = sum(
            1 for e in self.in_flight.of_user(user) if e.alloc_id not in self.allocations.allocations
        )
        return self.quota_versions.get(user, 0) + unfolded

    def _placement(
        self,
        state_version: int,
        alloc_id: str,
        user: str,
        spec: AllocationSpec,
        host_id: str,
        lifetime_s: float,
        head: list[Event],
    ) -> list[StreamAppend]:
        placed = AllocationPlaced(
            alloc_id=alloc_id,
            host_id=host_id,
            user=user,
            spec=spec,
            expires_at=self.clock() + timedelta(seconds=lifetime_s),
        )
        reserved = CapacityReserved(host_id=host_id, alloc_id=alloc_id, amount=spec.resources)
        return [
            StreamAppend(alloc_stream(alloc_id), [*head, placed], state_version),
            StreamAppend(capacity_stream(host_id), [reserved], self._capacity_version(host_id)),
        ]

    async def request_allocation(self, user: User, body: CreateAllocation) -> AllocationState:
        spec = AllocationSpec(
            resources=Capacity(cpus=body.cpus, memory_bytes=body.memory, disk_bytes=body.disk),
            image=body.image,
            command=body.command,
            env=dict(body.env),
            ssh_keys=list(body.ssh_keys),
            network=body.network,
        )
        alloc_id = new_alloc_id()
        requested = AllocationRequested(
            alloc_id=alloc_id,
            user=user.name,
            spec=spec,
            lifetime_s=body.lifetime,
            constraints=dict(body.constraints),
            queue_timeout_s=body.queue_timeout,
        )

        async def attempt() -> AllocationState:
            async with self._placing:
                decision = self._decide(requested)
                if isinstance(decision, Impossible):
                    raise Rejected(decision.code, decision.message, field=decision.field, status=422)
                self._check_quota(user, spec.resources)
                # First in the transaction: see _quota_version.
                charged = StreamAppend(
                    quota_stream(user.name),
                    [QuotaCharged(user=user.name, alloc_id=alloc_id)],
                    self._quota_version(user.name),
                )
                if isinstance(decision, Placed):
                    host_id: str | None = decision.host_id
                    appends = [
                        charged,
                        *self._placement(
                            0, alloc_id, user.name, spec, decision.host_id, body.lifetime, [requested]
                        ),
                    ]
                else:
                    host_id = None
                    appends = [charged, StreamAppend(alloc_stream(alloc_id), [requested], 0)]
                # Queued now, in decision order; the next decision counts it until it is folded.
                self.in_flight.add(InFlight(alloc_id, user.name, spec.resources, host_id))
                outcome = self.store.append_streams_nowait(appends, metadata={"actor": f"user:{user.name}"})
                outcome.add_done_callback(lambda f: self._landed_or_not(alloc_id, f))
            recorded = await asyncio.shield(outcome)
            await self._seen(recorded[-1].position)
            return self.allocations.allocations[alloc_id]

        state = await self._retrying(attempt)
        assert state is not None
        log.info(
            "allocation.requested",
            alloc_id=alloc_id,
            user=user.name,
            status=state.status,
            host_id=state.host_id,
        )
        return state

    def _landed_or_not(self, alloc_id: str, outcome: "asyncio.Future[list[RecordedEvent]]") -> None:
        # A failed append no longer counts; one that landed counts until the follower folds it.
        if outcome.cancelled() or outcome.exception() is not None:
            self.in_flight.settle(alloc_id)

    def _end(self, state: AllocationState, event: AllocationEvent) -> list[StreamAppend]:
        appends = [StreamAppend(alloc_stream(state.alloc_id), [event], state.version)]
        if state.status in ACTIVE and state.host_id is not None:
            freed = CapacityFreed(host_id=state.host_id, alloc_id=state.alloc_id, amount=state.spec.resources)
            appends.append(StreamAppend(capacity_stream(state.host_id), [freed]))
        return appends

    async def release(self, user: User, alloc_id: str) -> AllocationState:
        async def attempt() -> AllocationState:
            state = self._mine(user, alloc_id)
            if not state.terminal:
                released = AllocationReleased(
                    alloc_id=alloc_id, host_id=state.host_id, by=f"user:{user.name}"
                )
                await self._append(self._end(state, released), f"user:{user.name}")
            return self._mine(user, alloc_id)

        state = await self._retrying(attempt)
        assert state is not None
        return state

    async def extend(self, user: User, alloc_id: str, by_s: float) -> AllocationState:
        async def attempt() -> AllocationState:
            state = self._mine(user, alloc_id)
            if state.terminal:
                raise Rejected(
                    "ALREADY_ENDED", f"allocation {alloc_id} is {state.status}; it cannot be extended"
                )
            base = state.expires_at or self.clock()
            limit = self.clock() + timedelta(days=7)
            new_expiry = min(base + timedelta(seconds=by_s), limit)
            event = AllocationExtended(alloc_id=alloc_id, expires_at=new_expiry)
            await self._append(
                [StreamAppend(alloc_stream(alloc_id), [event], state.version)], f"user:{user.name}"
            )
            return self._mine(user, alloc_id)

        state = await self._retrying(attempt)
        assert state is not None
        return state

    # Reactions: lost hosts, expiry, the pending queue.

    async def lose_allocations_of(self, host_id: str) -> None:
        for alloc in list(self.allocations.allocations.values()):
            if alloc.host_id != host_id or alloc.status not in ACTIVE:
                continue
            alloc_id = alloc.alloc_id

            async def attempt(alloc_id: str = alloc_id) -> AllocationState | None:
                state = self.allocations.allocations[alloc_id]
                if state.status in ACTIVE and state.host_id == host_id:
                    await self._append(
                        self._end(state, AllocationLost(alloc_id=alloc_id, host_id=host_id)), "allocator"
                    )
                return None

            await self._retrying(attempt)
            log.warning("allocation.lost", alloc_id=alloc_id, host_id=host_id)

    async def expire_due(self) -> int:
        now = self.clock()
        due = [
            a.alloc_id
            for a in self.allocations.allocations.values()
            if a.status in ACTIVE and a.expires_at is not None and a.expires_at <= now
        ]
        for alloc_id in due:

            async def attempt(alloc_id: str = alloc_id) -> AllocationState | None:
                state = self.allocations.allocations[alloc_id]
                if (
                    state.status in ACTIVE
                    and state.expires_at is not None
                    and state.expires_at <= self.clock()
                ):
                    assert state.host_id is not None
                    await self._append(
                        self._end(state, AllocationExpired(alloc_id=alloc_id, host_id=state.host_id)),
                        "allocator",
                    )
                return None

            await self._retrying(attempt)
            log.info("allocation.expired", alloc_id=alloc_id)
        return len(due)

    def _queue(self) -> FairQueue:
        pending = [a for a in self.allocations.allocations.values() if a.status == "pending"]
        return FairQueue.of(pending)

    async def place_pending(self) -> int:
        """Places what waits, fairly by user; refuses what waited past its queue timeout."""
        placed = 0
        async with self._placing:
            now = self.clock()
            for state in self._queue().in_order():
                current = self.allocations.allocations[state.alloc_id]
                if current.status != "pending":
                    continue
                waited = (now - (current.requested_at or now)).total_seconds()
                if waited > current.queue_timeout_s:
                    refused = AllocationRefused(
                        alloc_id=current.alloc_id,
                        reason="QUEUE_TIMEOUT",
                        detail=f"no capacity freed within {current.queue_timeout_s:g}s",
                    )
                    with contextlib.suppress(WrongExpectedVersion):
                        await self._append(
                            [StreamAppend(alloc_stream(current.alloc_id), [refused], current.version)],
                            "allocator",
                        )
                    continue
                decision = self._decide(current)
                if isinstance(decision, Placed):
                    appends = self._placement(
                        current.version,
                        current.alloc_id,
                        current.user,
                        current.spec,
                        decision.host_id,
                        current.lifetime_s,
                        [],
                    )
                    try:
                        await self._append(appends, "allocator")
                        placed += 1
                    except WrongExpectedVersion:
                        await self.caught_up_with_log()
                elif isinstance(decision, Impossible):
                    refused = AllocationRefused(
                        alloc_id=current.alloc_id, reason="NO_HOST_COULD_EVER_FIT", detail=decision.message
                    )
                    with contextlib.suppress(WrongExpectedVersion):
                        await self._append(
                            [StreamAppend(alloc_stream(current.alloc_id), [refused], current.version)],
                            "allocator",
                        )
        return placed

    async def run_reactions(self, tick: float = 1.0) -> None:
        """Lost hosts, expiry and the pending queue, until cancelled."""
        while True:
            while not self._reactions.empty():
                await self._reactions.get_nowait()()
            await self.expire_due()
            if self._capacity_changed.is_set() or any(
                a.status == "pending" for a in self.allocations.allocations.values()
            ):
                self._capacity_changed.clear()
                await self.place_pending()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._capacity_changed.wait(), tick)
