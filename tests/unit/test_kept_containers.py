"""Kept containers in the allocator's decisions (lifecycle.py, kept.py, decisions.release), without servers.

What must hold: an exit of an allocation whose spec has keep_for_s ends it with
kept_until = now + keep_for_s and retains only its disk (CapacityRetained), from a
report and from a host's account alike; without keep_for_s it ends and frees all as
before, and a failure never keeps anything. A kept allocation is discarded (the
event and its disk freed in one append, expecting the alloc stream's version) when
its time is up, when its user releases it, or on request; one not kept gives nothing
to discard. The capacity ledger then holds nothing of it.
"""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from potluck.allocator.capacity import CapacityLedger
from potluck.allocator.decisions import release
from potluck.allocator.kept import TIME_UP, discard, due
from potluck.allocator.lifecycle import decide, decide_actual_state
from potluck.contracts.allocation_events import (
    AllocationDiscarded,
    AllocationExited,
    AllocationSpec,
    CapacityFreed,
    CapacityReserved,
    CapacityRetained,
    alloc_stream,
    capacity_stream,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.reports import ActualState, ContainerExited, ContainerFailed, ContainerStatus
from potluck.readmodels.allocations import AllocationState, AllocationsView

GIB = 1 << 30
RESOURCES = Capacity(cpus=1, memory_bytes=GIB, disk_bytes=2 * GIB)
NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def alloc(keep_for_s: float = 0.0, status: str = "running", **more: object) -> AllocationState:
    state = AllocationState(
        alloc_id="a1",
        user="alice",
        spec=AllocationSpec(resources=RESOURCES, image="img:1", keep_for_s=keep_for_s),
        lifetime_s=600,
        host_id="h1",
        version=4,
        placed_position=10,
    )
    return replace(state, status=status, **more)  # type: ignore[arg-type]


def exit_report(code: int = 0) -> ContainerExited:
    return ContainerExited(alloc_id="a1", container_id="c1", exit_code=code, oom_killed=False)


def test_an_exit_with_keep_for_keeps_the_container_and_retains_only_its_disk() -> None:
    decision = decide(alloc(keep_for_s=90), "h1", exit_report(3), now=NOW)
    assert decision is not None
    assert decision.alloc_events == [
        AllocationExited(alloc_id="a1", host_id="h1", exit_code=3, kept_until=NOW + timedelta(seconds=90))
    ]
    assert decision.streams[capacity_stream("h1")] == [
        CapacityRetained(host_id="h1", alloc_id="a1", disk_bytes=2 * GIB)
    ]
    assert decision.expected == 4


def test_an_exit_without_keep_for_and_a_failure_with_it_free_everything() -> None:
    plain = decide(alloc(), "h1", exit_report(), now=NOW)
    assert plain is not None
    assert plain.alloc_events == [AllocationExited(alloc_id="a1", host_id="h1", exit_code=0)]
    assert plain.streams[capacity_stream("h1")] == [
        CapacityFreed(host_id="h1", alloc_id="a1", amount=RESOURCES)
    ]
    failed = decide(
        alloc(keep_for_s=90), "h1", ContainerFailed(alloc_id="a1", reason="start_failed"), now=NOW
    )
    assert failed is not None
    assert isinstance(failed.streams[capacity_stream("h1")][0], CapacityFreed)


def test_an_exit_in_a_hosts_account_keeps_it_too() -> None:
    report = ActualState(
        as_of_position=20,
        containers=[ContainerStatus(alloc_id="a1", container_id="c1", running=False, exit_code=0)],
    )
    [decision] = decide_actual_state([alloc(keep_for_s=60)], "h1", report, now=NOW)
    [event] = decision.alloc_events
    assert isinstance(event, AllocationExited)
    assert event.kept_until == NOW + timedelta(seconds=60)
    assert isinstance(decision.streams[capacity_stream("h1")][0], CapacityRetained)


def kept_state(until: datetime = NOW) -> AllocationState:
    return alloc(keep_for_s=60, status="exited", kept_until=until, version=7)


def test_discard_removes_the_container_and_frees_its_disk_in_one_append() -> None:
    appends = discard(kept_state(), TIME_UP)
    assert (appends[0].stream, appends[0].expected_version) == (alloc_stream("a1"), 7)
    assert appends[0].events == [AllocationDiscarded(alloc_id="a1", host_id="h1", reason=TIME_UP)]
    assert appends[1].stream == capacity_stream("h1")
    [freed] = appends[1].events
    assert isinstance(freed, CapacityFreed)
    # Read back as the log does: what is written must be readable.
    assert CapacityFreed.model_validate(freed.model_dump(mode="json")) == freed
    assert freed == CapacityFreed(host_id="h1", alloc_id="a1", amount=RESOURCES)


def test_nothing_to_discard_when_not_kept() -> None:
    assert discard(alloc(status="exited"), "x") == []
    assert discard(alloc(keep_for_s=60), "x") == []  # still running: nothing kept yet


def test_due_and_kept_on_pick_only_kept_allocations() -> None:
    early = replace(kept_state(NOW - timedelta(seconds=1)), alloc_id="a-early")
    late = replace(kept_state(NOW + timedelta(seconds=1)), alloc_id="a-late")
    other = replace(kept_state(NOW - timedelta(seconds=1)), alloc_id="a-other", host_id="h2")
    running = replace(alloc(), alloc_id="a-run")
    every = [early, late, other, running]
    assert due(every, NOW) == ["a-early", "a-other"]
    view = AllocationsView(allocations={a.alloc_id: a for a in every})
    assert [a.alloc_id for a in view.kept_on("h1")] == ["a-early", "a-late"]


def test_releasing_a_kept_allocation_discards_it_and_an_ended_one_is_left_alone() -> None:
    [discarded, _] = release(kept_state(), "user:alice")
    assert discarded.events == [
        AllocationDiscarded(alloc_id="a1", host_id="h1", reason="released by user:alice")
    ]
    assert release(alloc(status="exited"), "user:alice") == []


def test_the_ledger_holds_the_disk_while_kept_and_nothing_once_discarded() -> None:
    ledger = CapacityLedger()
    events = [
        CapacityReserved(host_id="h1", alloc_id="a1", amount=RESOURCES),
        CapacityRetained(host_id="h1", alloc_id="a1", disk_bytes=2 * GIB),
    ]
    for version, event in enumerate(events, start=1):
        ledger.apply(event, version=version)
    held = ledger.reserved("h1")
    assert (held.cpus, held.memory_bytes, held.disk_bytes) == (0, 0, 2 * GIB)
    [freed] = discard(kept_state(), TIME_UP)[1].events
    assert isinstance(freed, CapacityFreed)
    ledger.apply(freed, version=3)
    held = ledger.reserved("h1")
    assert (held.cpus, held.memory_bytes, held.disk_bytes) == (0, 0, 0)
