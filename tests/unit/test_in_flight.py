"""Requests queued for the log but not folded yet (services/allocator/in_flight.py)."""

import pytest

from potluck.allocator.in_flight import InFlight, InFlightRequests
from potluck.allocator.scheduler import ZERO
from potluck.contracts.capacity import Capacity

GIB = 1024**3


def cap(cpus: float, gib: int = 1) -> Capacity:
    return Capacity(cpus=cpus, memory_bytes=gib * GIB, disk_bytes=gib * GIB)


def test_reservations_in_flight_count_on_their_host_until_settled() -> None:
    flying = InFlightRequests()
    flying.add(InFlight("a1", "alice", cap(1), "h1"))
    flying.add(InFlight("a2", "bob", cap(2, 2), "h1"))
    flying.add(InFlight("a3", "alice", cap(0.5), None))  # queued as pending: no host

    assert flying.count_on("h1") == 2
    assert flying.reserved_on("h1") == cap(3, 3)
    assert flying.count_on("h2") == 0
    assert {e.alloc_id for e in flying.of_user("alice")} == {"a1", "a3"}

    flying.settle("a1")
    assert flying.on_host("h1") == {"a2": cap(2, 2)}
    flying.settle("a2")
    flying.settle("a2")  # settling twice (folded, then the append's callback) is harmless
    flying.settle("unknown")
    assert flying.count_on("h1") == 0
    assert flying.reserved_on("h1") == ZERO
    assert len(flying) == 1


def test_one_allocation_is_in_flight_once() -> None:
    flying = InFlightRequests()
    flying.add(InFlight("a1", "alice", cap(1), "h1"))
    with pytest.raises(ValueError, match="a1"):
        flying.add(InFlight("a1", "alice", cap(1), "h2"))
    assert flying.on_host("h2") == {}


def test_a_placement_that_failed_to_land_is_counted_and_one_that_landed_is_not() -> None:
    """Tried: a placed request lands, another fails to, a pending one (holding no host's room)
    fails to, and an unknown one is settled. Must hold: only the placed one that failed counts
    (the room it held is free again: the allocator tries its queue again on it), and the
    room on its host is no longer held."""
    flying = InFlightRequests()
    for entry in (InFlight("a1", "alice", cap(1), "h1"), InFlight("a2", "alice", cap(1), "h1")):
        flying.add(entry)
    flying.add(InFlight("a3", "alice", cap(1), None))
    flying.settle("a1")
    assert flying.failed_to_land == 0
    flying.settle("a2", landed=False)
    flying.settle("a3", landed=False)
    flying.settle("unknown", landed=False)
    assert flying.failed_to_land == 1
    assert flying.on_host("h1") == {}
    assert len(flying) == 0
