"""Placement and reservation under hypothesis: hosts come and go, requests are placed and released.

The state machine keeps a small log in memory that enforces expected versions
the way EventStore.append_streams does, folds the capacity streams into a
CapacityLedger and the host streams into the registry's projection, and keeps
a Scheduler in step with both. On every step, on every host, reserved <=
donated; no placement lands on a host that is not schedulable (frozen by its owner's
policy included), nor on a throttled one while another has room, nor on a
hollow host unless the request is constrained to hollow=true (and a request so
constrained on no other kind); the Scheduler
decides as `place` over the snapshots does; and a brute-force reference
(Capacity.fits_in over every host) agrees with every Placed, Wait and
Impossible. Two replicas deciding on the same ledger version cannot both
reserve on one host: the second append fails with WrongExpectedVersion.
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from potluck.allocator.capacity import (
    CapacityLedger,
    Placement,
    allocation_placed,
    host_snapshots,
    placement_appends,
    placement_request,
    reservation_appends,
)
from potluck.allocator.scheduler import (
    NO_FREE_CAPACITY,
    NO_HOST_REGISTERED,
    NO_SCHEDULABLE_HOST,
    Decision,
    HostSnapshot,
    Impossible,
    Placed,
    PlacementRequest,
    Scheduler,
    Strategy,
    Wait,
    is_hollow,
    place,
    score,
    wants_hollow,
)
from potluck.contracts.allocation_events import (
    AllocationPlaced,
    AllocationRequested,
    AllocationSpec,
    CapacityFreed,
    CapacityReserved,
    alloc_stream,
    capacity_stream,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import (
    HostDeregistered,
    HostDrainStarted,
    HostEngineLost,
    HostEngineReturned,
    HostEnrolled,
    HostFrozen,
    HostLost,
    HostPaused,
    HostRecovered,
    HostResumed,
    HostShareRestored,
    HostSleeping,
    HostSuspected,
    HostThrottled,
)
from potluck.events import Event, StreamAppend, WrongExpectedVersion
from potluck.readmodels.hosts import HostState, HostsView
from tests.helpers import host_registered

MIB = 1 << 20
GIB = 1 << 30
T0 = datetime(2025, 1, 1, tzinfo=UTC)
ENGINE = EngineFacts(
    version="27.0", cgroup_version="2", storage_driver="overlay2", disk_quota_supported=False
)


class MemoryLog:
    """Streams in memory with EventStore.append_streams' rule: every expected version holds, or nothing."""

    def __init__(self) -> None:
        self.streams: dict[str, list[Event]] = {}

    def version(self, stream: str) -> int:
        return len(self.streams.get(stream, []))

    def append(self, appends: Sequence[StreamAppend]) -> list[tuple[Event, int]]:
        for a in appends:
            actual = self.version(a.stream)
            if a.expected_version is not None and a.expected_version != actual:
                raise WrongExpectedVersion(a.stream, a.expected_version, actual)
        recorded: list[tuple[Event, int]] = []
        for a in appends:
            stream = self.streams.setdefault(a.stream, [])
            for item in a.events:
                assert isinstance(item, Event)
                stream.append(item)
                recorded.append((item, len(stream)))
        return recorded


host_capacities = st.builds(
    lambda c, m, d: Capacity(cpus=c, memory_bytes=m * 512 * MIB, disk_bytes=d * GIB),
    st.sampled_from([0.5, 1.0, 2.0, 4.0, 8.0]),
    st.integers(1, 32),
    st.integers(5, 50),
)
request_capacities = st.builds(
    lambda c, m, d: Capacity(cpus=c, memory_bytes=m * 256 * MIB, disk_bytes=d * GIB),
    st.sampled_from([0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 4.0, 8.0, 9.0]),
    st.integers(1, 40),
    st.integers(1, 40),
)
label_sets = st.sampled_from(
    [
        *({}, {"arch": "arm64"}, {"arch": "amd64"}, {"arch": "amd64", "gpu": "yes"}),
        *({"hollow": "true"}, {"hollow": "true", "arch": "amd64"}),
    ]
)
constraint_sets = st.sampled_from(
    [{}, {}, {}, {"arch": "amd64"}, {"gpu": "yes"}, {"zone": "moon"}, {"hollow": "true"}]
)
strategies = st.sampled_from(["best_fit", "spread"])
CHANGES = (
    *("suspect", "lost", "recover", "pause", "resume", "drain", "deregister", "reregister"),
    *("sleep", "throttle", "freeze", "restore", "engine_lost", "engine_returned"),
)


