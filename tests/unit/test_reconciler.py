"""The reconciler's decisions: what hostd starts, adopts, reports and removes after a restart.

Each rule by example first (one allocation, each combination of wanted or not
and of its container missing, running, exited or created and never started;
then duplicates), then
hypothesis over any mix of wanted allocations and containers found, against
the rules stated one by one.
"""

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from potluck.hostd.container_config import ContainerSpec
from potluck.hostd.docker_driver import ManagedContainer
from potluck.hostd.reconciler import Plan, reconcile

MiB = 1024 * 1024
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _spec(alloc_id: str) -> ContainerSpec:
    return ContainerSpec(
        allocation_id=alloc_id,
        host_id="host-1",
        image="busybox:latest",
        cpus=1.0,
        memory_bytes=64 * MiB,
        disk_bytes=256 * MiB,
        pids_limit=64,
    )


def _container(
    alloc_id: str,
    container_id: str = "",
    *,
    running: bool = True,
    started_s: float | None = 0.0,
    status: str = "",
    keeps_alive: bool = False,
) -> ManagedContainer:
    return ManagedContainer(
        container_id=container_id or f"c-{alloc_id}",
        allocation_id=alloc_id,
        status=status or ("running" if running else "exited"),
        running=running,
        exit_code=None if running else 0,
        oom_killed=False,
        started_at=None if started_s is None else T0 + timedelta(seconds=started_s),
        finished_at=None,
        keeps_alive=keeps_alive,
    )


# One allocation, each combination of desired and actual.


def test_nothing_wanted_and_nothing_found_plans_nothing() -> None:
    plan = reconcile({}, [])
    assert plan == Plan()
    assert plan.empty


def test_a_wanted_allocation_without_a_container_is_started() -> None:
    spec = _spec("a1")
    assert reconcile({"a1": spec}, []) == Plan(start=[spec])


def test_a_wanted_allocation_with_a_running_container_is_adopted_not_started() -> None:
    found = _container("a1")
    plan = reconcile({"a1": _spec("a1")}, [found])
    assert plan == Plan(adopt=[found])
    assert not plan.empty


def test_a_wanted_allocation_whose_task_exited_is_reported_not_restarted() -> None:
    exited = _container("a1", running=False)
    assert reconcile({"a1": _spec("a1")}, [exited]) == Plan(report_exited=[exited])


def test_an_interactive_allocations_stopped_container_is_started_again() -> None:
    """Its keep-alive stopped (engine restarted, machine rebooted): up until released, so its
    container runs again, with its files; not one the host drained or stopped itself."""
    stopped = _container("a1", running=False, keeps_alive=True)
    assert reconcile({"a1": _spec("a1")}, [stopped]) == Plan(restart=[stopped])
    assert reconcile({"a1": _spec("a1")}, [stopped], no_restart={"a1"}) == Plan(report_exited=[stopped])
    assert reconcile({}, [stopped]) == Plan(remove=[stopped])
    assert not Plan(restart=[stopped]).empty


def test_a_wanted_allocation_whose_container_never_started_is_reported_as_such() -> None:
    """hostd stopped between create and start: the engine says "created", with no exit code.
    That is not an exit with code 0 (the work never ran), nor something to start now."""
    created = _container("a1", running=False, started_s=None, status="created")
    plan = reconcile({"a1": _spec("a1")}, [created])
    assert plan == Plan(report_never_started=[created])
    assert not plan.empty


def test_a_created_container_no_allocation_wants_is_removed() -> None:
    created = _container("a1", running=False, started_s=None, status="created")
    assert reconcile({}, [created]) == Plan(remove=[created])


def test_a_running_container_no_allocation_wants_is_removed() -> None:
    found = _container("a1")
    assert reconcile({}, [found]) == Plan(remove=[found])


def test_an_exited_container_no_allocation_wants_is_removed_not_reported() -> None:
    exited = _container("a1", running=False)
    assert reconcile({}, [exited]) == Plan(remove=[exited])


# Two containers for one allocation.


