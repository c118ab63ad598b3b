"""The indexed Scheduler against the plain rule, on random pools (services/allocator/scheduler.py).

`Scheduler.place` opens only some groups of its index, stops early by their lower
bounds, and decides requests that name a label by a separate index of that label's
hosts. Under hypothesis: a random pool (labels, members' image allow-lists,
networks, throttled, unschedulable, held images, reservations, some over their
donation, hollow hosts), then a random run of reservations, releases and state
changes (a host registering again with or without the hollow label among them),
each followed by a decision. Every decision must equal `place(scheduler.snapshots(),
...)`, with every path indexed (`SMALL_CANDIDATES` 0) and with the default, and
goes to a hollow host exactly when the request is constrained to hollow=true.
"""

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from potluck.allocator.scheduler import (
    STRATEGIES,
    HostSnapshot,
    Placed,
    PlacementRequest,
    Scheduler,
    is_hollow,
    place,
    wants_hollow,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.registry_locality import local_registry_of

GIB = 1 << 30
#: The last is on the member's own machine by its name: only hosts naming its registry take it.
IMAGES = ("debian:12", "python:3.12", "127.0.0.1:5000/team/tool:1")
HELD = {
    "debian:12": "docker.io/library/debian:12",
    "python:3.12": "docker.io/library/python:3.12",
    "127.0.0.1:5000/team/tool:1": "127.0.0.1:5000/team/tool:1",
}

# Donations off the index's levels too, and disks large enough to weigh in a host's score.
donations = st.builds(
    lambda c, m, d: Capacity.model_construct(cpus=c, memory_bytes=m * GIB // 3, disk_bytes=d * GIB),
    st.sampled_from([0.3, 0.75, 1.0, 1.1, 1.75, 2.0, 2.9, 4.0, 6.5]),
    st.integers(1, 64),
    st.integers(1, 1024),
)
capacities = st.builds(
    lambda c, m, d: Capacity.model_construct(cpus=c, memory_bytes=m * GIB // 4, disk_bytes=d * GIB),
    st.sampled_from([0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0]),
    st.integers(1, 32),
    st.integers(1, 64),
)
hosts = st.builds(
    lambda donated, used, labels, allowed, network, schedulable, throttled, held: (
        donated,
        used,
        labels,
        allowed,
        network,
        schedulable,
        throttled,
        held,
    ),
    donations,
    st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.2]),  # share of the donation reserved (1.2: over it)
    st.sampled_from(
        [
            *({}, {"arch": "arm64"}, {"arch": "amd64"}, {"arch": "amd64", "gpu": "yes"}),
            *({"hollow": "true"}, {"hollow": "true", "arch": "amd64"}),
        ]
    ),
    st.sampled_from(
        [(), (), ("debian:*",), ("python:*",), ("127.0.0.1:5000/team/*:*",), ("*/team/*:*", "debian:*")]
    ),
    st.booleans(),
    st.sampled_from([True, True, True, False]),
    st.sampled_from([False, False, False, True]),
    st.frozensets(st.sampled_from(IMAGES)),
)
requests = st.builds(
    lambda resources, constraints, image, network, excluded: PlacementRequest(
        "r",
        resources,
        constraints,
        image,
        network,
        frozenset(excluded),
        local_registry=local_registry_of(image, None) if image is not None else None,
    ),
    capacities,
    st.sampled_from(
        [
            *({}, {}, {"arch": "arm64"}, {"arch": "amd64"}, {"gpu": "yes"}, {"zone": "moon"}),
            *({"hollow": "true"}, {"hollow": "true", "arch": "amd64"}),
        ]
    ),
    st.sampled_from([None, *IMAGES]),
    st.booleans(),
    st.sets(st.sampled_from(["h0", "h1", "h2"]), max_size=2),
)
steps = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "release", "schedulable", "throttled", "hollow", "none"]),
        st.integers(0, 39),
        capacities,
        requests,
        st.sampled_from(STRATEGIES),
    ),
    min_size=1,
    max_size=25,
)