def spec_for(resources: Capacity) -> AllocationSpec:
    return AllocationSpec(resources=resources, image="potluck-test:1")


class PoolMachine(RuleBasedStateMachine):
    hosts = Bundle("hosts")
    allocations = Bundle("allocations")

    def __init__(self) -> None:
        super().__init__()
        self.log = MemoryLog()
        self.view = HostsView()
        self.position = 0
        self.ledger = CapacityLedger()
        self.scheduler = Scheduler()
        self.live: dict[str, AllocationPlaced] = {}
        self.freed: list[tuple[CapacityFreed, int]] = []
        self.reserved_events: list[tuple[CapacityReserved, int]] = []
        self.counter = 0

    # -- the log, and everything folded from it --

    def commit(self, appends: Sequence[StreamAppend]) -> None:
        for recorded, version in self.log.append(appends):
            self.position += 1
            self.view.apply(recorded, position=self.position, version=version, at=T0)
            if self.ledger.apply(recorded, version=version):
                assert isinstance(recorded, CapacityReserved | CapacityFreed)
                if recorded.host_id in self.scheduler:
                    self.scheduler.set_reserved(recorded.host_id, self.ledger.reserved(recorded.host_id))
            if isinstance(recorded, CapacityReserved):
                self.reserved_events.append((recorded, version))
            if isinstance(recorded, CapacityFreed):
                self.freed.append((recorded, version))

    def host_event(self, host_id: str, *events: Event) -> None:
        self.commit([StreamAppend(f"host-{host_id}", events)])
        state = self.view.hosts[host_id]
        snapshot = next((s for s in host_snapshots(self.view, self.ledger) if s.host_id == host_id), None)
        if snapshot is None:
            self.scheduler.remove_host(host_id)
        else:
            self.scheduler.set_host(snapshot)
        assert (host_id in self.scheduler) == state.registered

    def snapshots(self) -> list[HostSnapshot]:
        return host_snapshots(self.view, self.ledger)

    # -- rules --

    @initialize(target=hosts, pool=st.lists(st.tuples(host_capacities, label_sets), min_size=1, max_size=4))
    def start(self, pool: list[tuple[Capacity, dict[str, str]]]) -> object:
        return multiple(*(self.register(donated, labels) for donated, labels in pool))

    @rule(target=hosts, donated=host_capacities, labels=label_sets)
    def register(self, donated: Capacity, labels: dict[str, str]) -> str:
        self.counter += 1
        host_id = f"h{self.counter:03d}"
        self.host_event(
            host_id,
            HostEnrolled(host_id=host_id, name=host_id, nkey="U"),
            host_registered(
                host_id=host_id, donated=donated, labels=labels, engine=ENGINE, hostd_version="t"
            ),
        )
        return host_id

    @rule(host_id=hosts, change=st.sampled_from(CHANGES))
    def change_state(self, host_id: str, change: str) -> None:
        state = self.view.hosts[host_id]
        event: Event
        match change:
            case "suspect":
                event = HostSuspected(host_id=host_id, silent_for_s=20)
            case "lost":
                event = HostLost(host_id=host_id, silent_for_s=200)
            case "recover":
                event = HostRecovered(host_id=host_id, was="suspect")
            case "pause":
                event = HostPaused(host_id=host_id, by="member")
            case "resume":
                event = HostResumed(host_id=host_id, by="member")
            case "drain":
                event = HostDrainStarted(host_id=host_id, by="member", grace_s=30)
            case "deregister":
                event = HostDeregistered(host_id=host_id, by="member")
            case "sleep":
                event = HostSleeping(host_id=host_id)
            case "throttle":
                event = HostThrottled(host_id=host_id, cause="owner", reason="busy owner", share_cpus=0.5)
            case "freeze":
                event = HostFrozen(host_id=host_id, cause="battery", reason="on battery", max_frozen_s=60)
            case "restore":
                event = HostShareRestored(host_id=host_id)
            case "engine_lost":
                event = HostEngineLost(host_id=host_id, detail="the Docker engine stopped answering")
            case "engine_returned":
                event = HostEngineReturned(host_id=host_id)
            case _:
                assert state.donated is not None
                event = host_registered(
                    host_id=host_id,
                    donated=state.donated,
                    labels=state.labels,
                    engine=ENGINE,
                    hostd_version="t",
                )
        self.host_event(host_id, event)

    def decide_and_check(self, req: PlacementRequest, strategy: Strategy) -> Decision:
        decision = self.scheduler.place(req, strategy)
        match decision:
            case Placed():
                event(f"Placed ({strategy})")
            case Wait(reason):
                event(f"Wait {reason}")
            case Impossible(code, _, field):
                event(f"Impossible {code} {field}")
        snapshots = self.snapshots()
        assert decision == place(snapshots, req, strategy)
        check_against_reference(decision, snapshots, req, strategy, self.view.hosts)
        return decision

    def place_new(self, resources: Capacity, constraints: dict[str, str], strategy: Strategy) -> str | None:
        self.counter += 1
        requested = AllocationRequested(
            alloc_id=f"a{self.counter:04d}",
            user="u",
            spec=spec_for(resources),
            lifetime_s=60,
            constraints=constraints,
        )
        decision = self.decide_and_check(placement_request(requested), strategy)
        if not isinstance(decision, Placed):
            return None
        placed = allocation_placed(requested, decision.host_id, T0)
        appends = reservation_appends(placed, self.ledger, alloc_version=0, preceding=[requested])
        assert [(a.stream, a.expected_version) for a in appends] == [
            (alloc_stream(placed.alloc_id), 0),
            (capacity_stream(placed.host_id), self.log.version(capacity_stream(placed.host_id))),
        ]
        self.commit(appends)
        self.live[placed.alloc_id] = placed
        return placed.alloc_id

    @rule(target=allocations, resources=request_capacities, constraints=constraint_sets, strategy=strategies)
    def request(self, resources: Capacity, constraints: dict[str, str], strategy: Strategy) -> object:
        alloc_id = self.place_new(resources, constraints, strategy)
        return multiple() if alloc_id is None else alloc_id

    @rule(target=allocations, host_id=hosts, strategy=strategies)
    def request_exactly_what_is_free(self, host_id: str, strategy: Strategy) -> object:
        if host_id not in self.scheduler:
            return multiple()
        free = self.scheduler.snapshot(host_id).free
        if free.cpus <= 0 or free.memory_bytes <= 0 or free.disk_bytes <= 0:
            return multiple()
        alloc_id = self.place_new(Capacity(**free.model_dump()), {}, strategy)
        return multiple() if alloc_id is None else alloc_id

    @rule(alloc_id=consumes(allocations))
    def release(self, alloc_id: str) -> None:
        placed = self.live.pop(alloc_id)
        freed = CapacityFreed(host_id=placed.host_id, alloc_id=alloc_id, amount=placed.spec.resources)
        self.commit([StreamAppend(capacity_stream(placed.host_id), [freed])])

    @precondition(lambda self: bool(self.freed))
    @rule(data=st.data())
    def free_again(self, data: st.DataObject) -> None:
        """A replayed or doubled free changes nothing: reserved never goes negative."""
        event, _ = data.draw(st.sampled_from(self.freed))
        before = self.ledger.reserved(event.host_id)
        self.commit([StreamAppend(capacity_stream(event.host_id), [event])])
        assert self.ledger.reserved(event.host_id) == before

    @precondition(lambda self: bool(self.reserved_events))
    @rule(data=st.data())
    def redeliver_reservation(self, data: st.DataObject) -> None:
        event, version = data.draw(st.sampled_from(self.reserved_events))
        before = self.ledger.reserved(event.host_id)
        assert not self.ledger.apply(event, version=version)
        assert self.ledger.reserved(event.host_id) == before

    @rule(target=allocations, first=request_capacities, second=request_capacities, strategy=strategies)
    def two_replicas_race(self, first: Capacity, second: Capacity, strategy: Strategy) -> object:
        """Both decide on the same ledger; the second reservation on the same host must be refused."""
        decisions = []
        for resources in (first, second):
            self.counter += 1
            requested = AllocationRequested(
                alloc_id=f"a{self.counter:04d}", user="u", spec=spec_for(resources), lifetime_s=60
            )
            decisions.append((requested, self.scheduler.place(placement_request(requested), strategy)))
        placements = [
            (
                allocation_placed(r, d.host_id, T0),
                reservation_appends(
                    allocation_placed(r, d.host_id, T0), self.ledger, alloc_version=0, preceding=[r]
                ),
            )
            for r, d in decisions
            if isinstance(d, Placed)
        ]
        committed: set[str] = set()
        won: list[str] = []
        for placed, appends in placements:
            if placed.host_id in committed:
                with pytest.raises(WrongExpectedVersion):
                    self.commit(appends)
            else:
                self.commit(appends)
                committed.add(placed.host_id)
                self.live[placed.alloc_id] = placed
                won.append(placed.alloc_id)
        return multiple(*won)

    # -- invariants --

    @invariant()
    def reserved_never_exceeds_donated(self) -> None:
        for host_id in self.ledger.host_ids():
            state = self.view.hosts[host_id]
            assert state.donated is not None
            reserved = self.ledger.reserved(host_id)
            assert reserved.fits_in(state.donated), (host_id, reserved, state.donated)
            assert min(reserved.cpus, reserved.memory_bytes, reserved.disk_bytes) >= 0
            held = self.ledger.holdings(host_id)
            assert set(held) == {a for a, p in self.live.items() if p.host_id == host_id}

    @invariant()
    def scheduler_mirrors_the_log(self) -> None:
        assert self.scheduler.snapshots() == self.snapshots()
        for host_id in self.ledger.host_ids():
            assert self.ledger.version(host_id) == self.log.version(capacity_stream(host_id))


