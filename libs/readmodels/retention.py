"""How long an ended allocation or job stays in a read model: the retention window. Pure.

The allocator's model (services/allocator/model.py) and the gateway's view
(services/sshgateway/projection.py) both fold every allocation; both let go of what ended
by the rules here.

Without it every allocation and job ever made stayed in the model for the allocator's life
(and in every replica's, and in what `potluck ops replay` folds): about 4 KB an allocation,
40 MB per 10,000 released (measured with tracemalloc over the fold alone), so a script that
creates and releases all day grew the allocator without end. Quotas and the change rate bound
what a user holds at once and how fast the model grows, never how big it gets.

An allocation leaves the model once it has been ended, with no stopped container kept on its
host, for longer than `retention_s`; a job's attempts leave with their job, once the job has
ended and none of its attempts is still running or keeping a container. Nothing pending, active
or kept is ever dropped: what counts against a quota, holds capacity or is in a host's snapshot
is never among what leaves, so quotas, rates and placement do not change.

"Longer than" is judged on the log's clock, never this machine's: the clock is the latest
`recorded_at` of the events the model has folded (a high-water mark, as the commit order of
concurrent appends need not be the order of their times). The fold so stays a pure function of
the events: every replica, a restart, a resume from a checkpoint and `potluck ops replay` drop
the same rows at the same position. A quiet log drops nothing until its next event, which costs
nothing: a quiet log does not grow either.

The default, 24 hours: a user who looks at yesterday's work (`potluck list`, the web page, a
script polling what ended overnight) still finds it listed. What the model holds is then
bounded by what ends in a day, not by the pool's age: at the change rate a user may keep up
(5 a second, a create and a release each, so 2.5 allocations a second) that is 216,000
allocations a day, about 0.9 GB, per user who keeps it up all day; a pool whose scripts churn
that hard lowers the window (`--retention`, POTLUCK_ALLOCATOR_RETENTION). What leaves is not
lost: the log keeps it, and `GET /v1/allocations/{id}` of one no longer held answers from its
own stream (stored.py).

A row ended but still kept (a stopped container kept for its results, a job with an attempt
not over) is looked at again one window later, and leaves at the first look that finds it
free to go.
"""

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from potluck.readmodels.allocations import AllocationsView

__all__ = ["DEFAULT_RETENTION_S", "Retirement", "RowKind", "retire_ended"]

#: 24 hours: see the module docstring.
DEFAULT_RETENTION_S = 24 * 3600.0

RowKind = Literal["alloc", "job"]


@dataclass
class Retirement:
    """What ended, in the order it ended on the log's clock, to be looked at again once the
    retention window has passed; and that clock."""

    retention_s: float = DEFAULT_RETENTION_S
    #: The log's clock as folded: the latest `recorded_at` seen (None: nothing folded yet).
    clock: datetime | None = None
    #: (since, kind, id), oldest first: since when the row has been ended, on the log's clock.
    waiting: deque[tuple[datetime, RowKind, str]] = field(default_factory=deque)
    #: How many allocations and jobs left the model so far (for its log line and gauges).
    allocations_retired: int = 0
    jobs_retired: int = 0

    def __post_init__(self) -> None:
        # Zero would look at a row put back (`ended` again) in the very pass that put it back.
        if not self.retention_s > 0:
            raise ValueError(f"the retention window must be more than 0 seconds, not {self.retention_s}")

    def tick(self, at: datetime) -> None:
        """An event recorded `at` was folded: the log's clock moves on, never back."""
        if self.clock is None or at > self.clock:
            self.clock = at

    def ended(self, kind: RowKind, row_id: str) -> None:
        """The row has ended (or, looked at, could not leave yet): looked at again after the window."""
        assert self.clock is not None, "a row ends at an event, which ticks the clock first"
        self.waiting.append((self.clock, kind, row_id))

    def due(self) -> Iterator[tuple[RowKind, str]]:
        """The rows ended longer than the window ago, taken off the queue as they are handed out."""
        if self.clock is None:
            return
        window = timedelta(seconds=self.retention_s)
        while self.waiting and self.waiting[0][0] + window <= self.clock:
            _, kind, row_id = self.waiting.popleft()
            yield kind, row_id


def retire_ended(view: AllocationsView, retirement: Retirement) -> int:
    """Drop from a view of allocations alone (no jobs: the gateway's) those ended longer than the
    window ago; one still keeping its container waits another window. How many left."""
    left = 0
    for kind, alloc_id in retirement.due():
        state = view.allocations.get(alloc_id)
        if kind != "alloc" or state is None or not state.terminal:
            continue  # gone already, or live again since it ended (see AllocatorModel._retire)
        if state.kept:
            retirement.ended("alloc", alloc_id)
            continue
        view.forget(alloc_id)
        left += 1
    retirement.allocations_retired += left
    return left