def test_of_two_running_containers_the_older_is_kept() -> None:
    older, newer = _container("a1", "c-old", started_s=0), _container("a1", "c-new", started_s=5)
    assert reconcile({"a1": _spec("a1")}, [newer, older]) == Plan(adopt=[older], remove=[newer])


def test_a_running_container_is_kept_over_an_older_exited_one() -> None:
    exited = _container("a1", "c-exited", running=False, started_s=0)
    running = _container("a1", "c-running", started_s=5)
    assert reconcile({"a1": _spec("a1")}, [exited, running]) == Plan(adopt=[running], remove=[exited])


def test_a_container_never_started_comes_after_one_that_started() -> None:
    never = _container("a1", "c-never", running=False, started_s=None)
    started = _container("a1", "c-started", running=False, started_s=9)
    plan = reconcile({"a1": _spec("a1")}, [never, started])
    assert plan == Plan(report_exited=[started], remove=[never])


def test_duplicates_of_an_unwanted_allocation_are_all_removed() -> None:
    one, two = _container("a1", "c-1", started_s=0), _container("a1", "c-2", started_s=1)
    plan = reconcile({}, [two, one])
    assert sorted(c.container_id for c in plan.remove) == ["c-1", "c-2"]
    assert not plan.start
    assert not plan.adopt
    assert not plan.report_exited


# Kept containers: an ended allocation whose stopped container is kept for its files and logs.


def test_a_kept_allocations_stopped_container_is_neither_removed_nor_reported() -> None:
    """What is tried: a restarted hostd finds the stopped container of an allocation its snapshot
    lists as kept, and no allocation wants it. What must hold: the plan is empty (kept as it is)."""
    kept = _container("a1", running=False)
    assert reconcile({}, [kept], kept={"a1"}) == Plan()
    assert reconcile({}, [kept]) == Plan(remove=[kept])  # the same container, not kept: removed


def test_only_the_duplicates_of_a_kept_container_go() -> None:
    """What is tried: a kept allocation with two stopped containers. What must hold: the one that
    started last is removed, the other stays; a kept id with no container plans nothing."""
    first = _container("a1", "c-1", running=False, started_s=0)
    second = _container("a1", "c-2", running=False, started_s=5)
    assert reconcile({}, [second, first], kept={"a1", "a9"}) == Plan(remove=[second])


def test_starts_come_in_allocation_order() -> None:
    specs = {alloc: _spec(alloc) for alloc in ("b", "c", "a")}
    assert [s.allocation_id for s in reconcile(specs, []).start] == ["a", "b", "c"]


# Any mix, under hypothesis.

_ALLOCS = st.sampled_from(["a", "b", "c", "d", "e"])


@st.composite
def _situations(draw: st.DrawFn) -> tuple[dict[str, ContainerSpec], list[ManagedContainer]]:
    desired = {alloc: _spec(alloc) for alloc in draw(st.sets(_ALLOCS))}
    found = draw(
        st.lists(
            st.tuples(
                _ALLOCS, st.sampled_from(["running", "exited", "created"]), st.integers(0, 3), st.booleans()
            ),
            max_size=8,
        )
    )
    actual = [
        _container(
            alloc,
            f"c{i}",
            running=status == "running",
            started_s=None if status == "created" else started,
            status=status,
            keeps_alive=keeps_alive,
        )
        for i, (alloc, status, started, keeps_alive) in enumerate(found)
    ]
    return desired, actual


def _rank(c: ManagedContainer) -> tuple[bool, float]:
    """Running first, then the one that started first; a container never started last."""
    return (not c.running, c.started_at.timestamp() if c.started_at else float("inf"))


@given(_situations())
def test_every_container_found_gets_exactly_one_fate(
    situation: tuple[dict[str, ContainerSpec], list[ManagedContainer]],
) -> None:
    desired, actual = situation
    plan = reconcile(desired, actual)
    fates = [
        c.container_id
        for c in plan.adopt + plan.report_exited + plan.restart + plan.report_never_started + plan.remove
    ]
    assert sorted(fates) == sorted(c.container_id for c in actual)


