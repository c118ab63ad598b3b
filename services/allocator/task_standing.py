"""Where each task of a batch job stands, and a job's tasks counted by state as the log is folded. Pure.

A task's standing (`standing`) is read from its latest attempt's allocation and the job's
retry settings: `waiting` not requested yet, then its latest attempt's allocation state,
`retrying`, or final (`succeeded`, `failed`, `cancelled`).

Answering "how many tasks of this job are in each state" by asking every task costs the
job's tasks: 110 ms of the allocator's event loop for a job of 10,000 (an audit, with the
1.78 MB answer that listed them all). `JobTallies` keeps the answer instead, as the
allocator's model folds the log (model.py): an event of a job's attempt moves that one task
from its old state to its new one, and a job's own change of status looks again only at its
tasks not final yet (a cancellation turns `retrying` into `cancelled`). A task's state is
kept in one byte of the job's `states`, so a page of the tasks in one state (`page`) is
found with `bytearray.find`, not by asking each task. Tasks not requested yet take no byte:
first attempts are requested in index order, and those past the bytes are counted as
`waiting` (or `cancelled`, once the job is) without being looked at.

The checkpoint of the allocator's model holds the tallies (a class of this module), so a
change to the rules of `standing` here makes old checkpoints stale by itself.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, get_args

from potluck.contracts.job_events import MAX_HOST_LOSSES, JobSpec
from potluck.readmodels.allocations import AllocationState
from potluck.readmodels.jobs import JobState

__all__ = [
    "ACTIVE_TASK",
    "FINAL_TASK",
    "MAX_RETRY_PAUSE_S",
    "RETRY_PAUSE_S",
    "TASK_STATES",
    "Ended",
    "JobTallies",
    "JobTally",
    "Standing",
    "TaskState",
    "ended_as",
    "retried",
    "retry_due",
    "retry_pause",
    "standing",
]

#: A task as `job show` counts it: `waiting` not requested yet (parallelism, quota), then its
#: latest attempt's allocation state, `succeeded` (exit 0) or `failed` for good; `retrying`
#: its latest attempt ended and another is requested once its pause is over (retry_pause);
#: `cancelled` the job ended first.
TaskState = Literal[
    "waiting", "pending", "placed", "pulling", "running", "retrying", "succeeded", "failed", "cancelled"
]
TASK_STATES: tuple[TaskState, ...] = get_args(TaskState)
ACTIVE_TASK: frozenset[str] = frozenset({"pending", "placed", "pulling", "running"})
FINAL_TASK: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

#: The pause between a task's attempt that failed and its retry: RETRY_PAUSE_S after its first
#: failure, doubled with each one after, at most MAX_RETRY_PAUSE_S. Without it a task that fails
#: at once (a typo in its command, an image that cannot be pulled) went round the pool as fast
#: as a host could start it: 21 attempts in 40 s on one laptop, six events each, and a job of
#: MAX_TASKS tasks with MAX_RETRIES retries could append millions of events in a few hours and
#: keep the fair queue full of requests that fail again. A loss with the host is not the
#: task's doing and is re-queued at once (MAX_HOST_LOSSES bounds those).
RETRY_PAUSE_S = 1.0
MAX_RETRY_PAUSE_S = 60.0

#: How an attempt ended: the `retry_on` kinds, `succeeded` (exit 0), `released` (on request).
Ended = Literal["exit", "oom", "failed", "lost", "succeeded", "released"]


def ended_as(state: AllocationState) -> Ended | None:
    """How the attempt ended; None while it has not."""
    match state.status:
        case "exited":
            if state.exited_by_host:
                return "lost"  # its host took the machine back: re-queued as a loss is
            if state.oom_killed:
                return "oom"
            return "succeeded" if state.exit_code == 0 else "exit"
        case "failed" | "refused" | "expired":
            return "failed"
        case "lost":
            return "lost"
        case "released":
            return "released"
    return None


def retried(spec: JobSpec, endings: Sequence[Ended]) -> bool:
    """Whether a task whose attempts ended as `endings` (oldest first) gets another attempt.

    A loss with the host does not use `retries` but is re-queued at most MAX_HOST_LOSSES times;
    every other kind uses one of `retries`."""
    last = endings[-1]
    if last in ("succeeded", "released") or last not in spec.retry_on:
        return False
    if last == "lost":
        return endings.count("lost") <= MAX_HOST_LOSSES
    return sum(1 for e in endings if e != "lost") <= spec.retries


def retry_pause(endings: Sequence[Ended]) -> float:
    """Seconds from the end of a task's latest attempt, its attempts having ended as `endings`
    (oldest first), until its retry may be requested: none after a loss with its host."""
    if endings[-1] == "lost":
        return 0.0
    failures = sum(1 for e in endings if e != "lost")
    return min(RETRY_PAUSE_S * 2.0 ** min(failures - 1, 32), MAX_RETRY_PAUSE_S)


def retry_due(job: JobState, index: int, allocations: Mapping[str, AllocationState]) -> datetime | None:
    """When task `index`, `retrying`, may have its next attempt requested (retry_pause after its
    latest attempt ended); None: at once."""
    tried = job.attempts.get(index, ())
    latest = allocations.get(tried[-1]) if tried else None
    if latest is None or latest.ended_at is None:
        return None
    endings = [e for e in (_ended(allocations.get(a)) for a in tried) if e is not None]
    pause = retry_pause(endings) if endings else 0.0
    return latest.ended_at + timedelta(seconds=pause) if pause else None


@dataclass(frozen=True)
class Standing:
    state: TaskState
    #: Attempts requested so far.
    attempts: int
    #: Its latest attempt's allocation (None: not requested, or not folded yet).
    latest: AllocationState | None


def standing(job: JobState, index: int, allocations: Mapping[str, AllocationState]) -> Standing:
    """Where task `index` stands, from its attempts' allocations and the job's retry settings."""
    tried = job.attempts.get(index, ())
    cancelled = job.status == "cancelled"
    if not tried:
        return Standing("cancelled" if cancelled else "waiting", 0, None)
    latest = allocations.get(tried[-1])
    if latest is None:
        # Requested in a transaction whose allocation event is not folded yet.
        return Standing("pending", len(tried), None)
    if not latest.terminal:
        return Standing(latest.status, len(tried), latest)  # type: ignore[arg-type]
    endings = [e for e in (_ended(allocations.get(a)) for a in tried) if e is not None]
    last = endings[-1]
    if last == "succeeded":
        return Standing("succeeded", len(tried), latest)
    if last == "released":
        return Standing("cancelled", len(tried), latest)
    if retried(job.spec, endings):
        return Standing("cancelled" if cancelled else "retrying", len(tried), latest)
    return Standing("failed", len(tried), latest)


def _ended(state: AllocationState | None) -> Ended | None:
    return None if state is None else ended_as(state)


# --- a job's tasks counted by state, as the log is folded ----------------------------------------

#: Each state's byte in JobTally.states; 0 is a task not requested yet.
_CODE: dict[str, int] = {state: code for code, state in enumerate(TASK_STATES, start=1)}
_STATE: dict[int, TaskState] = dict(enumerate(TASK_STATES, start=1))


def _unrequested(job: JobState) -> TaskState:
    """How a task not requested yet stands: it waits, or its job was cancelled first."""
    return "cancelled" if job.status == "cancelled" else "waiting"


@dataclass
class JobTally:
    """One job's requested tasks by state. Plain dicts, sets and bytes: a checkpoint
    (potluck.events.checkpoints) names only the classes it allows, and pickles these natively."""

    #: Each requested task's state, a byte per task by index (0: not requested yet); as long as
    #: the highest index requested.
    states: bytearray = field(default_factory=bytearray)
    #: The requested tasks in each state (no zeros).
    counts: dict[str, int] = field(default_factory=dict)
    #: The requested tasks not final: those a change of the job's own status may move.
    open: set[int] = field(default_factory=set)

    def __getstate__(self) -> dict[str, object]:
        # The states as bytes: pickle's protocols before 5 name `builtins.bytearray`, which a
        # checkpoint's unpickler refuses (it could be asked for any size without the data).
        return {**vars(self), "states": bytes(self.states)}

    def __setstate__(self, state: dict[str, object]) -> None:
        vars(self).update(state)
        self.states = bytearray(self.states)

    def state_of(self, index: int) -> TaskState | None:
        """The requested task's state; None when it is not requested yet."""
        code = self.states[index] if index < len(self.states) else 0
        return _STATE.get(code)

    def put(self, index: int, state: TaskState) -> None:
        """Task `index` is requested and stands at `state` now."""
        if index >= len(self.states):
            self.states.extend(bytes(index + 1 - len(self.states)))
        old = _STATE.get(self.states[index])
        if old == state:
            return
        if old is not None:
            left = self.counts[old] - 1
            if left:
                self.counts[old] = left
            else:
                del self.counts[old]
        self.counts[state] = self.counts.get(state, 0) + 1
        self.states[index] = _CODE[state]
        if state in FINAL_TASK:
            self.open.discard(index)
        else:
            self.open.add(index)


