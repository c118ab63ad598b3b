"""The fair queue of pending requests: FIFO per user, users in turn, waiting ones skipped."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from potluck.allocator.queue import FairQueue
from potluck.allocator.scheduler import (
    EXCEEDS_ANY_HOST,
    NO_FREE_CAPACITY,
    Decision,
    HostSnapshot,
    Impossible,
    Placed,
    PlacementRequest,
    Scheduler,
    Wait,
)
from potluck.contracts.allocation_events import AllocationRequested, AllocationSpec
from potluck.contracts.capacity import Capacity
from potluck.readmodels.allocations import AllocationState, evolve

GIB = 1 << 30
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def req(alloc_id: str, cpus: float = 1) -> PlacementRequest:
    return PlacementRequest(alloc_id, Capacity(cpus=cpus, memory_bytes=GIB, disk_bytes=GIB))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def queue_of(*items: tuple[str, str], timeout: float = 60) -> FairQueue:
    """(user, alloc_id) pairs, pushed one second apart."""
    queue = FairQueue()
    for i, (user, alloc_id) in enumerate(items):
        queue.push(user, req(alloc_id), at(i), at(i + timeout))
    return queue


def everything_fits(request: PlacementRequest) -> Decision:
    return Placed("h")


def waiting(*alloc_ids: str) -> Callable[[PlacementRequest], Decision]:
    def decide(request: PlacementRequest) -> Decision:
        return Wait(NO_FREE_CAPACITY) if request.alloc_id in alloc_ids else Placed("h")

    return decide


def serve_all(queue: FairQueue, decide: Callable[[PlacementRequest], Decision]) -> list[str]:
    served = []
    while (found := queue.next_placeable(decide)) is not None:
        served.append(queue.take(found[0].alloc_id).alloc_id)
    return served


def test_users_take_turns_and_each_users_requests_keep_their_order() -> None:
    queue = queue_of(("ann", "a1"), ("ann", "a2"), ("ann", "a3"), ("bob", "b1"), ("cy", "c1"), ("bob", "b2"))
    assert queue.users() == ["ann", "bob", "cy"]
    assert [p.alloc_id for p in queue.in_order()] == ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert serve_all(queue, everything_fits) == ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert len(queue) == 0
    assert queue.users() == []


def test_a_heavy_user_cannot_starve_a_light_one() -> None:
    queue = FairQueue()
    for i in range(50):
        queue.push("heavy", req(f"h{i}"), at(i), at(1000))
    queue.push("light", req("l0"), at(60), at(1000))
    served = serve_all(queue, everything_fits)
    assert served.index("l0") == 1


def test_a_request_that_must_wait_is_skipped_not_blocking() -> None:
    queue = queue_of(("ann", "big"), ("ann", "small"), ("bob", "b1"))
    found = queue.next_placeable(waiting("big"))
    assert found is not None
    assert (found[0].alloc_id, found[1]) == ("small", Placed("h"))
    queue.take("small")
    assert serve_all(queue, waiting("big")) == ["b1"]
    assert [p.alloc_id for p in queue] == ["big"]
    assert queue.next_placeable(waiting("big")) is None


def test_next_placeable_changes_nothing_until_taken() -> None:
    queue = queue_of(("ann", "a1"), ("bob", "b1"))
    first = queue.next_placeable(everything_fits)
    again = queue.next_placeable(everything_fits)
    assert first == again
    assert first is not None
    assert first[0].alloc_id == "a1"
    assert len(queue) == 2
    # The append lost a race: nothing to undo, the request is still first in line.
    assert "a1" in queue


def test_impossible_requests_come_out_to_be_refused() -> None:
    refuse = Impossible(EXCEEDS_ANY_HOST, "no host donates 64 cpus", "cpus")
    queue = queue_of(("ann", "a1"), ("bob", "b1"))
    found = queue.next_placeable(lambda r: refuse if r.alloc_id == "b1" else Wait(NO_FREE_CAPACITY))
    assert found is not None
    assert (found[0].alloc_id, found[1]) == ("b1", refuse)


def test_taking_passes_the_turn_to_the_next_user() -> None:
    queue = queue_of(("ann", "a1"), ("bob", "b1"), ("cy", "c1"), ("ann", "a2"))
    # bob's request is served out of turn (ann's must wait): cy is next, then ann.
    found = queue.next_placeable(waiting("a1", "a2"))
    assert found is not None
    queue.take(found[0].alloc_id)
    assert queue.users() == ["cy", "ann"]
    queue.take("c1")
    assert queue.users() == ["ann"]
    assert serve_all(queue, everything_fits) == ["a1", "a2"]


def test_removing_leaves_the_round_alone() -> None:
    queue = queue_of(("ann", "a1"), ("bob", "b1"), ("bob", "b2"))
    assert queue.remove("b1") is not None
    assert queue.remove("b1") is None
    assert queue.users() == ["ann", "bob"]
    assert queue.remove("a1") is not None
    assert queue.users() == ["bob"]
    assert queue.pending_for("bob")[0].alloc_id == "b2"
    assert queue.get("b2") is not None
    assert queue.get("a1") is None


def test_expired_requests_leave_the_queue_earliest_first() -> None:
    queue = FairQueue()
    queue.push("ann", req("a1"), at(0), at(30))
    queue.push("bob", req("b1"), at(1), at(10))
    queue.push("ann", req("a2"), at(2), at(100))
    assert queue.expired(at(9)) == []
    assert [p.alloc_id for p in queue.expired(at(30))] == ["b1", "a1"]
    assert [p.alloc_id for p in queue] == ["a2"]
    assert queue.users() == ["ann"]


def test_the_same_allocation_cannot_be_queued_twice() -> None:
    queue = queue_of(("ann", "a1"))
    with pytest.raises(ValueError, match="already queued"):
        queue.push("bob", req("a1"), at(5), at(50))


def test_capacity_freeing_serves_waiting_users_in_turn() -> None:
    """With a real scheduler: one 4-cpu host, three users asking 2 cpus each, twice."""
    scheduler = Scheduler([HostSnapshot("h", Capacity(cpus=4, memory_bytes=64 * GIB, disk_bytes=64 * GIB))])
    queue = FairQueue()
    for i, (user, alloc_id) in enumerate(
        [("ann", "a1"), ("ann", "a2"), ("bob", "b1"), ("bob", "b2"), ("cy", "c1"), ("cy", "c2")]
    ):
        queue.push(user, req(alloc_id, cpus=2), at(i), at(600))

    def place_what_fits() -> list[str]:
        placed = []
        while (found := queue.next_placeable(scheduler.place)) is not None:
            pending, decision = found
            assert isinstance(decision, Placed)
            scheduler.reserve(decision.host_id, pending.request.resources)
            placed.append(queue.take(pending.alloc_id).alloc_id)
        return placed

    assert place_what_fits() == ["a1", "b1"]
    scheduler.release("h", req("a1", cpus=2).resources)
    assert place_what_fits() == ["c1"]
    scheduler.release("h", req("b1", cpus=2).resources)
    assert place_what_fits() == ["a2"]
    scheduler.release("h", req("c1", cpus=2).resources)
    assert place_what_fits() == ["b2"]


def test_a_queue_of_the_read_model_pending_allocations() -> None:
    def requested(alloc_id: str, user: str, seconds: float, timeout: float) -> AllocationState:
        event = AllocationRequested(
            alloc_id=alloc_id,
            user=user,
            spec=AllocationSpec(resources=req(alloc_id).resources, image="debian:12"),
            lifetime_s=60,
            constraints={"arch": "arm64"},
            queue_timeout_s=timeout,
        )
        state = evolve(None, event, 1, at(seconds))
        assert state is not None
        return state

    states = [
        requested("b1", "bob", 1, 30),
        requested("a1", "ann", 0, 30),
        requested("a2", "ann", 2, 5),
    ]
    queue = FairQueue.of(states)
    assert [p.alloc_id for p in queue.in_order()] == ["a1", "b1", "a2"]
    a1 = queue.get("a1")
    assert a1 is not None
    assert a1.request == PlacementRequest("a1", req("a1").resources, {"arch": "arm64"}, "debian:12")
    assert (a1.enqueued_at, a1.deadline) == (at(0), at(30))
    assert [p.alloc_id for p in queue.expired(at(7))] == ["a2"]