def check_against_reference(
    decision: Decision,
    snapshots: list[HostSnapshot],
    req: PlacementRequest,
    strategy: Strategy,
    states: dict[str, HostState],
) -> None:
    """Brute force over every host with Capacity.fits_in: does the decision stand?"""
    wanted = req.resources
    # A hollow host is for requests constrained to hollow=true only; to any other, not there.
    matching = [
        s
        for s in snapshots
        if all(s.labels.get(k) == v for k, v in req.constraints.items())
        and (wants_hollow(req) or not is_hollow(s.labels))
    ]
    room = [s for s in matching if s.schedulable and wanted.fits_in(s.free)]
    ever = [s for s in matching if wanted.fits_in(s.donated)]
    match decision:
        case Placed(host_id):
            chosen = next(s for s in room if s.host_id == host_id)
            assert is_hollow(chosen.labels) == wants_hollow(req), (host_id, chosen.labels, req.constraints)
            assert states[host_id].schedulable, f"placed on {states[host_id].status} host {host_id}"
            assert states[host_id].policy != "frozen"
            # Throttled hosts only when no other has room; the strategy chooses among the rest.
            full_speed = [s for s in room if not s.throttled]
            assert chosen.throttled == (not full_speed)
            room = full_speed or room
            scores = [score(s.free.cpus, s.free.memory_bytes, s.free.disk_bytes) for s in room]
            mine = score(chosen.free.cpus, chosen.free.memory_bytes, chosen.free.disk_bytes)
            assert mine == (min(scores) if strategy == "best_fit" else max(scores))
        case Wait(reason) if not snapshots:
            # A pool with no host at all is between members: nothing is judged impossible.
            assert reason == NO_HOST_REGISTERED
        case Wait(reason):
            assert not room
            assert ever
            schedulable_ever = [s for s in ever if s.schedulable]
            assert reason == (NO_FREE_CAPACITY if schedulable_ever else NO_SCHEDULABLE_HOST)
        case Impossible(code, _, field):
            assert not ever
            if field == "constraints":
                assert not matching
            elif field in ("memory", "disk"):
                assert any(wanted.cpus <= s.donated.cpus + 1e-9 for s in matching), code


PoolMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPool = PoolMachine.TestCase


# --- the ledger and the appends, by example --------------------------------------------------------


def cap(cpus: float, memory: int, disk: int = GIB) -> Capacity:
    return Capacity(cpus=cpus, memory_bytes=memory, disk_bytes=disk)


def test_the_ledger_counts_a_reservation_once_and_frees_only_what_is_held() -> None:
    ledger = CapacityLedger()
    reserved = CapacityReserved(host_id="h", alloc_id="a", amount=cap(1, GIB))
    assert ledger.apply(reserved, version=1)
    assert not ledger.apply(reserved, version=1)  # redelivered
    assert not ledger.apply(reserved, version=2)  # logged twice
    assert ledger.reserved("h") == cap(1, GIB)
    # A free names an amount, but what the allocation holds is what comes back.
    assert ledger.apply(CapacityFreed(host_id="h", alloc_id="a", amount=cap(5, 5 * GIB)), version=3)
    assert not ledger.apply(CapacityFreed(host_id="h", alloc_id="a", amount=cap(1, GIB)), version=4)
    assert not ledger.apply(CapacityFreed(host_id="h", alloc_id="never", amount=cap(1, GIB)), version=5)
    assert not ledger.apply(reserved, version=1)  # an old reservation replayed after its free
    assert ledger.reserved("h") == Capacity.model_construct(cpus=0.0, memory_bytes=0, disk_bytes=0)
    assert ledger.version("h") == 5
    assert ledger.version("other") == 0
    assert ledger.holdings("h") == {}


