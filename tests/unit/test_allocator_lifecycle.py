"""What hosts report, turned into allocation events (services/allocator/lifecycle.py), without servers.

What must hold: a host is believed only about allocations placed on it (any
other report is a poison message); a container that starts makes a placed
allocation running; one that exits or fails ends an active allocation and
frees its reservation in the same append; a report about an allocation that
has ended already changes nothing (a late or repeated report); and a host's
account of everything it runs (ActualState) ends what it no longer runs,
starts what it runs, and judges missing only what it knew of when it looked.
"""

from dataclasses import replace

import pytest

from potluck.allocator.lifecycle import Decision, decide, decide_actual_state
from potluck.contracts.allocation_events import (
    AllocationExited,
    AllocationFailed,
    AllocationRestarted,
    AllocationRunning,
    AllocationSpec,
    CapacityFreed,
    alloc_stream,
    capacity_stream,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.reports import (
    ActualState,
    ContainerExited,
    ContainerFailed,
    ContainerStarted,
    ContainerStatus,
    EngineStatus,
    PreviousExit,
    StopReason,
)
from potluck.events import PoisonMessage
from potluck.readmodels.allocations import AllocationState

GIB = 1 << 30
RESOURCES = Capacity(cpus=1, memory_bytes=GIB, disk_bytes=GIB)


def alloc(
    alloc_id: str = "a1", status: str = "placed", host_id: str | None = "h1", **more: object
) -> AllocationState:
    state = AllocationState(
        alloc_id=alloc_id,
        user="alice",
        spec=AllocationSpec(resources=RESOURCES, image="img:1"),
        lifetime_s=600,
        host_id=host_id,
        version=3,
        placed_position=10,
    )
    return replace(state, status=status, **more)  # type: ignore[arg-type]


def freed(alloc_id: str = "a1", host_id: str = "h1") -> list[CapacityFreed]:
    return [CapacityFreed(host_id=host_id, alloc_id=alloc_id, amount=RESOURCES)]


def started(alloc_id: str = "a1") -> ContainerStarted:
    return ContainerStarted(alloc_id=alloc_id, container_id="c-" + alloc_id)


def exited(alloc_id: str = "a1", code: int = 0) -> ContainerExited:
    return ContainerExited(
        alloc_id=alloc_id, container_id="c-" + alloc_id, exit_code=code, oom_killed=code == 137
    )


# --- one report about one allocation ----------------------------------------------------------


def test_a_started_container_makes_a_placed_allocation_running() -> None:
    decision = decide(alloc(status="placed"), "h1", started())
    assert decision == Decision(
        "a1", [AllocationRunning(alloc_id="a1", host_id="h1", container_id="c-a1")], expected=3
    )
    assert decision.streams == {alloc_stream("a1"): decision.alloc_events}


def test_a_start_reported_again_changes_nothing() -> None:
    assert decide(alloc(status="running"), "h1", started()) is None
    assert decide(alloc(status="released"), "h1", started()) is None


def test_a_running_allocations_container_started_again_is_logged_with_how_it_had_stopped() -> None:
    """hostd started an interactive allocation's stopped container again: it stays running, and
    its history says so (not reported again: a report delivered twice is logged once by its id)."""
    again = ContainerStarted(alloc_id="a1", container_id="c-a1", restarted_after=PreviousExit(exit_code=143))
    decision = decide(alloc(status="running"), "h1", again)
    assert decision == Decision(
        "a1",
        [AllocationRestarted(alloc_id="a1", host_id="h1", container_id="c-a1", exit_code=143)],
        expected=3,
    )
    # Before it was logged running, a start is a start; after its end, nothing.
    first = decide(alloc(status="placed"), "h1", again)
    assert first is not None
    assert first.alloc_events == [AllocationRunning(alloc_id="a1", host_id="h1", container_id="c-a1")]
    assert decide(alloc(status="exited"), "h1", again) is None


@pytest.mark.parametrize("status", ["placed", "running"])
def test_an_exit_ends_an_active_allocation_and_frees_its_capacity(status: str) -> None:
    decision = decide(alloc(status=status), "h1", exited(code=137))
    assert decision is not None
    assert decision.alloc_events == [
        AllocationExited(alloc_id="a1", host_id="h1", exit_code=137, oom_killed=True)
    ]
    assert decision.expected == 3
    assert decision.streams == {alloc_stream("a1"): decision.alloc_events, capacity_stream("h1"): freed()}


@pytest.mark.parametrize(
    ("why", "reason", "by_host"),
    [
        ("host_drained", "host drained", True),
        ("stopped_on_host", "stopped on its host (by its member, or its Docker engine stopped)", True),
        # The container's own repeated dying, not the machine taken back.
        ("kept_stopping", "its host could not keep its container running (started again too often)", False),
    ],
)
def test_an_exit_the_host_caused_says_so_to_the_user(why: StopReason, reason: str, by_host: bool) -> None:
    report = ContainerExited(
        alloc_id="a1", container_id="c1", exit_code=143, oom_killed=False, stopped_by_host=why
    )
    decision = decide(alloc(status="running"), "h1", report)
    assert decision is not None
    assert decision.alloc_events == [
        AllocationExited(alloc_id="a1", host_id="h1", exit_code=143, reason=reason, by_host=by_host)
    ]


def test_a_failure_ends_an_active_allocation_with_its_reason() -> None:
    report = ContainerFailed(alloc_id="a1", reason="limits_not_applied", detail="no memory limit")
    decision = decide(alloc(status="placed"), "h1", report)
    assert decision is not None
    assert decision.alloc_events == [
        AllocationFailed(alloc_id="a1", host_id="h1", reason="limits_not_applied", detail="no memory limit")
    ]
    assert decision.capacity_events == freed()


@pytest.mark.parametrize("status", ["released", "expired", "lost", "exited", "failed"])
def test_an_end_reported_after_the_allocation_ended_changes_nothing(status: str) -> None:
    assert decide(alloc(status=status), "h1", exited()) is None
    assert decide(alloc(status=status), "h1", ContainerFailed(alloc_id="a1", reason="start_failed")) is None


@pytest.mark.parametrize(
    # Ids by kind: a report's own id and time differ in every process that collects the tests.
    "report",
    [started(), exited(), ContainerFailed(alloc_id="a1", reason="start_failed")],
    ids=lambda report: report.kind,
)
def test_a_host_is_believed_only_about_what_is_placed_on_it(
    report: ContainerStarted | ContainerExited | ContainerFailed,
) -> None:
    with pytest.raises(PoisonMessage, match="not placed there"):
        decide(alloc(host_id="h2"), "h1", report)
    with pytest.raises(PoisonMessage, match="not placed there"):
        decide(alloc(status="pending", host_id=None), "h1", report)
    with pytest.raises(PoisonMessage, match="unknown allocation a1"):
        decide(None, "h1", report)


def test_reports_that_are_not_about_an_allocation_decide_nothing() -> None:
    assert decide(alloc(), "h1", EngineStatus(available=False, detail="socket gone")) is None


# --- a host's account of everything it runs ---------------------------------------------------


def account(*containers: ContainerStatus, as_of: int = 100) -> ActualState:
    return ActualState(as_of_position=as_of, containers=list(containers))


def running(alloc_id: str) -> ContainerStatus:
    return ContainerStatus(alloc_id=alloc_id, container_id="c-" + alloc_id, running=True)


def test_the_hosts_account_starts_what_runs_and_ends_what_stopped() -> None:
    allocations = [
        alloc("a1", "placed"),  # runs: now running
        alloc("a2", "running"),  # runs, known to run: nothing
        alloc("a3", "running"),  # stopped with a code
        alloc("a4", "placed"),  # stopped, no code known
    ]
    report = account(
        running("a1"),
        running("a2"),
        ContainerStatus(alloc_id="a3", container_id="c-a3", running=False, exit_code=3),
        ContainerStatus(alloc_id="a4", container_id="c-a4", running=False),
    )
    decisions = {d.alloc_id: d for d in decide_actual_state(allocations, "h1", report)}
    assert set(decisions) == {"a1", "a3", "a4"}
    assert decisions["a1"].alloc_events == [
        AllocationRunning(alloc_id="a1", host_id="h1", container_id="c-a1")
    ]
    assert decisions["a1"].capacity_events is None
    assert decisions["a3"].alloc_events == [AllocationExited(alloc_id="a3", host_id="h1", exit_code=3)]
    assert decisions["a3"].capacity_events == freed("a3")
    assert decisions["a4"].alloc_events == [AllocationExited(alloc_id="a4", host_id="h1", exit_code=0)]
    assert all(d.expected == 3 for d in decisions.values())


def test_a_missing_container_fails_its_allocation_only_if_the_host_knew_of_it() -> None:
    known = alloc("a1", "running", placed_position=100)
    too_new = alloc("a2", "placed", placed_position=101)  # placed after the host looked
    never_placed_here = alloc("a3", "placed", placed_position=None)
    decisions = decide_actual_state([known, too_new, never_placed_here], "h1", account(as_of=100))
    assert [d.alloc_id for d in decisions] == ["a1"]
    (failed,) = decisions[0].alloc_events
    assert isinstance(failed, AllocationFailed)
    assert failed.reason == "container_missing"
    assert decisions[0].capacity_events == freed()


def test_the_account_of_one_host_says_nothing_of_other_hosts_or_ended_allocations() -> None:
    allocations = [
        alloc("a1", "running", host_id="h2"),
        alloc("a2", "exited"),
        alloc("a3", "pending", host_id=None),
    ]
    assert decide_actual_state(allocations, "h1", account()) == []