@given(_situations())
def test_what_runs_afterwards_is_exactly_what_is_wanted(
    situation: tuple[dict[str, ContainerSpec], list[ManagedContainer]],
) -> None:
    desired, actual = situation
    plan = reconcile(desired, actual)
    found = {c.allocation_id for c in actual}
    # Started: wanted and nothing found, once each, in order.
    assert [s.allocation_id for s in plan.start] == sorted(set(desired) - found)
    assert all(plan_spec is desired[plan_spec.allocation_id] for plan_spec in plan.start)
    # Every wanted allocation with a container keeps exactly one: adopted if running, else
    # started again if it started and keeps alive (interactive), reported as exited if it
    # started and ran a command, as never started if it did not start.
    one_each = plan.adopt + plan.report_exited + plan.restart + plan.report_never_started
    kept = [c.allocation_id for c in one_each]
    assert sorted(kept) == sorted(set(desired) & found)
    assert all(c.running for c in plan.adopt)
    assert all(not c.running and c.started_at is not None and not c.keeps_alive for c in plan.report_exited)
    assert all(not c.running and c.started_at is not None and c.keeps_alive for c in plan.restart)
    assert all(c.status == "created" and c.started_at is None for c in plan.report_never_started)
    # An allocation nobody wants keeps nothing.
    assert all(
        c.allocation_id in desired
        for c in plan.adopt + plan.report_exited + plan.restart + plan.report_never_started
    )


@given(_situations(), st.sets(_ALLOCS))
def test_what_the_host_stopped_itself_is_never_started_again(
    situation: tuple[dict[str, ContainerSpec], list[ManagedContainer]], no_restart: set[str]
) -> None:
    """Drained, or stopped for a failure: reported as exited, whatever it ran; the rest of the
    plan is what it is without the exception."""
    desired, actual = situation
    plan, free = reconcile(desired, actual, no_restart=no_restart), reconcile(desired, actual)
    assert not {c.allocation_id for c in plan.restart} & no_restart
    moved = [c for c in free.restart if c.allocation_id in no_restart]
    assert plan.restart == [c for c in free.restart if c not in moved]
    assert sorted(c.container_id for c in plan.report_exited) == sorted(
        c.container_id for c in free.report_exited + moved
    )
    assert (plan.start, plan.adopt, plan.remove) == (free.start, free.adopt, free.remove)


@given(_situations())
def test_the_container_kept_is_the_best_one_of_its_allocation(
    situation: tuple[dict[str, ContainerSpec], list[ManagedContainer]],
) -> None:
    desired, actual = situation
    plan = reconcile(desired, actual)
    for kept in plan.adopt + plan.report_exited + plan.restart + plan.report_never_started:
        rivals = [c for c in actual if c.allocation_id == kept.allocation_id]
        assert _rank(kept) == min(_rank(c) for c in rivals)
        # A container that exited is reported only when none of its allocation runs.
        assert kept.running or not any(c.running for c in rivals)


@given(_situations())
def test_the_plan_is_empty_only_when_there_is_nothing_to_do(
    situation: tuple[dict[str, ContainerSpec], list[ManagedContainer]],
) -> None:
    desired, actual = situation
    assert reconcile(desired, actual).empty == (not desired and not actual)


@given(_situations(), st.randoms())
def test_the_order_containers_are_listed_in_does_not_change_the_decisions(
    situation: tuple[dict[str, ContainerSpec], list[ManagedContainer]], rnd: random.Random
) -> None:
    desired, actual = situation
    shuffled = list(actual)
    rnd.shuffle(shuffled)
    before, after = reconcile(desired, actual), reconcile(desired, shuffled)
    assert before.start == after.start
    for decided in ("adopt", "report_exited", "restart", "report_never_started", "remove"):
        assert [(c.allocation_id, _rank(c)) for c in getattr(before, decided)] == [
            (c.allocation_id, _rank(c)) for c in getattr(after, decided)
        ]
