"""What the page "mine" shows, bounded however long a user's history (or, to an operator, the
pool's) has grown. Pure: no I/O, no clock.

The page is rendered again on every change it follows (live.py): every allocation a user ever had
would make each of those renders, and the page, grow without end. It shows what still runs or
waits and the newest finished ones, and says how many older ones it leaves out (`potluck alloc
ls` and `potluck job ls` list them all, page by page through the API).
"""

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from potluck.allocator.model import AllocatorModel
from potluck.allocator.web.views import AllocationRow, JobRow, allocation_rows, job_rows
from potluck.readmodels.allocations import AllocationState
from potluck.readmodels.jobs import JobState
from potluck.readmodels.owner_index import EARLIEST

__all__ = ["FINISHED_SHOWN", "UNFINISHED_SHOWN", "MinePage", "Newest", "mine_of", "newest", "newest_of"]

#: Finished allocations (and ended jobs) shown, the newest.
FINISHED_SHOWN = 50
#: Unfinished ones shown, the newest: all of them unless a big job's tasks wait in their thousands.
UNFINISHED_SHOWN = 500

T = TypeVar("T")


@dataclass(frozen=True)
class Newest(Generic[T]):
    shown: list[T]
    #: How many of each kind are left out (the oldest).
    unfinished_left: int
    finished_left: int


def newest(
    items: Iterable[T],
    *,
    finished: Callable[[T], bool],
    key: Callable[[T], tuple[datetime, str]],
    most_finished: int = FINISHED_SHOWN,
    most_unfinished: int = UNFINISHED_SHOWN,
) -> Newest[T]:
    """The newest `most_unfinished` of the items that are not finished and the newest
    `most_finished` of those that are (by `key`), and how many of each are left out."""
    done: list[T] = []
    going: list[T] = []
    for item in items:
        (done if finished(item) else going).append(item)
    shown_going = heapq.nlargest(most_unfinished, going, key=key)
    shown_done = heapq.nlargest(most_finished, done, key=key)
    return Newest(
        shown=shown_going + shown_done,
        unfinished_left=len(going) - len(shown_going),
        finished_left=len(done) - len(shown_done),
    )


def _requested(a: AllocationState) -> tuple[datetime, str]:
    return (a.requested_at or EARLIEST, a.alloc_id)


def _submitted(j: JobState) -> tuple[datetime, str]:
    return (j.submitted_at, j.job_id)


@dataclass(frozen=True)
class MinePage:
    rows: tuple[AllocationRow, ...]
    #: Every allocation counted, shown or not; and those left out, finished and not.
    allocations_total: int
    allocations_finished_left: int
    allocations_unfinished_left: int
    jobs: tuple[JobRow, ...]
    jobs_total: int
    jobs_finished_left: int
    jobs_unfinished_left: int


def newest_of(model: AllocatorModel, user: str | None) -> Newest[AllocationState]:
    """`newest` of the user's allocations (with `user` None, of everyone's), found without a look
    at each of them: the unfinished ones are what is held (AllocationsView.held_by, or the pending
    and active indexes), and the newest finished ones are met first walking the allocations from
    the newest. A render then costs what runs and what the page shows, however many tasks of past
    jobs are behind them."""
    view = model.allocations
    if user is None:
        going = [*view.pending(), *view.active()]
        from_newest = view.by_user.everyones_newest_first()
        total = len(view.allocations)
    else:
        going = view.held_by(user)
        from_newest = view.by_user.newest_first(user)
        total = view.by_user.count(user)
    shown_going = heapq.nlargest(UNFINISHED_SHOWN, going, key=_requested)
    shown_done: list[AllocationState] = []
    for alloc_id in from_newest:
        state = view.allocations[alloc_id]
        if state.terminal:
            shown_done.append(state)
            if len(shown_done) == FINISHED_SHOWN:
                break
    done = total - len(going)
    return Newest(
        shown=shown_going + shown_done,
        unfinished_left=len(going) - len(shown_going),
        finished_left=done - len(shown_done),
    )


def mine_of(model: AllocatorModel, user: str | None) -> MinePage:
    """The user's allocations and jobs, or with `user` None (an operator) every user's."""
    shown = newest_of(model, user)
    if user is None:
        allocations_total = len(model.allocations.allocations)
        jobs: list[JobState] = list(model.jobs.jobs.values())
    else:
        allocations_total = model.allocations.by_user.count(user)
        jobs = model.jobs.of_user(user)
    shown_jobs = newest(jobs, finished=lambda j: j.terminal, key=_submitted)
    return MinePage(
        rows=allocation_rows(model, shown.shown),
        allocations_total=allocations_total,
        allocations_finished_left=shown.finished_left,
        allocations_unfinished_left=shown.unfinished_left,
        jobs=job_rows(shown_jobs.shown),
        jobs_total=len(jobs),
        jobs_finished_left=shown_jobs.finished_left,
        jobs_unfinished_left=shown_jobs.unfinished_left,
    )
