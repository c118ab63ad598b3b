"""Hosts held back by their owner's policy: throttled ones come last, frozen ones get nothing.

Each scenario runs against the plain `place` over snapshots and against a
`Scheduler`. The properties: with room on a host that is not throttled, the
request never goes to a throttled one; whether a request is placed, waits or
is impossible never depends on which hosts are throttled; the two
implementations agree, also when `set_throttled` changes hosts in place and
when more hosts hold the image than the Scheduler looks at one by one.
"""

import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.allocator.capacity import CapacityLedger, host_snapshots, snapshot_of
from potluck.allocator.scheduler import (
    NO_SCHEDULABLE_HOST,
    STRATEGIES,
    ZERO,
    Decision,
    HostSnapshot,
    Placed,
    PlacementRequest,
    Scheduler,
    Strategy,
    Wait,
    place,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import (
    HostEnrolled,
    HostFrozen,
    HostShareRestored,
    HostThrottled,
)
from potluck.contracts.host_images import holds_image
from potluck.events import Event
from potluck.readmodels.hosts import HostsView
from tests.helpers import host_registered

GIB = 1 << 30
IMAGE = "potluck-default:latest"
HELD = frozenset({"docker.io/library/potluck-default:latest"})
T0 = datetime(2025, 1, 1, tzinfo=UTC)
ENGINE = EngineFacts(
    version="27.0", cgroup_version="2", storage_driver="overlay2", disk_quota_supported=False
)


def cap(cpus: float, memory: int = GIB, disk: int = 10 * GIB) -> Capacity:
    return Capacity(cpus=cpus, memory_bytes=memory, disk_bytes=disk)


def req(cpus: float = 1, image: str | None = IMAGE, n: int = 0) -> PlacementRequest:
    return PlacementRequest(alloc_id=f"a{n}", resources=cap(cpus, GIB, GIB), image=image)


Decide = Callable[[Sequence[HostSnapshot], PlacementRequest, Strategy], Decision]


def by_scan(hosts: Sequence[HostSnapshot], r: PlacementRequest, strategy: Strategy) -> Decision:
    return place(hosts, r, strategy)


def by_index(hosts: Sequence[HostSnapshot], r: PlacementRequest, strategy: Strategy) -> Decision:
    return Scheduler(hosts).place(r, strategy)


@pytest.fixture(params=[by_scan, by_index], ids=["place", "Scheduler"])
def decide(request: pytest.FixtureRequest) -> Decide:
    fn: Decide = request.param
    return fn


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_throttled_host_takes_work_only_when_no_other_has_room(decide: Decide, strategy: Strategy) -> None:
    """a is throttled and has the most room (spread would choose it); b has room for two:
    the first two go to b, whichever host the strategy alone would choose, then to a."""
    hosts = {
        "a": HostSnapshot("a", cap(8, 8 * GIB), throttled=True),
        "b": HostSnapshot("b", cap(2, 8 * GIB)),
    }
    placed = []
    for n in range(4):
        decision = decide(list(hosts.values()), req(n=n), strategy)
        assert isinstance(decision, Placed)
        placed.append(decision.host_id)
        h = hosts[decision.host_id]
        hosts[h.host_id] = replace(h, reserved=h.reserved + cap(1, GIB, GIB))
    assert placed == ["b", "b", "a", "a"]


def test_not_throttled_comes_before_holding_the_image(decide: Decide) -> None:
    """b holds the image but is throttled; a must pull it but runs at full speed: a wins."""
    a = HostSnapshot("a", cap(4))
    b = HostSnapshot("b", cap(4), held_images=HELD, throttled=True)
    assert decide([a, b], req(), "best_fit") == Placed("a")
    # Among throttled hosts alone, the one holding the image still comes first.
    c = HostSnapshot("c", cap(2), throttled=True)
    assert decide([b, c], req(), "best_fit") == Placed("b")


def test_a_frozen_host_gets_nothing_new(decide: Decide) -> None:
    """Frozen is not schedulable: the request goes elsewhere, or waits for the host to resume,
    never onto the frozen host."""
    frozen = HostSnapshot("a", cap(8), schedulable=False)
    assert decide([frozen, HostSnapshot("b", cap(2))], req(), "best_fit") == Placed("b")
    assert decide([frozen], req(), "best_fit") == Wait(NO_SCHEDULABLE_HOST)


def test_set_throttled_moves_a_host_between_the_scheduler_indexes() -> None:
    """a is the best fit; throttled, b wins; throttled twice changes nothing; restored (with a
    reservation made meanwhile), a wins again and the snapshots hold exactly what was set."""
    scheduler = Scheduler([HostSnapshot("a", cap(2, 8 * GIB)), HostSnapshot("b", cap(8, 8 * GIB))])
    assert scheduler.place(req()) == Placed("a")  # best fit: the fuller one
    scheduler.set_throttled("a", True)
    assert scheduler.snapshot("a").throttled
    assert scheduler.place(req()) == Placed("b")
    scheduler.set_throttled("a", True)  # no change: nothing breaks
    scheduler.reserve("a", cap(1, GIB, GIB))
    scheduler.set_throttled("a", False)
    assert scheduler.place(req()) == Placed("a")
    assert scheduler.snapshots() == [
        HostSnapshot("a", cap(2, 8 * GIB), reserved=cap(1, GIB, GIB)),
        HostSnapshot("b", cap(8, 8 * GIB)),
    ]


# --- from the host events to the snapshot -------------------------------------------------------


def fold(*events: Event) -> HostsView:
    view = HostsView()
    for position, event in enumerate(events, start=1):
        view.apply(event, position=position, version=position, at=T0)
    return view


def test_the_snapshot_carries_throttled_and_frozen_from_the_host_events() -> None:
    """HostThrottled makes the snapshot throttled (still schedulable); HostFrozen makes it not
    schedulable; HostShareRestored gives both back."""
    base = [
        HostEnrolled(host_id="h", name="h", nkey="U"),
        host_registered(host_id="h", donated=cap(2), engine=ENGINE, hostd_version="t"),
    ]
    throttled = HostThrottled(host_id="h", cause="owner", reason="the owner uses 1.3 CPUs", share_cpus=0.5)
    frozen = HostFrozen(host_id="h", cause="battery", reason="on battery", max_frozen_s=60)
    restored = HostShareRestored(host_id="h")

    def snap(*events: Event) -> HostSnapshot:
        snapshot = snapshot_of(fold(*base, *events).hosts["h"])
        assert snapshot is not None
        return snapshot

    assert (snap().schedulable, snap().throttled) == (True, False)
    assert (snap(throttled).schedulable, snap(throttled).throttled) == (True, True)
    assert (snap(throttled, frozen).schedulable, snap(throttled, frozen).throttled) == (False, False)
    assert (snap(frozen, restored).schedulable, snap(frozen, restored).throttled) == (True, False)
    view = fold(*base, frozen)
    assert place(host_snapshots(view, CapacityLedger()), req()) == Wait(NO_SCHEDULABLE_HOST)


# --- properties ---------------------------------------------------------------------------------

IMAGES = ["debian:12", "alpine:3"]
NAMES = ["docker.io/library/debian:12", "docker.io/library/alpine:3"]


@st.composite
def _pools(draw: st.DrawFn) -> tuple[list[HostSnapshot], PlacementRequest]:
    hosts = [
        HostSnapshot(
            f"h{i}",
            cap(draw(st.sampled_from([1, 2, 4])), draw(st.sampled_from([1, 4])) * GIB),
            reserved=draw(st.sampled_from([ZERO, cap(1, GIB)])),
            labels=draw(st.sampled_from([{}, {"zone": "home"}])),
            schedulable=draw(st.booleans()),
            allowed_images=draw(st.sampled_from([(), ("debian:*",)])),
            held_images=frozenset(draw(st.lists(st.sampled_from(NAMES), max_size=2))),
            throttled=draw(st.booleans()),
        )
        for i in range(draw(st.integers(0, 7)))
    ]
    r = PlacementRequest(
        "r",
        cap(draw(st.sampled_from([0.5, 1, 3])), GIB),
        constraints=draw(st.sampled_from([{}, {"zone": "home"}])),
        image=draw(st.sampled_from([None, *IMAGES])),
    )
    return hosts, r


@given(_pools(), st.sampled_from(STRATEGIES))
def test_throttled_is_a_preference_among_hosts_that_admit_and_have_room(
    case: tuple[list[HostSnapshot], PlacementRequest], strategy: Strategy
) -> None:
    """Any pool, any request: both implementations decide alike; if a schedulable host that
    matches, admits and has room is not throttled, the placement is on such a host (and among
    them, on one holding the image if any does); without the throttled flags the outcome
    (placed, waiting, impossible and why) is of the same kind, and the same when not placed."""
    hosts, r = case
    decision = place(hosts, r, strategy)
    assert Scheduler(hosts).place(r, strategy) == decision
    bare = place([replace(h, throttled=False) for h in hosts], r, strategy)
    assert type(bare) is type(decision)
    if not isinstance(decision, Placed):
        assert bare == decision
        return
    chosen = {h.host_id: h for h in hosts}[decision.host_id]
    assert chosen.schedulable
    could_hold = [
        h
        for h in hosts
        if h.schedulable
        and all(h.labels.get(k) == v for k, v in r.constraints.items())
        and place([h], r, strategy) == Placed(h.host_id)
    ]
    full_speed = [h for h in could_hold if not h.throttled]
    if full_speed:
        assert not chosen.throttled
        if any(holds_image(h.held_images, r.image) for h in full_speed):
            assert holds_image(chosen.held_images, r.image)
    else:
        assert chosen.throttled


@pytest.mark.parametrize("seed", range(2))
def test_scheduler_agrees_with_place_as_hosts_are_throttled_and_restored(seed: int) -> None:
    """400 hosts (more image holders than Scheduler.SMALL_CANDIDATES, so the index path runs),
    some throttled, some frozen; hosts change their throttle as requests are placed: the
    Scheduler decides as `place` over its snapshots every time."""
    rnd = random.Random(seed)
    scheduler = Scheduler()
    for i in range(400):
        scheduler.set_host(
            HostSnapshot(
                f"h{i:04d}",
                cap(rnd.choice([1, 2, 4, 8]), rnd.choice([2, 8]) * GIB),
                schedulable=rnd.random() > 0.1,
                allowed_images=rnd.choice([(), (), ("debian:*",)]),
                held_images=frozenset(rnd.sample(NAMES, rnd.randrange(3))),
                throttled=rnd.random() < 0.3,
            )
        )
    throttled_placements = 0
    for n in range(300):
        r = PlacementRequest(f"r{n}", cap(rnd.choice([0.5, 1, 2, 4])), image=rnd.choice([None, *IMAGES]))
        strategy: Strategy = rnd.choice(["best_fit", "spread"])
        decision = scheduler.place(r, strategy)
        assert decision == place(scheduler.snapshots(), r, strategy), (n, r)
        if isinstance(decision, Placed):
            scheduler.reserve(decision.host_id, r.resources)
            throttled_placements += scheduler.snapshot(decision.host_id).throttled
        if rnd.random() < 0.1:
            host_id = f"h{rnd.randrange(400):04d}"
            scheduler.set_throttled(host_id, not scheduler.snapshot(host_id).throttled)
        if rnd.random() < 0.05:
            host_id = f"h{rnd.randrange(400):04d}"
            scheduler.set_schedulable(host_id, not scheduler.snapshot(host_id).schedulable)
    # The pool fills up: throttled hosts were used once the others had no room.
    assert throttled_placements > 0
