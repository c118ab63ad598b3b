"""The HTTP API's bodies for batch jobs (`/v1/jobs`); their JSON schemas feed /v1/openapi.json."""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

from potluck.allocator.paging import DEFAULT_LIMIT
from potluck.allocator.schemas import (
    ENV_NAME,
    MIN_DURATION_S,
    Body,
    Command,
    Disk,
    EnvVars,
    HostLabels,
    ImageReference,
    KeepFor,
    Lifetime,
    Memory,
    Request,
    SshKey,
)
from potluck.allocator.task_standing import JobTallies, TaskState, standing
from potluck.contracts.allocation_events import AllocationSpec
from potluck.contracts.capacity import MIN_CPUS, Capacity
from potluck.contracts.job_events import (
    DEFAULT_KEEP_FOR_S,
    DEFAULT_RETRY_ON,
    JOB_ID_ENV,
    MAX_RETRIES,
    MAX_TASKS,
    TASK_INDEX_ENV,
    JobSpec,
    RetryOn,
)
from potluck.kernel.durations import DurationBetween
from potluck.readmodels.allocations import AllocationState
from potluck.readmodels.hosts import HostState
from potluck.readmodels.jobs import JobState, JobStatus

__all__ = ["CreateJob", "Job", "JobList", "JobTask", "JobTaskList", "TaskState"]

Deadline = Annotated[float, DurationBetween(MIN_DURATION_S, 30 * 86400)]


def _whole(value: object) -> object:
    # JSON Schema's integer is any number without a fraction (586.0 too); the strict body takes
    # only Python ints, so a whole float becomes one here. A bool is left to be refused.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _not_the_tasks_own(env: dict[str, str]) -> dict[str, str]:
    # Each task gets its index and job id in these; a value given here was replaced unsaid.
    given = sorted(name for name in env if name in (TASK_INDEX_ENV, JOB_ID_ENV))
    if given:
        raise ValueError(
            f"{', '.join(given)} is set by Potluck for each task (its index, its job's id); "
            "name your variable otherwise"
        )
    return env


#: A job's tasks' environment: not the variables Potluck sets for each task (the schema says so).
JobEnv = Annotated[
    EnvVars,
    AfterValidator(_not_the_tasks_own),
    Field(
        json_schema_extra={
            "propertyNames": {"pattern": ENV_NAME, "not": {"enum": [TASK_INDEX_ENV, JOB_ID_ENV]}}
        }
    ),
]


#: A count: an integer, written with or without a zero fraction.
Count = Annotated[int, BeforeValidator(_whole)]
#: Its bounds inside the type, before the validator: on an optional field (or after the
#: validator) pydantic publishes them as `ge`/`le`, which JSON Schema does not know.
Parallelism = Annotated[int, Field(ge=1, le=MAX_TASKS), BeforeValidator(_whole)]


