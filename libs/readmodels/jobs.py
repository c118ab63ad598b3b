"""Pure fold of job events (streams `job-<id>`) into job state.

A job's own stream says what was submitted, which allocation is which
attempt of which task, and how the job ended. How each attempt went is the
allocation's own state (allocations.py), looked up by its id: the job holds
only the ids, so nothing is recorded twice.

Lifecycle: running -> succeeded | failed (JobCompleted) | cancelled (JobCancelled).
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from immutables import Map

from potluck.contracts.job_events import (
    JobCancelled,
    JobCompleted,
    JobEvent,
    JobSpec,
    JobSubmitted,
    JobTaskRequested,
)
from potluck.events import Event
from potluck.kernel.records import changed
from potluck.readmodels.owner_index import OwnerIndex

__all__ = ["JOB_TERMINAL", "JobState", "JobStatus", "JobsView", "evolve"]

JobStatus = Literal["running", "succeeded", "failed", "cancelled"]
JOB_TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class JobState:
    job_id: str
    user: str
    spec: JobSpec
    submitted_at: datetime
    status: JobStatus = "running"
    #: Each task's attempts, oldest first, as allocation ids (a task not requested yet is absent).
    #: A persistent map: each request's new state shares all but one entry with the last one,
    #: where a dict copy per request made folding a job quadratic in its tasks.
    attempts: Map[int, tuple[str, ...]] = field(default_factory=Map)
    #: Set by JobCompleted.
    succeeded: int = 0
    failed: int = 0
    #: Set by JobCancelled.
    cancelled_by: str | None = None
    reason: str | None = None
    ended_at: datetime | None = None
    version: int = 0
    changed_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.status in JOB_TERMINAL

    @property
    def deadline(self) -> datetime | None:
        if self.spec.deadline_s is None:
            return None
        return self.submitted_at + timedelta(seconds=self.spec.deadline_s)

    def latest(self, task_index: int) -> str | None:
        """The allocation of the task's latest attempt; None: never requested."""
        tried = self.attempts.get(task_index)
        return tried[-1] if tried else None

    def alloc_ids(self) -> list[str]:
        """Every attempt's allocation, by task, oldest attempt first."""
        return [a for index in sorted(self.attempts) for a in self.attempts[index]]


def evolve(state: JobState | None, event: Event, version: int, at: datetime) -> JobState | None:
    if not isinstance(event, JobEvent):
        return state
    if isinstance(event, JobSubmitted):
        return JobState(
            job_id=event.job_id,
            user=event.user,
            spec=event.spec,
            submitted_at=at,
            version=version,
            changed_at=at,
        )
    if state is None:
        return None
    state = changed(state, version=version, changed_at=at)
    match event:
        case JobTaskRequested():
            tried = state.attempts.get(event.task_index, ())
            if event.alloc_id in tried:
                return state
            return changed(state, attempts=state.attempts.set(event.task_index, (*tried, event.alloc_id)))
        case JobCompleted():
            if state.terminal:
                return state
            return changed(
                state,
                status="failed" if event.failed else "succeeded",
                succeeded=event.succeeded,
                failed=event.failed,
                ended_at=at,
            )
        case JobCancelled():
            if state.terminal:
                return state
            return changed(state, status="cancelled", cancelled_by=event.by, reason=event.reason, ended_at=at)
    return state


@dataclass
class JobsView:
    jobs: dict[str, JobState] = field(default_factory=dict)
    #: Which job and task each attempt's allocation belongs to.
    task_of: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: Each user's jobs, oldest first (owner_index.py): follows from `jobs`.
    by_user: OwnerIndex = field(default_factory=OwnerIndex, compare=False, repr=False)
    #: Each user's jobs not finished (running): follows from `jobs`, so that the allocator's
    #: cap on them costs what the user runs, not every job they ever submitted.
    unfinished_ids: dict[str, set[str]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for j in self.jobs.values():
            self.by_user.put(j.user, j.submitted_at, j.job_id)
            self._index(j)

    def _index(self, job: JobState) -> None:
        if not job.terminal:
            self.unfinished_ids.setdefault(job.user, set()).add(job.job_id)
        elif (unfinished := self.unfinished_ids.get(job.user)) is not None:
            unfinished.discard(job.job_id)
            if not unfinished:
                del self.unfinished_ids[job.user]

    def apply(self, event: Event, *, version: int, at: datetime) -> JobState | None:
        if not isinstance(event, JobEvent):
            return None
        current = self.jobs.get(event.job_id)
        if current is not None and version <= current.version:
            return None  # folded already
        new = evolve(current, event, version, at)
        if new is None:
            return None
        self.jobs[event.job_id] = new
        self.by_user.put(new.user, new.submitted_at, new.job_id)
        self._index(new)
        if isinstance(event, JobTaskRequested):
            self.task_of[event.alloc_id] = (event.job_id, event.task_index)
        return new

    def forget(self, job_id: str) -> JobState | None:
        """Drop an ended job from the view (retention.py decides which, and when), with the
        index of its attempts; None when the view does not hold it."""
        job = self.jobs.get(job_id)
        if job is None:
            return None
        assert job.terminal, f"job {job_id} is {job.status}: never dropped"
        del self.jobs[job_id]
        self.by_user.remove(job_id)
        for alloc_id in job.alloc_ids():
            if self.task_of.get(alloc_id, (None,))[0] == job_id:
                del self.task_of[alloc_id]
        return job

    def of_user(self, user: str) -> list[JobState]:
        """The user's jobs, oldest first."""
        return [self.jobs[job_id] for job_id in self.by_user.ids(user)]

    def unfinished_of(self, user: str) -> set[str]:
        """The ids of the user's jobs not finished yet (a copy)."""
        return set(self.unfinished_ids.get(user, ()))

    @classmethod
    def rebuild(cls, events: Iterable[tuple[Event, int, datetime]]) -> "JobsView":
        view = cls()
        for event, version, at in events:
            view.apply(event, version=version, at=at)
        return view