def test_the_ledger_knows_who_holds_what_and_rebuilds_the_same() -> None:
    events: list[tuple[Event, int]] = [
        (CapacityReserved(host_id="h1", alloc_id="a", amount=cap(1, GIB)), 1),
        (CapacityReserved(host_id="h1", alloc_id="b", amount=cap(0.5, 2 * GIB)), 2),
        (CapacityReserved(host_id="h2", alloc_id="c", amount=cap(2, GIB)), 1),
        (CapacityFreed(host_id="h1", alloc_id="a", amount=cap(1, GIB)), 3),
        (HostPaused(host_id="h1", by="member"), 9),  # not a capacity event: ignored
    ]
    ledger = CapacityLedger.rebuild(events)
    assert ledger.host_ids() == ["h1", "h2"]
    assert ledger.holdings("h1") == {"b": cap(0.5, 2 * GIB)}
    assert ledger.holds("h2", "c")
    assert not ledger.holds("h1", "a")
    assert ledger.reserved("h1") == cap(0.5, 2 * GIB)
    assert (ledger.version("h1"), ledger.version("h2")) == (3, 1)


def test_placement_appends_expect_the_versions_decided_on() -> None:
    ledger = CapacityLedger.rebuild([(CapacityReserved(host_id="h1", alloc_id="old", amount=cap(1, GIB)), 1)])
    requests = [
        AllocationRequested(alloc_id=a, user="u", spec=spec_for(cap(1, GIB)), lifetime_s=90)
        for a in ("a", "b", "c")
    ]
    placed = [
        allocation_placed(requests[0], "h1", T0),
        allocation_placed(requests[1], "h2", T0),
        allocation_placed(requests[2], "h1", T0),
    ]
    assert placed[0].expires_at == T0 + timedelta(seconds=90)
    appends = placement_appends(
        [Placement(placed[0], 1), Placement(placed[1], 1), Placement(placed[2], 0, (requests[2],))],
        ledger,
    )
    assert [(a.stream, a.expected_version, [type(e).__name__ for e in a.events]) for a in appends] == [
        ("alloc-a", 1, ["AllocationPlaced"]),
        ("alloc-b", 1, ["AllocationPlaced"]),
        ("alloc-c", 0, ["AllocationRequested", "AllocationPlaced"]),
        ("capacity-h1", 1, ["CapacityReserved", "CapacityReserved"]),
        ("capacity-h2", 0, ["CapacityReserved"]),
    ]
    reservation = appends[3].events[1]
    assert isinstance(reservation, CapacityReserved)
    assert (reservation.alloc_id, reservation.amount) == ("c", cap(1, GIB))
    with pytest.raises(ValueError, match="placed twice"):
        placement_appends([Placement(placed[0], 1), Placement(placed[0], 1)], ledger)


def test_a_placement_request_carries_what_the_scheduler_needs() -> None:
    requested = AllocationRequested(
        alloc_id="a",
        user="u",
        spec=AllocationSpec(resources=cap(2, GIB), image="debian:12", network=True),
        lifetime_s=60,
        constraints={"arch": "arm64"},
    )
    assert placement_request(requested) == PlacementRequest(
        "a", cap(2, GIB), {"arch": "arm64"}, "debian:12", network=True
    )
