"""The fair queue of pending requests: FIFO per user, the users who hold least served first, users
who hold as much in turn."""

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from potluck.allocator.queue import FairQueue
from potluck.allocator.scheduler import (
    HostSnapshot,
    Placed,
    PlacementRequest,
    Scheduler,
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


def queue_of(*items: tuple[str, str]) -> FairQueue:
    """(user, alloc_id) pairs, pushed in this order."""
    queue = FairQueue()
    for user, alloc_id in items:
        queue.push(user, req(alloc_id))
    return queue


def state(
    alloc_id: str, user: str, seconds: float, cpus: float = 1, status: str = "pending"
) -> AllocationState:
    """An allocation of `user` requested at `seconds`, pending or (status) active."""
    event = AllocationRequested(
        alloc_id=alloc_id,
        user=user,
        spec=AllocationSpec(resources=req(alloc_id, cpus).resources, image="debian:12"),
        lifetime_s=60,
    )
    requested = evolve(None, event, 1, at(seconds))
    assert requested is not None
    return replace(requested, status=status)  # type: ignore[arg-type]


def order(
    pending: list[AllocationState],
    active: Sequence[AllocationState] = (),
    last_placed: dict[str, int] | None = None,
) -> list[str]:
    return [p.alloc_id for p in FairQueue.of(pending, active, last_placed or {}).in_order()]


def test_users_take_turns_and_each_users_requests_keep_their_order() -> None:
    queue = queue_of(("ann", "a1"), ("ann", "a2"), ("ann", "a3"), ("bob", "b1"), ("cy", "c1"), ("bob", "b2"))
    assert [p.alloc_id for p in queue.in_order()] == ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert [p.alloc_id for p in queue] == ["a1", "a2", "a3", "b1", "b2", "c1"]
    assert len(queue) == 6
    assert "b2" in queue
    assert queue.get("b2") is not None
    assert queue.get("zz") is None


def test_a_user_who_came_later_holding_nothing_is_served_before_one_who_holds() -> None:
    """Tried: a heavy user running three allocations with fifty older requests waiting, and a
    light user with one. Must hold: the light user's request comes first, however old the
    heavy user's are: a slot that frees goes to the light user, not to the heavy user's next."""
    heavy = [state(f"h{i}", "heavy", i) for i in range(50)]
    running = [state(f"r{i}", "heavy", -10, status="running") for i in range(3)]
    light = [state("l0", "light", 60)]
    assert order(heavy + light, running)[:2] == ["l0", "h0"]
    # Holding nothing either, the heavy user's older request would come first.
    assert order(heavy + light)[:2] == ["h0", "l0"]


def test_users_who_hold_as_much_take_turns_by_their_last_placement() -> None:
    """Tried: two users holding nothing, ann served last (a later log position) than bob, and cy
    never. Must hold: cy first, then bob, then ann, whatever their requests' ages."""
    waiting = [state("a1", "ann", 0), state("b1", "bob", 1), state("c1", "cy", 2)]
    assert order(waiting, [], {"ann": 9, "bob": 5}) == ["c1", "b1", "a1"]


def test_the_cpus_held_decide_not_the_number_of_allocations() -> None:
    waiting = [state("a1", "ann", 0), state("b1", "bob", 1)]
    held = [state("a-big", "ann", -1, cpus=4, status="placed")] + [
        state(f"b-small{i}", "bob", -1, cpus=0.5, status="running") for i in range(3)
    ]
    assert order(waiting, held) == ["b1", "a1"]


def test_the_same_allocation_cannot_be_queued_twice() -> None:
    queue = queue_of(("ann", "a1"))
    with pytest.raises(ValueError, match="already queued"):
        queue.push("bob", req("a1"))


def test_capacity_freeing_serves_waiting_users_in_turn() -> None:
    """With a real scheduler, rounds as the allocator makes them (reactions.py place_pending): each
    round a queue made afresh from what waits, what runs and who was placed when, and what fits
    placed in its order. One 4-cpu host, three users asking 2 cpus each, twice; one allocation
    ends between rounds. Must hold: every user has one before any has two."""
    scheduler = Scheduler([HostSnapshot("h", Capacity(cpus=4, memory_bytes=64 * GIB, disk_bytes=64 * GIB))])
    waiting = {
        s.alloc_id: s
        for s in (
            state(alloc_id, user, i, cpus=2)
            for i, (user, alloc_id) in enumerate(
                [("ann", "a1"), ("ann", "a2"), ("bob", "b1"), ("bob", "b2"), ("cy", "c1"), ("cy", "c2")]
            )
        )
    }
    running: dict[str, AllocationState] = {}
    last_placed: dict[str, int] = {}
    position = 0

    def round_() -> list[str]:
        nonlocal position
        placed = []
        for pending in FairQueue.of(waiting.values(), running.values(), last_placed).in_order():
            decision = scheduler.place(pending.request)
            if isinstance(decision, Placed):
                scheduler.reserve(decision.host_id, pending.request.resources)
                position += 1
                last_placed[pending.user] = position
                running[pending.alloc_id] = replace(waiting.pop(pending.alloc_id), status="running")
                placed.append(pending.alloc_id)
        return placed

    def end(alloc_id: str) -> None:
        scheduler.release("h", running.pop(alloc_id).spec.resources)

    assert round_() == ["a1", "b1"]
    end("a1")
    assert round_() == ["c1"]
    end("b1")
    assert round_() == ["a2"]
    end("c1")
    assert round_() == ["b2"]
    end("a2")
    assert round_() == ["c2"]


def test_a_queue_of_the_read_model_pending_allocations() -> None:
    def requested(alloc_id: str, user: str, seconds: float) -> AllocationState:
        event = AllocationRequested(
            alloc_id=alloc_id,
            user=user,
            spec=AllocationSpec(resources=req(alloc_id).resources, image="debian:12"),
            lifetime_s=60,
            constraints={"arch": "arm64"},
        )
        state = evolve(None, event, 1, at(seconds))
        assert state is not None
        return state

    states = [
        requested("b1", "bob", 1),
        requested("a1", "ann", 0),
        requested("a2", "ann", 2),
    ]
    queue = FairQueue.of(states, [], {})
    assert [p.alloc_id for p in queue.in_order()] == ["a1", "b1", "a2"]
    a1 = queue.get("a1")
    assert a1 is not None
    assert (a1.user, a1.request) == (
        "ann",
        PlacementRequest("a1", req("a1").resources, {"arch": "arm64"}, "debian:12"),
    )
