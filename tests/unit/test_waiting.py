"""Why a pending allocation waits (allocator's waiting.py) and the read model's pending index."""

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.allocator.scheduler import (
    EXCEEDS_ANY_HOST,
    NO_FREE_CAPACITY,
    NO_SCHEDULABLE_HOST,
    Impossible,
    Placed,
    Wait,
)
from potluck.allocator.waiting import queue_positions, standing
from potluck.contracts.allocation_events import (
    AllocationDiscarded,
    AllocationEvent,
    AllocationExited,
    AllocationPlaced,
    AllocationRefused,
    AllocationReleased,
    AllocationRequested,
    AllocationSpec,
    AllocationUnplaced,
)
from potluck.contracts.capacity import Capacity
from potluck.readmodels.allocations import ACTIVE, AllocationState, AllocationsView, evolve

T0 = datetime(2025, 1, 1, tzinfo=UTC)
SPEC = AllocationSpec(resources=Capacity(cpus=1, memory_bytes=1 << 30, disk_bytes=1 << 30), image="debian:12")


def requested(alloc_id: str, user: str = "ann") -> AllocationRequested:
    return AllocationRequested(alloc_id=alloc_id, user=user, spec=SPEC, lifetime_s=60, queue_timeout_s=60)


def pending(alloc_id: str, user: str, seconds: float) -> AllocationState:
    state = evolve(None, requested(alloc_id, user), 1, T0 + timedelta(seconds=seconds))
    assert state is not None
    return state


@pytest.mark.parametrize(
    ("decision", "reason", "said"),
    [
        (Wait(NO_FREE_CAPACITY), "no_free_capacity", "no host has that much free right now"),
        (Wait(NO_SCHEDULABLE_HOST), "no_schedulable_host", "only hosts that are away"),
        (Placed("h-1"), "placing", "host h-1 has room for it now"),
        (
            Impossible(EXCEEDS_ANY_HOST, "no host donates 4 cpus", "cpus"),
            "refusing",
            "no host donates 4 cpus: the allocator's next look refuses it",
        ),
    ],
)
def test_each_decision_tells_the_waiting_user_what_happens_next(
    decision: Wait | Placed | Impossible, reason: str, said: str
) -> None:
    told = standing(decision, 2, 5)
    assert (told.reason, told.position, told.queue_length) == (reason, 2, 5)
    assert said in told.message


def test_positions_follow_the_fair_queue_users_in_turn() -> None:
    states = [
        pending("a1", "ann", 0),
        pending("a2", "ann", 1),
        pending("a3", "ann", 2),
        pending("b1", "bob", 3),
    ]
    view = AllocationsView(allocations={s.alloc_id: s for s in states})
    assert queue_positions(view) == {"a1": 1, "b1": 2, "a2": 3, "a3": 4}
    assert queue_positions(AllocationsView()) == {}


def _fold(events: list[AllocationEvent]) -> AllocationsView:
    view = AllocationsView()
    for n, event in enumerate(events, start=1):
        view.apply(event, position=n, version=n, at=T0 + timedelta(seconds=n))
    return view


def _lifecycle(alloc_id: str, steps: int) -> list[AllocationEvent]:
    """An allocation's events: requested, then placed and unplaced in turn, then maybe ended."""
    events: list[AllocationEvent] = [requested(alloc_id)]
    for n in range(steps):
        if n % 2 == 0:
            events.append(
                AllocationPlaced(alloc_id=alloc_id, host_id="h", user="ann", spec=SPEC, expires_at=T0)
            )
        else:
            events.append(AllocationUnplaced(alloc_id=alloc_id, host_id="h", reason="image_pull_failed"))
    return events


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=4),
            st.sampled_from(["open", "released", "refused", "exited", "kept", "discarded"]),
        ),
        max_size=8,
    )
)
def test_the_indexes_hold_exactly_the_pending_active_and_kept_allocations(
    shapes: list[tuple[int, str]],
) -> None:
    events: list[AllocationEvent] = []
    for i, (steps, end) in enumerate(shapes):
        alloc_id = f"a{i}"
        events += _lifecycle(alloc_id, steps)
        if end == "released":
            events.append(AllocationReleased(alloc_id=alloc_id, by="user:ann"))
        elif end == "refused" and steps % 2 == 0:
            events.append(AllocationRefused(alloc_id=alloc_id, reason="QUEUE_TIMEOUT"))
        elif end == "exited":
            events.append(AllocationExited(alloc_id=alloc_id, host_id="h", exit_code=0))
        elif end in ("kept", "discarded"):
            kept_until = T0 + timedelta(hours=1)
            events.append(
                AllocationExited(alloc_id=alloc_id, host_id="h", exit_code=0, kept_until=kept_until)
            )
            if end == "discarded":
                events.append(AllocationDiscarded(alloc_id=alloc_id, host_id="h", reason="time up"))
    view = _fold(events)
    states = view.allocations.values()
    pending = {a.alloc_id for a in states if a.status == "pending"}
    active = {a.alloc_id for a in states if a.status in ACTIVE}
    kept = {a.alloc_id for a in states if a.kept}
    assert (view.pending_ids, view.active_ids, view.kept_ids) == (pending, active, kept)
    assert {a.alloc_id for a in view.pending()} == pending
    assert {a.alloc_id for a in view.active()} == active
    assert {a.alloc_id for a in view.kept()} == kept
    held = {a.alloc_id for a in states if a.user == "ann" and (a.status == "pending" or a.status in ACTIVE)}
    assert {a.alloc_id for a in view.held_by("ann")} == held
    assert view.held_by("bob") == []
    assert view.held_ids == ({"ann": held} if held else {})  # no user is kept with nothing held
    # The gauge's counts: no status is kept with none in it.
    assert view.by_status == Counter(a.status for a in states)
    assert 0 not in view.by_status.values()
    # A view made from the same allocations (a checkpoint's) finds the same.
    again = AllocationsView(allocations=dict(view.allocations))
    assert (again.pending_ids, again.active_ids, again.kept_ids) == (pending, active, kept)
    assert again.held_ids == view.held_ids
    assert again.by_status == view.by_status
    # The latest placement folded; from allocations alone, those that still say where they were.
    placed = max((a.placed_position for a in states if a.placed_position is not None), default=None)
    assert again.last_placed == ({"ann": placed} if placed is not None else {})
    if placed is not None:
        assert view.last_placed["ann"] >= placed
