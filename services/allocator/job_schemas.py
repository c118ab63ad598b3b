"""The HTTP API's bodies for batch jobs (`/v1/jobs`); their JSON schemas feed /v1/openapi.json."""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from potluck.allocator.schemas import (
    ENV_NAME,
    LABEL_NAME,
    Body,
    Disk,
    ImageReference,
    Lifetime,
    Memory,
    Request,
    SshKey,
    Text,
    _names_match,
)
from potluck.contracts.capacity import MIN_CPUS
from potluck.contracts.job_events import (
    DEFAULT_KEEP_FOR_S,
    DEFAULT_RETRY_ON,
    MAX_KEEP_FOR_S,
    MAX_RETRIES,
    MAX_TASKS,
    RetryOn,
)
from potluck.kernel.durations import DurationBetween
from potluck.readmodels.jobs import JobStatus

__all__ = ["CreateJob", "Job", "JobList", "JobTask", "TaskState"]

KeepFor = Annotated[float, DurationBetween(0, MAX_KEEP_FOR_S)]
Deadline = Annotated[float, DurationBetween(0, 30 * 86400, exclusive_lo=True)]

#: A task as `job show` counts it: `waiting` not requested yet (parallelism, quota), then its
#: latest attempt's allocation state, `succeeded` (exit 0) or `failed` for good; `retrying`
#: its latest attempt ended and another is about to be requested; `cancelled` the job ended first.
TaskState = Literal[
    "waiting", "pending", "placed", "pulling", "running", "retrying", "succeeded", "failed", "cancelled"
]


class CreateJob(Request):
    tasks: int = Field(
        ge=1, le=MAX_TASKS, description="How many tasks: each gets POTLUCK_TASK_INDEX 0..tasks-1."
    )
    cpus: float = Field(ge=MIN_CPUS, le=256, description="CPU cores of each task.")
    memory: Memory = Field(description="Memory of each task: bytes, or e.g. 512M, 4G.")
    disk: Disk = Field(default=1 << 30, description="Writable disk of each task: bytes, or e.g. 1G.")
    image: ImageReference = Field(description="The image each task runs.")
    command: list[Text] | None = Field(
        default=None, max_length=256, description="Each task's command (the image's own when absent)."
    )
    env: Annotated[
        dict[str, Text],
        AfterValidator(_names_match(ENV_NAME, "environment variable name")),
        Field(json_schema_extra={"propertyNames": {"pattern": ENV_NAME}}),
    ] = Field(default_factory=dict, max_length=128)
    ssh_keys: list[SshKey] = Field(
        default_factory=list, max_length=16, description="OpenSSH public keys, to reach a task with ssh."
    )
    constraints: Annotated[
        dict[str, Text],
        AfterValidator(_names_match(LABEL_NAME, "label name")),
        Field(json_schema_extra={"propertyNames": {"pattern": LABEL_NAME}}),
    ] = Field(default_factory=dict, max_length=16, description="Host labels that must match.")
    network: bool = Field(default=False, description="Outbound network, where the member allows it.")
    lifetime: Lifetime = Field(
        default=3600.0, description="Each attempt's lifetime once placed: seconds, or e.g. 2h."
    )
    parallelism: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TASKS,
        description="Most tasks active at once; absent: as many as your quota and the pool allow.",
    )
    retries: int = Field(
        default=0, ge=0, le=MAX_RETRIES, description="Retries of a task that ends as `retry_on` names."
    )
    retry_on: list[RetryOn] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_ON),
        max_length=4,
        description=(
            "What is retried: `exit` (non-zero exit), `oom`, `failed` (its host could not run it), "
            "`lost` (its host was lost: re-queued without using `retries`, at most 3 times)."
        ),
    )
    deadline: Deadline | None = Field(
        default=None,
        description="The job is cancelled if not done this long after submission: seconds, or e.g. 6h.",
    )
    keep_for: KeepFor = Field(
        default=DEFAULT_KEEP_FOR_S,
        description="How long a finished task's container is kept for `potluck cp` and `potluck logs`.",
    )


class JobTask(Body):
    index: int
    state: TaskState
    alloc_id: str | None = Field(description="Its latest attempt's allocation (null: not requested yet).")
    host_id: str | None
    attempts: int
    exit_code: int | None
    reason: str | None = Field(description="Why its latest attempt ended, when it did not exit 0.")
    started_at: datetime | None
    ended_at: datetime | None
    duration_s: float | None = Field(description="Its latest attempt's run, from start to end.")
    kept_until: datetime | None = Field(description="Its container is kept until then for results.")


class Job(Body):
    id: str
    user: str
    state: JobStatus
    tasks: int
    counts: dict[TaskState, int] = Field(description="Tasks by state.")
    image: str
    command: list[str] | None
    cpus: float
    memory: int
    disk: int
    parallelism: int | None
    retries: int
    retry_on: list[RetryOn]
    keep_for: float
    created_at: datetime
    deadline: datetime | None
    ended_at: datetime | None
    reason: str | None = Field(description="Why it was cancelled (`job rm`, its deadline).")
    task_list: list[JobTask] = Field(
        default_factory=list, description="Each task (GET /v1/jobs/{job_id}; empty in listings)."
    )


class JobList(Body):
    jobs: list[Job]