@dataclass
class JobTallies:
    """Every job's tally, kept by the allocator's model as it folds jobs' and attempts' events."""

    tallies: dict[str, JobTally] = field(default_factory=dict)

    def task_changed(self, job: JobState, index: int, allocations: Mapping[str, AllocationState]) -> None:
        """After an event of the job's task `index` (its request, one of its attempts')."""
        if index in job.attempts:
            tally = self.tallies.setdefault(job.job_id, JobTally())
            tally.put(index, standing(job, index, allocations).state)

    def job_changed(self, job: JobState, allocations: Mapping[str, AllocationState]) -> None:
        """After an event of the job's own (submitted, completed, cancelled): its open tasks
        looked at again."""
        tally = self.tallies.get(job.job_id)
        if tally is None:
            return
        for index in sorted(tally.open):
            tally.put(index, standing(job, index, allocations).state)

    def open_of(self, job_id: str) -> set[int]:
        """The job's requested tasks not final (a copy): any attempt still open is one of theirs."""
        tally = self.tallies.get(job_id)
        return set(tally.open) if tally is not None else set()

    def counts(self, job: JobState) -> dict[TaskState, int]:
        """The job's tasks by state, those not requested yet among them (no zeros), in the order
        of TaskState."""
        tally = self.tallies.get(job.job_id)
        found: dict[str, int] = dict(tally.counts) if tally is not None else {}
        requested = sum(found.values())
        if requested < job.spec.tasks:
            unrequested = _unrequested(job)
            found[unrequested] = found.get(unrequested, 0) + job.spec.tasks - requested
        return {state: found[state] for state in TASK_STATES if state in found}

    def state_of(self, job: JobState, index: int) -> TaskState:
        """Task `index`'s state as the tally has it (the same as `standing`'s)."""
        tally = self.tallies.get(job.job_id)
        found = tally.state_of(index) if tally is not None else None
        return found if found is not None else _unrequested(job)

    def page(
        self, job: JobState, after: int | None, limit: int, state: TaskState | None = None
    ) -> tuple[list[int], int | None]:
        """Up to `limit` task indices of the job (in `state`, when given) after task `after`
        (None: from the first), by index; and the `after` of the next page (None: the last).
        Costs the page, not the job: states are found a byte at a time in C (`bytearray.find`)."""
        assert limit >= 1, "a page holds at least one row"
        start = 0 if after is None else after + 1
        tasks = job.spec.tasks
        tally = self.tallies.get(job.job_id)
        states = tally.states if tally is not None else bytearray()
        if state is None:
            end = min(start + limit, tasks)
            found = list(range(start, end))
            return found, (found[-1] if end < tasks and found else None)
        unrequested = state == _unrequested(job)
        # Where each wanted byte is next (-1: nowhere); 0 is a task below the highest requested
        # that is not requested yet.
        codes = (_CODE[state], 0) if unrequested else (_CODE[state],)
        following = {code: states.find(code, start) for code in codes}
        found = []
        # One more than the page: whether another page follows.
        while len(found) <= limit:
            hits = [at for at in following.values() if at >= 0]
            if not hits:
                break
            hit = min(hits)
            found.append(hit)
            for code, at in following.items():
                if at == hit:
                    following[code] = states.find(code, hit + 1)
        if unrequested:
            first = max(start, len(states))
            found.extend(range(first, min(tasks, first + limit + 1 - len(found))))
        if len(found) > limit:
            return found[:limit], found[limit - 1]
        return found, None
