"""Facts about batch jobs (streams `job-<id>`): many tasks of one spec, each task an allocation.

A job is submitted once (`JobSubmitted`, with its `JobSpec`). The allocator then
requests its tasks as allocations, a few at a time (as many as the job's
`parallelism`, its user's quota and the pool allow), each recorded on the job's
stream as `JobTaskRequested` in the transaction that requests the allocation, so
two allocator replicas can never request the same attempt twice (the job
stream's expected version orders them). An attempt is an allocation like any
other: placed by the same scheduler and fair queue, reached by `potluck ssh`,
`potluck logs` and `potluck cp`. Its allocation's request names the job, the
task's index and the attempt (AllocationRequested.job_id, task_index, attempt).

A task succeeds when an attempt exits 0. An attempt that ends otherwise is
retried (a new attempt, a new allocation) when the job asked for it
(`retry_on`, within `retries`); an attempt lost with its host (lost, left,
revoked), or stopped because its host took the machine back (a drain's grace
ran out, the member or their engine stopped it: AllocationExited.by_host), is
re-queued when `lost` is in `retry_on`, without using `retries`, at most
MAX_HOST_LOSSES times per task. The job ends with `JobCompleted`
once every task succeeded or failed for good, or with `JobCancelled` (its user
removed it, or its deadline passed): what still runs is released then.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from potluck.contracts.allocation_events import AllocationSpec
from potluck.events import Event, event_type

#: What ends an attempt without success, as `retry_on` names it: `exit` a non-zero exit code,
#: `oom` killed for memory, `lost` its host was lost, left, was revoked or took the machine
#: back from under it (a drain, a stop on the host), `failed` its host could not start it
#: or stopped it (e.g. past its disk bound).
RetryOn = Literal["exit", "oom", "lost", "failed"]
RETRY_ON: tuple[RetryOn, ...] = ("exit", "oom", "lost", "failed")
#: By default a task lost with its host is re-queued; its own failures are not retried.
DEFAULT_RETRY_ON: tuple[RetryOn, ...] = ("lost",)
#: Re-queues of one task after host losses, beyond which it fails: a task that takes down
#: every host it lands on does not go round the pool forever.
MAX_HOST_LOSSES = 3
MAX_TASKS = 10_000
MAX_RETRIES = 100
#: How long a finished task's container is kept by default, for its results and logs.
DEFAULT_KEEP_FOR_S = 3600.0
MAX_KEEP_FOR_S = 7 * 86400.0

#: Environment every task gets: its index (0 .. tasks-1) and its job's id.
TASK_INDEX_ENV = "POTLUCK_TASK_INDEX"
JOB_ID_ENV = "POTLUCK_JOB_ID"


class JobSpec(BaseModel):
    """What a job runs: `tasks` allocations of `task`, and how they are driven."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)  # see Event's

    tasks: int = Field(ge=1, le=MAX_TASKS)
    #: Each task's allocation, before its index and job id are added to its environment. Its
    #: `keep_for_s` is the job's keep_for: how long a finished task's container is kept.
    task: AllocationSpec
    #: Each attempt's lifetime once placed: an attempt still running then expires (and fails).
    lifetime_s: float = Field(gt=0)
    constraints: dict[str, str] = Field(default_factory=dict)
    #: Most attempts active (pending, placed or running) at once; None: as many as the user's
    #: quota and the pool allow.
    parallelism: int | None = Field(default=None, ge=1, le=MAX_TASKS)
    retries: int = Field(default=0, ge=0, le=MAX_RETRIES)
    retry_on: tuple[RetryOn, ...] = DEFAULT_RETRY_ON
    #: Seconds after submission by which the job must be done; then what still runs is released
    #: and the job is cancelled (`JobCancelled` by "deadline"). None: no deadline.
    deadline_s: float | None = Field(default=None, gt=0)


class JobEvent(Event):
    job_id: str


@event_type
class JobSubmitted(JobEvent):
    user: str
    spec: JobSpec


@event_type
class JobTaskRequested(JobEvent):
    """Attempt `attempt` (1, 2, ...) of task `task_index` is the allocation `alloc_id`."""

    task_index: int = Field(ge=0)
    attempt: int = Field(ge=1)
    alloc_id: str


@event_type
class JobCompleted(JobEvent):
    """Every task succeeded or failed for good: the job `succeeded` only if `failed` is 0."""

    succeeded: int = Field(ge=0)
    failed: int = Field(ge=0)


@event_type
class JobCancelled(JobEvent):
    """Ended before its tasks were all done: `by` "user:<name>" (job rm), "deadline", or "operator"
    (its user removed, UserRemoved; `reason` then says so)."""

    by: str
    reason: str = ""


def job_stream(job_id: str) -> str:
    return f"job-{job_id}"
