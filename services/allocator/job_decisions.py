"""The decisions that drive batch jobs: a job's state and its attempts' allocations in, appends out. Pure.

A task's standing (`standing`, task_standing.py) is read from its latest attempt's
allocation and the job's retry settings; `step` decides what a running job does next: complete
once every task is final, cancel itself once its deadline passed, or request
new attempts (a task's retry once its pause after a failure is over, `retry_due`),
as many as its parallelism, its pending bound and its user's
quota room allow (a job never gets QUOTA_EXCEEDED: it waits for room). The new
attempts of one step are one transaction: QuotaCharged on `quota-<user>` and
JobTaskRequested on `job-<id>`, both with their expected versions (two
allocator replicas can never request the same attempt twice), and each
attempt's AllocationRequested on its own new stream, left pending for the
reactions' fair queue to place like any other request.

`step` looks only at the tasks it is given (`looking_at`) and counts the ones
already known final (`settled`), so a driver that keeps those between rounds
pays for a job's active attempts, not for all its tasks.
"""

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain, islice
from uuid import uuid4

from potluck.allocator.decisions import ending, new_alloc_id
from potluck.allocator.task_standing import (
    ACTIVE_TASK,
    FINAL_TASK,
    Ended,
    Standing,
    TaskState,
    ended_as,
    retried,
    retry_due,
    standing,
)
from potluck.contracts.allocation_events import (
    AllocationReleased,
    AllocationRequested,
    Quota,
    QuotaCharged,
    alloc_stream,
    quota_stream,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.job_events import (
    JOB_ID_ENV,
    TASK_INDEX_ENV,
    JobCancelled,
    JobCompleted,
    JobSpec,
    JobTaskRequested,
    job_stream,
)
from potluck.events import StreamAppend
from potluck.kernel.rejections import Rejected
from potluck.readmodels.allocations import AllocationState
from potluck.readmodels.jobs import JobState

__all__ = [
    "ACTIVE_TASK",
    "FINAL_TASK",
    "MAX_BATCH",
    "MAX_JOB_SPEC_BYTES",
    "MAX_PENDING",
    "MAX_UNFINISHED_JOBS",
    "QUEUE_WAIT_S",
    "Ended",
    "JobStep",
    "Room",
    "Standing",
    "TaskState",
    "attempt_request",
    "cancellation",
    "check_job_size",
    "check_unfinished_jobs",
    "ended_as",
    "new_job_id",
    "open_attempts",
    "quota_room",
    "release_attempt",
    "retried",
    "retry_due",
    "standing",
    "step",
]

#: Most attempts requested in one transaction: a 10,000-task job does not make one huge append.
MAX_BATCH = 100
#: Most attempts of one job waiting to be placed at once: more would only wait longer in the
#: fair queue (and make every round of it longer) without running any sooner.
MAX_PENDING = 32
#: How long an attempt of a job without a deadline may wait to be placed: a job waits for
#: capacity as long as it takes, within reason.
QUEUE_WAIT_S = 7 * 86400.0
#: Most jobs one user may have not finished (running) at once, as the quota's `allocations`
#: bounds what they hold: each costs the allocator memory and work until it ends, and a job is
#: already up to MAX_TASKS tasks, so more at once would only wait behind each other.
MAX_UNFINISHED_JOBS = 10


#: Most bytes a job's tasks' specs may add up to: its tasks times one task's spec as the log
#: records it (its command, env and ssh keys most of it). Each attempt's allocation records
#: its spec (requested, then placed), and the allocator keeps it in memory for good: a body
#: may be 256 KiB, and a job of 300 tasks of a 240 KB command grew the allocator by 290 KB an
#: attempt (measured), so one of MAX_TASKS would take 2.9 GB, and a user's MAX_UNFINISHED_JOBS
#: ten times that, from ten requests. A common task (a short command, a key or two) is under
#: 1 KB: every task of the largest job fits.
MAX_JOB_SPEC_BYTES = 32 << 20


def new_job_id() -> str:
    return f"j-{uuid4().hex[:12]}"


def check_unfinished_jobs(unfinished: int, most: int = MAX_UNFINISHED_JOBS) -> None:
    """Refuse a new job of a user who has `unfinished` jobs not finished yet, `most` or more."""
    if unfinished >= most:
        raise Rejected(
            "TOO_MANY_JOBS",
            f"you have {unfinished} jobs not finished, at most {most} at once: wait for one to end "
            "(`potluck job wait`) or cancel one (`potluck job rm`, DELETE /v1/jobs/{job_id}) first",
            status=403,
        )


def check_job_size(spec: JobSpec) -> None:
    """Refuse a job whose tasks' specs together pass MAX_JOB_SPEC_BYTES (400, naming the
    largest of command, env and ssh_keys)."""
    each = len(spec.task.model_dump_json())
    total = spec.tasks * each
    if total <= MAX_JOB_SPEC_BYTES:
        return
    parts = {
        "command": len(json.dumps(spec.task.command)),
        "env": len(json.dumps(spec.task.env)),
        "ssh_keys": len(json.dumps(spec.task.ssh_keys)),
    }
    largest = max(parts, key=lambda name: parts[name])
    raise Rejected.invalid_field(
        largest,
        f"a job's tasks together may describe at most {MAX_JOB_SPEC_BYTES >> 20} MiB (each attempt "
        f"records its task's command, env and ssh_keys): {spec.tasks} tasks of {each} bytes make "
        f"{total / (1 << 20):.1f} MiB, {largest} the most of it; put a long script in the image "
        "and run it from there, or submit fewer tasks per job",
    )


# --- the user's quota room ----------------------------------------------------------------------


@dataclass(frozen=True)
class Room:
    """What the user's quota still allows, beyond what they hold or wait for."""

    allocations: int
    cpus: float
    memory_bytes: int
    disk_bytes: int

    def fits(self, each: Capacity) -> int:
        """How many more allocations of `each` the quota allows."""
        counts = [self.allocations]
        # A float sum of CPU shares may land a hair above an exact quota (as check_quota allows).
        counts.append(int((self.cpus + 1e-9) // each.cpus) if each.cpus > 0 else self.allocations)
        counts.append(self.memory_bytes // each.memory_bytes if each.memory_bytes else self.allocations)
        counts.append(self.disk_bytes // each.disk_bytes if each.disk_bytes else self.allocations)
        return max(0, min(counts))


def quota_room(quota: Quota, held: Mapping[str, Capacity]) -> Room:
    """The room `quota` leaves once `held` is counted: the rule of decisions.check_quota."""
    return Room(
        allocations=quota.allocations - len(held),
        cpus=quota.cpus - sum(c.cpus for c in held.values()),
        memory_bytes=quota.memory_bytes - sum(c.memory_bytes for c in held.values()),
        disk_bytes=quota.disk_bytes - sum(c.disk_bytes for c in held.values()),
    )


# --- new attempts -------------------------------------------------------------------------------


def attempt_request(
    job_id: str,
    user: str,
    spec: JobSpec,
    index: int,
    attempt: int,
    alloc_id: str,
    *,
    queue_timeout_s: float = QUEUE_WAIT_S,
) -> AllocationRequested:
    """The allocation of attempt `attempt` of task `index`: the job's task with its index and
    job id in its environment."""
    env = {**spec.task.env, TASK_INDEX_ENV: str(index), JOB_ID_ENV: job_id}
    return AllocationRequested(
        alloc_id=alloc_id,
        user=user,
        spec=spec.task.model_copy(update={"env": env}),
        lifetime_s=spec.lifetime_s,
        constraints=dict(spec.constraints),
        queue_timeout_s=queue_timeout_s,
        job_id=job_id,
        task_index=index,
        attempt=attempt,
    )


@dataclass(frozen=True)
class JobStep:
    """What one step of a job decided."""

    appends: list[StreamAppend]
    #: Tasks found final in this step (beyond the `settled` it was given).
    settled: dict[int, TaskState] = field(default_factory=dict)
    requested: tuple[JobTaskRequested, ...] = ()
    #: Attempts active (pending, placed, pulling, running) before this step's requests.
    active: int = 0
    #: It would have requested more had the user's quota had room.
    waits_for_room: bool = False
    completed: JobCompleted | None = None
    cancelled: JobCancelled | None = None
    #: The earliest moment a task that waits out its pause before a retry (retry_due) may be
    #: retried: the job is to be stepped again then. None: no task waits so.
    retry_at: datetime | None = None


def step(
    job: JobState,
    allocations: Mapping[str, AllocationState],
    *,
    room: Room,
    quota_version: int,
    now: datetime,
    settled: Mapping[int, TaskState] | None = None,
    looking_at: Iterable[int] | None = None,
    batch: int = MAX_BATCH,
    max_pending: int = MAX_PENDING,
    new_id: "Iterator[str] | None" = None,
) -> JobStep:
    """What a running job does next at `now`.

    `settled` are tasks already known final; `looking_at` the requested tasks to look at (None:
    every requested task not settled). Tasks not requested yet are never looked at: they are
    the indices from `len(job.attempts)` up, since first attempts are requested in index order.
    """
    if job.terminal:
        return JobStep([])
    deadline = job.deadline
    if deadline is not None and now >= deadline:
        cancelled = JobCancelled(job_id=job.job_id, by="deadline", reason="its deadline passed")
        return JobStep([StreamAppend(job_stream(job.job_id), [cancelled], job.version)], cancelled=cancelled)
    known = dict(settled or {})
    looked = looking_at if looking_at is not None else (i for i in job.attempts if i not in known)
    newly: dict[int, TaskState] = {}
    retrying: list[int] = []
    later: datetime | None = None
    active = pending = 0
    for index in sorted(set(looked)):
        if index in known:
            continue
        found = standing(job, index, allocations)
        if found.state in FINAL_TASK:
            newly[index] = found.state
        elif found.state == "retrying":
            due = retry_due(job, index, allocations)
            if due is not None and due > now:
                later = due if later is None else min(later, due)
            else:
                retrying.append(index)
        elif found.state in ACTIVE_TASK:
            active += 1
            pending += found.state == "pending"
    final = {**known, **newly}
    if len(final) >= job.spec.tasks:
        succeeded = sum(1 for s in final.values() if s == "succeeded")
        done = JobCompleted(job_id=job.job_id, succeeded=succeeded, failed=job.spec.tasks - succeeded)
        return JobStep(
            [StreamAppend(job_stream(job.job_id), [done], job.version)],
            settled=newly,
            active=active,
            completed=done,
        )
    unrequested = range(len(job.attempts), job.spec.tasks)
    wanted = len(retrying) + len(unrequested)
    slots = min(batch, max_pending - pending, wanted)
    if job.spec.parallelism is not None:
        slots = min(slots, job.spec.parallelism - active)
    fit = room.fits(job.spec.task.resources)
    waits_for_room = fit < slots
    slots = max(0, min(slots, fit))
    if slots == 0:
        return JobStep([], settled=newly, active=active, waits_for_room=waits_for_room, retry_at=later)
    ids = new_id if new_id is not None else iter(new_alloc_id, None)
    queue_timeout = (deadline - now).total_seconds() if deadline is not None else QUEUE_WAIT_S
    requests = [
        attempt_request(
            job.job_id,
            job.user,
            job.spec,
            index,
            len(job.attempts.get(index, ())) + 1,
            next(ids),
            queue_timeout_s=queue_timeout,
        )
        for index in islice(chain(retrying, unrequested), slots)
    ]
    recorded = tuple(
        JobTaskRequested(job_id=job.job_id, task_index=index, attempt=r.attempt, alloc_id=r.alloc_id)
        for index, r in zip(chain(retrying, unrequested), requests, strict=False)
    )
    appends = [
        StreamAppend(
            quota_stream(job.user),
            [QuotaCharged(user=job.user, alloc_id=r.alloc_id) for r in requests],
            quota_version,
        ),
        StreamAppend(job_stream(job.job_id), list(recorded), job.version),
        *(StreamAppend(alloc_stream(r.alloc_id), [r], 0) for r in requests),
    ]
    return JobStep(
        appends,
        settled=newly,
        requested=recorded,
        active=active,
        waits_for_room=waits_for_room,
        retry_at=later,
    )


# --- the end of a job ---------------------------------------------------------------------------


def cancellation(job: JobState, by: str, reason: str) -> list[StreamAppend]:
    """JobCancelled, unless the job has ended already; its attempts are released next
    (`release_attempt`), each in a transaction of its own that also frees its capacity."""
    if job.terminal:
        return []
    cancelled = JobCancelled(job_id=job.job_id, by=by, reason=reason)
    return [StreamAppend(job_stream(job.job_id), [cancelled], job.version)]


def release_attempt(job: JobState, state: AllocationState) -> list[StreamAppend]:
    """An attempt of a cancelled job released (nothing once it has ended), capacity freed with it."""
    if state.terminal or job.status != "cancelled":
        return []
    why = (
        "its job's deadline passed" if job.cancelled_by == "deadline" else f"its job {job.job_id} was removed"
    )
    if job.cancelled_by == "operator" and job.reason:  # its user removed (user_changes.py)
        why = job.reason
    released = AllocationReleased(
        alloc_id=state.alloc_id, host_id=state.host_id, by=f"job:{job.job_id}", reason=why
    )
    return ending(state, released)


def open_attempts(
    job: JobState, allocations: Mapping[str, AllocationState], tasks: Iterable[int]
) -> list[str]:
    """The attempts of `tasks` that have not ended (or are not folded yet)."""
    found = []
    for index in tasks:
        latest = job.latest(index)
        if latest is None:
            continue
        state = allocations.get(latest)
        if state is None or not state.terminal:
            found.append(latest)
    return found
