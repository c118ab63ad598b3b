"""Each user's allocations and jobs as the read models index them (readmodels/owner_index.py).

What must hold: after any sequence of events, in any order of their times, the index lists
exactly what the plain scan of every row finds for each user, in the same order (oldest request
first, ties by id), and a view built from its rows alone indexes the same; walking the pages,
whatever their size and filter, gives each of the user's rows that pass the filter exactly once,
in that order; and a cursor is one of the user's own rows only.
"""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from potluck.allocator.model import AllocatorModel
from potluck.contracts.allocation_events import (
    AllocationPlaced,
    AllocationReleased,
    AllocationRequested,
    AllocationRunning,
    AllocationSpec,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.job_events import JobSpec, JobSubmitted
from potluck.events import Event
from potluck.readmodels.allocations import AllocationState, AllocationsView
from potluck.readmodels.jobs import JobsView
from potluck.readmodels.owner_index import EARLIEST, OwnerIndex

T0 = datetime(2026, 1, 1, tzinfo=UTC)
USERS = ("alice", "bob", "carol")
SPEC = AllocationSpec(
    resources=Capacity(cpus=1.0, memory_bytes=1 << 30, disk_bytes=1 << 30), image="potluck-test:1"
)
JOB = JobSpec(tasks=1, task=SPEC, lifetime_s=60.0)

#: (what, which allocation, whose, minutes from T0): times go back and forth, as clocks may.
steps = st.lists(
    st.tuples(
        st.sampled_from(("request", "place", "run", "release")),
        st.integers(0, 9),
        st.sampled_from(USERS),
        st.integers(-3, 3),
    ),
    max_size=60,
)


def _event(what: str, alloc_id: str, user: str) -> Event:
    match what:
        case "request":
            return AllocationRequested(alloc_id=alloc_id, user=user, spec=SPEC, lifetime_s=60.0)
        case "place":
            return AllocationPlaced(
                alloc_id=alloc_id, host_id="h1", user=user, spec=SPEC, expires_at=T0 + timedelta(hours=1)
            )
        case "run":
            return AllocationRunning(alloc_id=alloc_id, host_id="h1", container_id="c1")
        case _:
            return AllocationReleased(alloc_id=alloc_id, by=f"user:{user}")


def _folded(plan: list[tuple[str, int, str, int]]) -> AllocationsView:
    view = AllocationsView()
    for position, (what, n, user, minutes) in enumerate(plan, start=1):
        view.apply(
            _event(what, f"a{n}", user),
            position=position,
            version=position,
            at=T0 + timedelta(minutes=minutes),
        )
    return view


def _scan(view: AllocationsView, user: str, status: str | None = None) -> list[str]:
    """What the list was before the index: every allocation looked at, the user's sorted."""
    found = [
        a for a in view.allocations.values() if a.user == user and (status is None or a.status == status)
    ]
    return [a.alloc_id for a in sorted(found, key=lambda a: (a.requested_at or EARLIEST, a.alloc_id))]


def _walk(index: OwnerIndex, user: str, limit: int, keep: Callable[[str], bool]) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        ids, after = index.page(user, after, limit, keep)
        assert len(ids) <= limit
        seen += ids
        if after is None:
            return seen
        assert after == ids[-1]
        assert len(ids) == limit


@given(steps)
def test_the_index_agrees_with_the_plain_scan(plan: list[tuple[str, int, str, int]]) -> None:
    """Tried: random requests, placements without request (another user may take an id over),
    runs and releases at times out of order. Must hold: each user's ids in the index are the
    plain scan's, in its order, and so are those of a view built from the rows alone."""
    view = _folded(plan)
    rebuilt = AllocationsView(allocations=dict(view.allocations))
    for user in USERS:
        assert list(view.by_user.ids(user)) == _scan(view, user)
        assert list(rebuilt.by_user.ids(user)) == _scan(view, user)
    assert sum(len(list(view.by_user.ids(u))) for u in USERS) == len(view.allocations)


@given(steps, st.integers(1, 4), st.sampled_from((None, "pending", "placed", "running", "released")))
def test_walking_the_pages_shows_each_allocation_once_in_order(
    plan: list[tuple[str, int, str, int]], limit: int, status: str | None
) -> None:
    """Tried: the model's pages of every size from 1 to 4, with and without a state. Must hold:
    together they are the plain scan's list, the user's allocations only."""
    view = _folded(plan)
    model = AllocatorModel(allocations=view)
    for user in USERS:
        assert [a.alloc_id for a in model.allocations_of(user, status)] == _scan(view, user, status)
        pages: list[AllocationState] = []
        after = None
        while True:
            page, after = model.allocations_page(user, status, after, limit)
            pages += page
            if after is None:
                break
        assert [a.alloc_id for a in pages] == _scan(view, user, status)
        assert all(a.user == user for a in pages)


@given(steps)
def test_a_cursor_is_one_of_the_users_own_rows(plan: list[tuple[str, int, str, int]]) -> None:
    """Tried: every id, one that never was. Must hold: `owns` only for the user's own."""
    view = _folded(plan)
    for user in USERS:
        for n in range(10):
            alloc = view.allocations.get(f"a{n}")
            assert view.by_user.owns(user, f"a{n}") == (alloc is not None and alloc.user == user)
        assert not view.by_user.owns(user, "never-was")


def test_rows_added_meanwhile_come_on_later_pages() -> None:
    """Tried: a walk of two-row pages while allocations are requested between pages. Must hold:
    every allocation requested before the walk is seen exactly once, the new ones after them."""
    view = _folded([("request", n, "alice", 0) for n in range(5)])
    seen, after, position = [], None, 100
    while True:
        ids, after = view.by_user.page("alice", after, 2)
        seen += ids
        position += 1
        view.apply(
            AllocationRequested(alloc_id=f"new{position}", user="alice", spec=SPEC, lifetime_s=60.0),
            position=position,
            version=1,
            at=T0 + timedelta(minutes=position),
        )
        if after is None:
            break
    assert seen[:5] == [f"a{n}" for n in range(5)]
    assert len(seen) == len(set(seen))
    assert all(s.startswith("new") for s in seen[5:])


@given(
    st.lists(
        st.tuples(st.integers(0, 9), st.sampled_from(USERS), st.integers(-3, 3), st.integers(1, 3)),
        max_size=40,
    ),
    st.integers(1, 4),
)
def test_the_jobs_index_agrees_with_the_plain_scan(plan: list[tuple[int, str, int, int]], limit: int) -> None:
    """Tried: jobs submitted at times out of order, some ids twice. Must hold: each user's jobs
    in the index, and walked page by page, are the plain scan's, in its order."""
    view = JobsView()
    for n, user, minutes, version in plan:
        view.apply(
            JobSubmitted(job_id=f"j{n}", user=user, spec=JOB),
            version=version,
            at=T0 + timedelta(minutes=minutes),
        )
    rebuilt = JobsView(jobs=dict(view.jobs))
    for user in USERS:
        scan = [
            j.job_id
            for j in sorted(view.jobs.values(), key=lambda j: (j.submitted_at, j.job_id))
            if j.user == user
        ]
        assert [j.job_id for j in view.of_user(user)] == scan
        assert list(rebuilt.by_user.ids(user)) == scan
        assert _walk(view.by_user, user, limit, lambda _: True) == scan
