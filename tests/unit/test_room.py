"""Which events may let a waiting request fit (services/allocator/reactions.py, `makes_room`): the
allocator tries its whole pending queue again on those only, and otherwise only the requests that
began waiting since."""

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from potluck.allocator.reactions import makes_room
from potluck.allocator.scheduler import HostSnapshot, Placed, PlacementRequest, Strategy, place
from potluck.contracts.allocation_events import (
    AllocationExtended,
    CapacityFreed,
    CapacityReserved,
    CapacityRetained,
    QuotaCharged,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.host_events import HostLost, HostResumed
from potluck.contracts.host_images import HostImagesReported
from potluck.events import Event

ONE = Capacity(cpus=1, memory_bytes=1 << 30, disk_bytes=1 << 30)


@pytest.mark.parametrize(
    ("event", "category"),
    [
        (CapacityFreed(host_id="h", alloc_id="a", amount=ONE), "capacity"),
        (CapacityRetained(host_id="h", alloc_id="a", disk_bytes=1), "capacity"),
        (HostResumed(host_id="h", by="operator"), "host"),
        # A lost host takes room away, but it also makes impossible what only it could hold.
        (HostLost(host_id="h", silent_for_s=60), "host"),
        (HostImagesReported(host_id="h", images=["potluck-test:1"]), "images"),
    ],
)
def test_room_given_back_and_any_change_of_hosts_or_their_images_may_let_a_request_fit(
    event: Event, category: str
) -> None:
    assert makes_room(event, category)


@pytest.mark.parametrize(
    ("event", "category"),
    [
        (CapacityReserved(host_id="h", alloc_id="a", amount=ONE), "capacity"),
        (AllocationExtended(alloc_id="a", expires_at=datetime(2026, 1, 1, tzinfo=UTC)), "alloc"),
        (QuotaCharged(user="u", alloc_id="a"), "quota"),
    ],
)
def test_a_reservation_or_a_change_of_allocations_or_quotas_lets_nothing_fit(
    event: Event, category: str
) -> None:
    assert not makes_room(event, category)


GIB = 1 << 30


def _capacity(cpus: float, gib: int, disk_gib: int) -> Capacity:
    return Capacity(cpus=cpus, memory_bytes=gib * GIB, disk_bytes=disk_gib * GIB)


capacities = st.builds(
    _capacity, st.sampled_from([0.5, 1.0, 2.0, 4.0]), st.integers(1, 8), st.integers(1, 20)
)
#: Requests as large as hosts, so that many must wait.
wanted_capacities = st.builds(
    _capacity, st.sampled_from([1.0, 2.0, 4.0]), st.integers(2, 8), st.integers(5, 20)
)


@st.composite
def hosts(draw: st.DrawFn) -> list[HostSnapshot]:
    out = []
    for i in range(draw(st.integers(1, 4))):
        donated = draw(capacities)
        taken = draw(st.sampled_from([0.0, 0.25, 0.5, 1.0]))
        reserved = Capacity.model_construct(  # a share of each, zero included
            cpus=donated.cpus * taken,
            memory_bytes=int(donated.memory_bytes * taken),
            disk_bytes=int(donated.disk_bytes * taken),
        )
        out.append(
            HostSnapshot(
                f"h{i}",
                donated,
                reserved,
                labels=draw(st.sampled_from([{}, {"arch": "arm64"}])),
                schedulable=draw(st.booleans()),
                throttled=draw(st.booleans()),
                held_images=draw(st.sampled_from([frozenset(), frozenset({"potluck-test:1"})])),
            )
        )
    return out


@given(
    hosts(),
    wanted_capacities,
    st.sampled_from([{}, {"arch": "arm64"}]),
    st.data(),
    st.sampled_from(["best_fit", "spread"]),
)
def test_a_reservation_never_lets_a_request_that_waits_be_placed(
    pool: list[HostSnapshot],
    wanted: Capacity,
    constraints: dict[str, str],
    data: st.DataObject,
    strategy: Strategy,
) -> None:
    """What the queue's retries rest on (reactions.py, `place_pending`): a request that has to
    wait still has to once another reservation is made anywhere, so only what `makes_room`
    (or a reservation in flight given back) is worth trying the whole queue again for. Tried:
    any small pool, a request that waits there (or can never be placed), one more reservation
    of part or all of what is free on any host. Must hold: the request is not placed
    afterwards."""
    request = PlacementRequest("a-waits", wanted, constraints, "potluck-test:1")
    before = place(pool, request, strategy)
    assume(not isinstance(before, Placed))
    target = data.draw(st.sampled_from(range(len(pool))))
    host = pool[target]
    share = data.draw(st.sampled_from([0.1, 0.5, 1.0]))
    taken = Capacity.model_construct(
        cpus=host.free.cpus * share,
        memory_bytes=int(host.free.memory_bytes * share),
        disk_bytes=int(host.free.disk_bytes * share),
    )
    after = [*pool[:target], replace(host, reserved=host.reserved + taken), *pool[target + 1 :]]
    assert not isinstance(place(after, request, strategy), Placed), (before, taken)
