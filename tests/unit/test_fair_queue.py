"""The fair queue of pending requests: FIFO per user, the users who hold least served first, users
who hold as much in turn."""

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from potluck.allocator.capacity import placement_request
from potluck.allocator.queue import fair_order
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
    return [a.alloc_id for a in fair_order(pending, active, last_placed or {})]


def test_users_take_turns_and_each_users_requests_keep_their_order() -> None:
    """Tried: ann's three requests, bob's two and cy's one, made in an interleaved order, given in
    another. Must hold: each user's first in the order of their first request, then each
    user's second, and so on; an allocation no longer pending is left out."""
    made = [("ann", "a1"), ("ann", "a2"), ("ann", "a3"), ("bob", "b1"), ("cy", "c1"), ("bob", "b2")]
    pending = [state(alloc_id, user, i) for i, (user, alloc_id) in enumerate(made)]
    placed = state("a0", "ann", -1, status="placed")
    assert order([*reversed(pending), placed]) == ["a1", "b1", "c1", "a2", "b2", "a3"]


def test_a_jobs_tasks_requested_together_are_served_in_the_order_of_their_index() -> None:
    """Tried: a job's 12 tasks requested in one append (one time), their ids random as the
    allocator makes them, given in id order. Before, they were served in id order (a data user
    saw task 0 `7 of 9 in the queue` while tasks 1 and 2 started). Must hold: index order; a
    retry requested later still comes after."""
    tasks = [
        replace(state(f"a-{(i * 7919) % 1000:03x}", "ann", 0), job_id="j-1", task_index=i) for i in range(12)
    ]
    retry = replace(state("a-fff", "ann", 5), job_id="j-1", task_index=0, attempt=2)
    by_id = sorted([*tasks, retry], key=lambda a: a.alloc_id)
    assert order(by_id) == [a.alloc_id for a in tasks] + [retry.alloc_id]


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
        for pending in fair_order(waiting.values(), running.values(), last_placed):
            request = placement_request(pending)
            decision = scheduler.place(request)
            if isinstance(decision, Placed):
                scheduler.reserve(decision.host_id, request.resources)
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
    assert order(states) == ["a1", "b1", "a2"]
    # What a round then asks the scheduler for: the request as its user made it.
    assert placement_request(states[1]) == PlacementRequest(
        "a1", req("a1").resources, {"arch": "arm64"}, "debian:12"
    )


@given(
    st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 5)), max_size=30),
    st.dictionaries(st.sampled_from("abcd"), st.sampled_from([0.5, 1.0, 2.0]), max_size=4),
    st.dictionaries(st.sampled_from("abcd"), st.integers(1, 3), max_size=4),
)
def test_every_request_is_served_once_in_rounds_each_users_in_the_order_made(
    made: list[tuple[str, int]], holding: dict[str, float], last_placed: dict[str, int]
) -> None:
    """Tried: any requests of up to four users (several made in the same second), users holding
    CPUs or not, placed at some log position or never. Must hold: every request comes exactly
    once; each user's in the order made; the n-th of every user who has one comes before any
    user's (n+1)-th; and within each round users keep one order, the one holding least first."""
    pending = [state(f"{user}{i}", user, second) for i, (user, second) in enumerate(made)]
    active = [state(f"run-{user}", user, -1, cpus=cpus, status="running") for user, cpus in holding.items()]
    served = fair_order(pending, active, last_placed)
    assert sorted(a.alloc_id for a in served) == sorted(a.alloc_id for a in pending)
    rounds: list[list[str]] = []
    seen: dict[str, int] = {}
    for a in served:
        n = seen.get(a.user, 0)
        seen[a.user] = n + 1
        if n == len(rounds):
            rounds.append([])
        assert n == len(rounds) - 1, "a user's next request came before another's earlier round ended"
        rounds[n].append(a.user)
    for user in seen:
        mine = [a for a in served if a.user == user]
        assert [(a.requested_at, a.alloc_id) for a in mine] == sorted(
            (a.requested_at, a.alloc_id) for a in mine
        )
    first = rounds[0] if rounds else []
    for later in rounds[1:]:
        assert later == [u for u in first if u in later]
    assert [holding.get(u, 0.0) for u in first] == sorted(holding.get(u, 0.0) for u in first)