class CreateJob(Request):
    tasks: Count = Field(
        ge=1, le=MAX_TASKS, description="How many tasks: each gets POTLUCK_TASK_INDEX 0..tasks-1."
    )
    cpus: float = Field(ge=MIN_CPUS, le=256, description="CPU cores of each task.")
    memory: Memory = Field(description="Memory of each task: bytes, or e.g. 512M, 4G.")
    disk: Disk = Field(
        default=1 << 30,
        description="Disk of each task: bytes, or e.g. 1G. Its files may take all of it but its "
        "output log's part (a 16th, at most 30 MiB).",
    )
    image: ImageReference = Field(description="The image each task runs.")
    command: Command = Field(
        description="Each task's command. Required: an allocation without one is interactive and "
        "stays up until released, which a task that must end on its own cannot be; to run the "
        "image's own command, name it (`docker image inspect` shows its Entrypoint and Cmd)."
    )
    env: JobEnv = Field(default_factory=dict, max_length=128)
    ssh_keys: list[SshKey] = Field(
        default_factory=list, max_length=16, description="OpenSSH public keys, to reach a task with ssh."
    )
    constraints: HostLabels = Field(
        default_factory=dict, max_length=16, description="Host labels that must match."
    )
    network: bool = Field(default=False, description="Outbound network, where the member allows it.")
    lifetime: Lifetime = Field(
        default=3600.0, description="Each attempt's lifetime once placed: seconds (at least 1), or e.g. 2h."
    )
    parallelism: Parallelism | None = Field(
        default=None,
        description="Most tasks active at once; absent: as many as your quota and the pool allow.",
    )
    retries: Count = Field(
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
        description="The job is cancelled if not done this long after submission: seconds (at least 1), "
        "or e.g. 6h.",
    )
    keep_for: KeepFor = Field(
        default=DEFAULT_KEEP_FOR_S,
        description="How long a finished task's container is kept for `potluck cp` and `potluck logs`: "
        "0 (removed at once), or at least 1 second.",
    )

    def spec(self) -> JobSpec:
        """The job this body asks for."""
        return JobSpec(
            tasks=self.tasks,
            task=AllocationSpec(
                resources=Capacity(cpus=self.cpus, memory_bytes=self.memory, disk_bytes=self.disk),
                image=self.image,
                command=self.command,
                env=dict(self.env),
                ssh_keys=list(self.ssh_keys),
                network=self.network,
                keep_for_s=self.keep_for,
            ),
            lifetime_s=self.lifetime,
            constraints=dict(self.constraints),
            parallelism=self.parallelism,
            retries=self.retries,
            # Each kind once, in the order the user gave: a list that repeats one means it once.
            retry_on=tuple(dict.fromkeys(self.retry_on)),
            deadline_s=self.deadline,
        )


class JobTask(Body):
    index: int
    state: TaskState
    alloc_id: str | None = Field(description="Its latest attempt's allocation (null: not requested yet).")
    host_id: str | None
    host_name: str | None = Field(
        default=None, description="Its latest attempt's host's name, as the host was enrolled."
    )
    attempts: int
    exit_code: int | None
    reason: str | None = Field(description="Why its latest attempt ended, when it did not exit 0.")
    started_at: datetime | None
    ended_at: datetime | None
    duration_s: float | None = Field(description="Its latest attempt's run, from start to end.")
    kept_until: datetime | None = Field(description="Its container is kept until then for results.")

    @classmethod
    def of(
        cls,
        job: JobState,
        index: int,
        allocations: Mapping[str, AllocationState],
        hosts: Mapping[str, HostState],
    ) -> "JobTask":
        found = standing(job, index, allocations)
        latest = found.latest
        if latest is None:
            return cls(
                index=index,
                state=found.state,
                alloc_id=job.latest(index),
                host_id=None,
                attempts=found.attempts,
                exit_code=None,
                reason=None,
                started_at=None,
                ended_at=None,
                duration_s=None,
                kept_until=None,
            )
        duration = None
        if latest.started_at is not None and latest.ended_at is not None:
            duration = round((latest.ended_at - latest.started_at).total_seconds(), 3)
        return cls(
            index=index,
            state=found.state,
            alloc_id=latest.alloc_id,
            host_id=latest.host_id,
            host_name=_host_name(latest.host_id, hosts),
            attempts=found.attempts,
            exit_code=latest.exit_code,
            reason=_why_ended(latest),
            started_at=latest.started_at,
            ended_at=latest.ended_at,
            duration_s=duration,
            kept_until=latest.kept_until,
        )


def _host_name(host_id: str | None, hosts: Mapping[str, HostState]) -> str | None:
    host = hosts.get(host_id) if host_id is not None else None
    return host.name if host is not None else None


def _why_ended(state: AllocationState) -> str | None:
    """Why an attempt ended, in its user's words; None while it runs or when it exited 0."""
    match state.status:
        case "exited":
            if state.oom_killed:
                return "killed: out of memory"
            return None if state.exit_code == 0 else f"exited with code {state.exit_code}"
        case "failed":
            return f"{state.reason}: {state.detail}" if state.detail else state.reason
        case "expired":
            return "its lifetime ran out"
        case "lost" | "refused":
            return state.reason
        case "released":
            return state.reason or "released"
    return None