def snapshot(i: int, h: tuple) -> HostSnapshot:  # type: ignore[type-arg]
    donated, used, labels, allowed, network, schedulable, throttled, held = h
    reserved = Capacity.model_construct(
        cpus=round(donated.cpus * used, 6),
        memory_bytes=int(donated.memory_bytes * used),
        disk_bytes=int(donated.disk_bytes * used),
    )
    return HostSnapshot(
        host_id=f"h{i}",
        donated=donated,
        reserved=reserved,
        labels=labels,
        schedulable=schedulable,
        allowed_images=allowed,
        allow_network=network,
        held_images=frozenset(HELD[image] for image in held),
        throttled=throttled,
    )


@pytest.mark.parametrize("small", [0, Scheduler.SMALL_CANDIDATES])
@settings(max_examples=200, deadline=None)
@given(pool=st.lists(hosts, min_size=1, max_size=40), run=steps)
def test_the_index_decides_as_the_plain_rule(small: int, pool: list[tuple], run: list[tuple]) -> None:  # type: ignore[type-arg]
    """A random pool and a random run of changes: after each, the index decides as `place`."""
    scheduler = Scheduler([snapshot(i, h) for i, h in enumerate(pool)])
    scheduler.SMALL_CANDIDATES = small
    for action, which, amount, request, strategy in run:
        host_id = f"h{which % len(pool)}"
        match action:
            case "reserve":
                scheduler.reserve(host_id, amount)
            case "release":
                scheduler.release(host_id, amount)
            case "schedulable":
                scheduler.set_schedulable(host_id, not scheduler.snapshot(host_id).schedulable)
            case "throttled":
                scheduler.set_throttled(host_id, not scheduler.snapshot(host_id).throttled)
            case "hollow":
                # The host registers again, the other way round: hollow, or not any more.
                before = scheduler.snapshot(host_id)
                labels = {k: v for k, v in before.labels.items() if k != "hollow"}
                if not is_hollow(before.labels):
                    labels["hollow"] = "true"
                scheduler.set_host(replace(before, labels=labels))
        decision = scheduler.place(request, strategy)
        snapshots = scheduler.snapshots()
        assert decision == place(snapshots, request, strategy)
        if isinstance(decision, Placed):
            chosen = next(s for s in snapshots if s.host_id == decision.host_id)
            assert is_hollow(chosen.labels) == wants_hollow(request)


def test_a_label_index_follows_the_hosts_it_was_built_from() -> None:
    """A label's index, once built, sees later changes: a reservation that fills the only host
    with the label turns its next placement into a wait; releasing it places there again."""
    pool = [
        HostSnapshot(f"h{i}", Capacity(cpus=2, memory_bytes=GIB, disk_bytes=GIB), labels={"arch": arch})
        for i, arch in enumerate(["arm64", "amd64", "amd64"])
    ]
    scheduler = Scheduler(pool)
    scheduler.SMALL_CANDIDATES = 0
    wanted = PlacementRequest("r", Capacity(cpus=2, memory_bytes=GIB, disk_bytes=GIB), {"arch": "arm64"})
    assert scheduler.place(wanted) == place(scheduler.snapshots(), wanted)
    scheduler.reserve("h0", Capacity(cpus=1, memory_bytes=1, disk_bytes=1))
    decision = scheduler.place(wanted)
    assert decision == place(scheduler.snapshots(), wanted)
    assert type(decision).__name__ == "Wait"
    scheduler.release("h0", Capacity(cpus=1, memory_bytes=1, disk_bytes=1))
    assert scheduler.place(wanted) == place(scheduler.snapshots(), wanted)
    assert type(scheduler.place(wanted)).__name__ == "Placed"


def test_a_group_with_a_higher_bound_can_still_hold_the_best_fit() -> None:
    """Best fit stops opening groups once their lower bound is above the best found; disk weighs
    in a host's score but not in its group's bound, so a host in a group with a higher bound can
    still be the better fit, and must be found: b (4.004 shares) over a (4.125)."""
    pool = [
        HostSnapshot("a", Capacity(cpus=3, memory_bytes=GIB // 2, disk_bytes=256 * GIB)),
        HostSnapshot("b", Capacity(cpus=2, memory_bytes=8 * GIB, disk_bytes=GIB)),
    ]
    wanted = PlacementRequest("r", Capacity(cpus=1, memory_bytes=GIB // 4, disk_bytes=GIB))
    assert Scheduler(pool).place(wanted) == place(pool, wanted) == Placed("b")
