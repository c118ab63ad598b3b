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
    HostSnapshot,
    Impossible,
    Placed,
    PlacementRequest,
    Wait,
    place,
)
from potluck.allocator.waiting import kept_in_the_way, queue_positions, standing
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


GIB = 1 << 30


def _kept(alloc_id: str, user: str, host_id: str, disk_gib: int, minutes: int) -> AllocationState:
    """An ended allocation whose stopped container `host_id` keeps `minutes` more."""
    spec = SPEC.model_copy(
        update={"resources": Capacity(cpus=1, memory_bytes=1 << 30, disk_bytes=disk_gib * GIB)}
    )
    asked = AllocationRequested(alloc_id=alloc_id, user=user, spec=spec, lifetime_s=60, queue_timeout_s=60)
    placed = AllocationPlaced(alloc_id=alloc_id, host_id=host_id, user=user, spec=spec, expires_at=T0)
    ended = AllocationExited(
        alloc_id=alloc_id, host_id=host_id, exit_code=0, kept_until=T0 + timedelta(minutes=minutes)
    )
    view = _fold([asked, placed, ended])
    return view.allocations[alloc_id]


def _host(host_id: str, disk_gib: int, reserved_disk_gib: int) -> HostSnapshot:
    return HostSnapshot(
        host_id=host_id,
        donated=Capacity(cpus=4, memory_bytes=8 * GIB, disk_bytes=disk_gib * GIB),
        reserved=Capacity.model_construct(cpus=0.0, memory_bytes=0, disk_bytes=reserved_disk_gib * GIB),
    )


def test_a_wait_on_disk_held_by_kept_containers_names_them_and_how_to_free_one() -> None:
    """What is tried: a 3 GiB request on two hosts whose disk is held only by stopped containers
    kept for their logs (h-1: ann's two and bob's one; h-2: bob's one, too small to help).
    What must hold: placing waits (no free capacity); the note names the host where freeing the
    kept disk would place it, how many containers and how much disk, and (to ann) her own,
    soonest-ending first, with the command that removes it; bob, owning one there, is told the
    same with his; carol, owning none, is told it is placed as the disk frees."""
    hosts = [_host("h-1", 10, 9), _host("h-2", 4, 3)]
    kept = [
        _kept("a-late", "ann", "h-1", 3, minutes=50),
        _kept("a-soon", "ann", "h-1", 3, minutes=10),
        _kept("b-1", "bob", "h-1", 3, minutes=5),
        _kept("b-2", "bob", "h-2", 1, minutes=1),
    ]
    request = PlacementRequest(
        alloc_id="a-new", resources=Capacity(cpus=1, memory_bytes=GIB, disk_bytes=3 * GIB)
    )
    assert place(hosts, request) == Wait(NO_FREE_CAPACITY)
    to_ann = kept_in_the_way(hosts, request, "best_fit", kept, "ann")
    assert to_ann is not None
    assert "on host h-1, 3 stopped container(s) kept for their logs and files hold 9" in to_ann
    assert "2 of them yours: `potluck alloc rm a-soon` removes one now" in to_ann
    to_bob = kept_in_the_way(hosts, request, "best_fit", kept, "bob")
    assert to_bob is not None
    assert "1 of them yours: `potluck alloc rm b-1`" in to_bob
    to_carol = kept_in_the_way(hosts, request, "best_fit", kept, "carol")
    assert to_carol is not None
    assert to_carol.endswith("it is placed as that disk frees")
    assert "potluck alloc rm" not in to_carol


def test_no_note_when_kept_disk_is_not_what_stands_in_the_way() -> None:
    """What is tried: waits that freeing every kept container's disk would not end (the host's
    CPUs are all reserved; the kept disk is on another host too small for the request), and a
    pool with nothing kept. What must hold: no note, so the user is not sent to remove results
    that would not help."""
    busy = HostSnapshot(
        host_id="h-1",
        donated=Capacity(cpus=1, memory_bytes=8 * GIB, disk_bytes=10 * GIB),
        reserved=Capacity.model_construct(cpus=1.0, memory_bytes=0, disk_bytes=3 * GIB),
    )
    request = PlacementRequest(
        alloc_id="a-new", resources=Capacity(cpus=1, memory_bytes=GIB, disk_bytes=3 * GIB)
    )
    kept_here = [_kept("a-1", "ann", "h-1", 3, minutes=5)]
    assert kept_in_the_way([busy], request, "best_fit", kept_here, "ann") is None
    small = _host("h-2", 2, 2)
    full = _host("h-1", 10, 10)
    kept_small = [_kept("a-2", "ann", "h-2", 2, minutes=5)]
    assert kept_in_the_way([full, small], request, "best_fit", kept_small, "ann") is None
    assert kept_in_the_way([full], request, "best_fit", [], "ann") is None