class Job(Body):
    id: str
    user: str
    state: JobStatus
    tasks: int
    counts: dict[TaskState, int] = Field(description="Tasks by state (no zeros).")
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
        default_factory=list,
        description="Its first tasks by index, a page of at most 100 (GET /v1/jobs/{job_id} only: "
        "empty in listings and in the answers to POST and DELETE). The rest: "
        "GET /v1/jobs/{job_id}/tasks?after=`task_list_next`.",
    )
    task_list_next: int | None = Field(
        default=None,
        description="Send as `after` to GET /v1/jobs/{job_id}/tasks for the tasks after `task_list`; "
        "null when it holds them all (and wherever it is empty).",
    )

    @classmethod
    def of(
        cls,
        job: JobState,
        counts: Mapping[TaskState, int],
        task_list: Sequence[JobTask] = (),
        task_list_next: int | None = None,
    ) -> "Job":
        """The job as its user sees it: its tasks counted by state (`counts`: JobTallies.counts),
        and the page of its tasks given, if any."""
        spec = job.spec
        cancelled = job.cancelled_by
        return cls(
            id=job.job_id,
            user=job.user,
            state=job.status,
            tasks=spec.tasks,
            counts=dict(counts),
            image=spec.task.image,
            command=spec.task.command,
            cpus=spec.task.resources.cpus,
            memory=spec.task.resources.memory_bytes,
            disk=spec.task.resources.disk_bytes,
            parallelism=spec.parallelism,
            retries=spec.retries,
            retry_on=list(spec.retry_on),
            keep_for=spec.task.keep_for_s,
            created_at=job.submitted_at,
            deadline=job.deadline,
            ended_at=job.ended_at,
            reason=None if cancelled is None else _why_cancelled(cancelled, job.reason),
            task_list=list(task_list),
            task_list_next=task_list_next,
        )

    @classmethod
    def shown(
        cls,
        job: JobState,
        tallies: JobTallies,
        allocations: Mapping[str, AllocationState],
        hosts: Mapping[str, HostState],
        *,
        first_tasks: bool = False,
    ) -> "Job":
        """The job with its tasks counted (`tallies`), and with `first_tasks` the first page of
        them (DEFAULT_LIMIT): either costs a page at most, not the job's tasks."""
        counts = tallies.counts(job)
        if not first_tasks:
            return cls.of(job, counts)
        indices, following = tallies.page(job, None, DEFAULT_LIMIT)
        return cls.of(job, counts, [JobTask.of(job, i, allocations, hosts) for i in indices], following)


def _why_cancelled(by: str, reason: str | None) -> str:
    if by == "deadline":
        return "cancelled: its deadline passed"
    return f"removed by {by}" + (f": {reason}" if reason else "")


class JobList(Body):
    """One page of the caller's jobs, oldest first (paging.py), without their tasks."""

    jobs: list[Job]
    next: str | None = Field(description="Send as `after` for the following page; null on the last page")


class JobTaskList(Body):
    """One page of a job's tasks, by index (GET /v1/jobs/{job_id}/tasks)."""

    tasks: list[JobTask]
    next: int | None = Field(
        description="The last task's index: send as `after` for the following page; null on the last page"
    )

    @classmethod
    def page(
        cls,
        job: JobState,
        tallies: JobTallies,
        allocations: Mapping[str, AllocationState],
        hosts: Mapping[str, HostState],
        after: int | None,
        limit: int,
        state: TaskState | None = None,
    ) -> "JobTaskList":
        """Up to `limit` of the job's tasks (in `state`, when given) after task `after`, by index."""
        indices, following = tallies.page(job, after, limit, state)
        return cls(tasks=[JobTask.of(job, i, allocations, hosts) for i in indices], next=following)
