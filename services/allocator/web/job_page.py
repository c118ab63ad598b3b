"""What a job's page shows: its settings, its tasks counted by state, and its first tasks, each
with its state, host, exit code, attempts and latest allocation. Pure: the model in, a value out.

The page holds at most the API's first page of tasks (job_schemas.Job.shown, DEFAULT_LIMIT): a
job of many thousands is read whole with `potluck job show`, which pages through them.
"""

from dataclasses import dataclass

from potluck.allocator.job_schemas import Job, JobTask
from potluck.allocator.model import AllocatorModel
from potluck.allocator.task_standing import TASK_STATES
from potluck.allocator.web.views import cpus, size, when
from potluck.readmodels.jobs import JobState

__all__ = ["JobPage", "TaskRow", "job_view"]


@dataclass(frozen=True)
class TaskRow:
    index: int
    state: str
    host: str
    exit_code: str
    attempts: int
    duration: str
    #: Its latest attempt's allocation ("": none asked for yet).
    alloc_id: str


@dataclass(frozen=True)
class JobPage:
    job_id: str
    user: str
    state: str
    reason: str
    counts: str
    image: str
    command: str
    wants: str
    submitted: str
    ended: str
    tasks: tuple[TaskRow, ...]
    #: How many tasks the page leaves out (its first page only).
    more: int


def job_view(model: AllocatorModel, job: JobState) -> JobPage:
    """The page of `job`, as the model has it now."""
    shown = Job.shown(
        job, model.job_tallies, model.allocations.allocations, model.hosts.hosts, first_tasks=True
    )
    counted = [f"{shown.counts[s]} {s}" for s in TASK_STATES if shown.counts.get(s)]
    return JobPage(
        job_id=shown.id,
        user=shown.user,
        state=shown.state,
        reason=shown.reason or "",
        counts=", ".join(counted) or "-",
        image=shown.image,
        command=" ".join(shown.command) if shown.command else "(the image's own)",
        wants=f"{cpus(shown.cpus)} cpu, {size(shown.memory)} memory, {size(shown.disk)} disk each",
        submitted=when(shown.created_at),
        ended=when(shown.ended_at),
        tasks=tuple(_row(t) for t in shown.task_list),
        more=shown.tasks - len(shown.task_list),
    )


def _row(task: JobTask) -> TaskRow:
    return TaskRow(
        index=task.index,
        state=task.state if not task.reason else f"{task.state} ({task.reason})",
        host=task.host_name or task.host_id or "-",
        exit_code="-" if task.exit_code is None else str(task.exit_code),
        attempts=task.attempts,
        duration="-" if task.duration_s is None else f"{task.duration_s:.1f}s",
        alloc_id=task.alloc_id or "",
    )
