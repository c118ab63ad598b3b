"""The decisions that drive batch jobs (services/allocator/job_decisions.py), without servers.

A job is submitted to an in-memory log that enforces expected versions as the
event store does, folded into the allocator's model; each `step` is appended to
that log and folded back, and its attempts are ended by hand (exit codes, OOM,
failures, host losses), as hosts and the allocator would end them.
"""

from collections.abc import Sequence
from datetime import datetime, timedelta
from itertools import count
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from potluck.allocator.job_decisions import (
    FINAL_TASK,
    MAX_BATCH,
    MAX_JOB_SPEC_BYTES,
    MAX_PENDING,
    QUEUE_WAIT_S,
    JobStep,
    Room,
    cancellation,
    check_job_size,
    ended_as,
    open_attempts,
    quota_room,
    release_attempt,
    retried,
    retry_due,
    standing,
    step,
)
from potluck.allocator.job_schemas import CreateJob, Job
from potluck.allocator.model import AllocatorModel
from potluck.allocator.task_standing import MAX_RETRY_PAUSE_S, RETRY_PAUSE_S, retry_pause
from potluck.contracts.allocation_events import (
    AllocationExited,
    AllocationExpired,
    AllocationFailed,
    AllocationLost,
    AllocationPlaced,
    AllocationRefused,
    AllocationReleased,
    AllocationRequested,
    AllocationRunning,
    AllocationSpec,
    CapacityFreed,
    Quota,
    QuotaCharged,
    alloc_stream,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.job_events import (
    JOB_ID_ENV,
    MAX_HOST_LOSSES,
    MAX_TASKS,
    TASK_INDEX_ENV,
    JobCancelled,
    JobCompleted,
    JobSpec,
    JobSubmitted,
    JobTaskRequested,
    RetryOn,
    job_stream,
)
from potluck.events import Event, Fold, StreamAppend, WrongExpectedVersion
from potluck.kernel.rejections import Rejected
from potluck.readmodels.allocations import AllocationState
from potluck.readmodels.jobs import JobState
from tests.unit.test_allocator_model import T0, RecordingLog

JOB = "j-000000000001"
USER = "alice"
TASK = AllocationSpec(
    resources=Capacity(cpus=0.5, memory_bytes=64 << 20, disk_bytes=64 << 20),
    image="potluck-test:1",
    command=["sh", "-c", "echo $POTLUCK_TASK_INDEX"],
    env={"KEEP": "me"},
    keep_for_s=60.0,
)
BIG = Quota(allocations=100_000, cpus=1e6, memory_bytes=1 << 60, disk_bytes=1 << 60)

#: "taken": its host took the machine back (a drain's grace ran out): exited 143, by_host.
Outcome = Literal["ok", "exit", "oom", "failed", "lost", "taken", "run"]


def job_spec(tasks: int, **more: Any) -> JobSpec:
    return JobSpec(tasks=tasks, task=TASK, lifetime_s=600.0, **more)


class Sim:
    """One job of USER on the in-memory log, folded into the allocator's model."""

    def __init__(self, spec: JobSpec, quota: Quota = BIG) -> None:
        self.log = RecordingLog()
        self.model = AllocatorModel()
        self.fold = Fold(self.model, reader="test")
        self.quota = quota
        self.settled: dict[int, Any] = {}
        self.ids = (f"a-{n:012d}" for n in count())
        self.add([StreamAppend(job_stream(JOB), [JobSubmitted(job_id=JOB, user=USER, spec=spec)], 0)])

    def add(self, appends: Sequence[StreamAppend]) -> None:
        self.fold.apply_all(self.log.append(appends))

    @property
    def job(self) -> JobState:
        return self.model.jobs.jobs[JOB]

    @property
    def allocations(self) -> dict[str, AllocationState]:
        return self.model.allocations.allocations

    def shown(self, *, first_tasks: bool = True) -> Job:
        """The job as GET /v1/jobs/{id} shows it (`first_tasks`), or as a listing does."""
        return Job.shown(
            self.job,
            self.model.job_tallies,
            self.allocations,
            self.model.hosts.hosts,
            first_tasks=first_tasks,
        )

    @property
    def later(self) -> datetime:
        """A moment after every pause before a retry is over: the latest event's, plus the longest."""
        return self.log.records[-1].recorded_at + timedelta(seconds=MAX_RETRY_PAUSE_S)

    def decide(self, now: datetime | None = None, *, tracked: bool = True, **more: Any) -> JobStep:
        """The step at `now`; by default once any task's pause before its retry is over."""
        return step(
            self.job,
            self.allocations,
            room=quota_room(self.quota, self.model.held_by(USER)),
            quota_version=self.model.quota_versions.get(USER, 0),
            now=now or self.later,
            settled=self.settled if tracked else None,
            new_id=self.ids,
            **more,
        )

    def step(self, now: datetime | None = None, **more: Any) -> JobStep:
        decided = self.decide(now, **more)
        self.add(decided.appends)
        self.settled.update(decided.settled)
        return decided

    def active(self) -> list[str]:
        return [a for a in self.job.alloc_ids() if not self.allocations[a].terminal]

    def end(self, alloc_id: str, outcome: Outcome) -> None:
        """The attempt runs on h1 and ends as `outcome` ("run": it only starts running)."""
        state = self.allocations[alloc_id]
        events: list[Event] = []
        if state.status == "pending" and outcome != "failed":
            events.append(
                AllocationPlaced(
                    alloc_id=alloc_id,
                    host_id="h1",
                    user=USER,
                    spec=state.spec,
                    expires_at=T0 + timedelta(hours=1),
                )
            )
        if state.status != "running" and outcome not in ("failed", "lost"):
            events.append(AllocationRunning(alloc_id=alloc_id, host_id="h1", container_id="c" + alloc_id))
        match outcome:
            case "ok":
                events.append(AllocationExited(alloc_id=alloc_id, host_id="h1", exit_code=0))
            case "exit":
                events.append(AllocationExited(alloc_id=alloc_id, host_id="h1", exit_code=3))
            case "oom":
                events.append(
                    AllocationExited(alloc_id=alloc_id, host_id="h1", exit_code=137, oom_killed=True)
                )
            case "taken":
                events.append(
                    AllocationExited(
                        alloc_id=alloc_id, host_id="h1", exit_code=143, reason="host drained", by_host=True
                    )
                )
            case "failed":
                events.append(AllocationFailed(alloc_id=alloc_id, reason="IMAGE_PULL_FAILED"))
            case "lost":
                if state.status == "pending":
                    events.append(
                        AllocationPlaced(
                            alloc_id=alloc_id,
                            host_id="h1",
                            user=USER,
                            spec=state.spec,
                            expires_at=T0 + timedelta(hours=1),
                        )
                    )
                events.append(AllocationLost(alloc_id=alloc_id, host_id="h1"))
        self.add([StreamAppend(alloc_stream(alloc_id), events)])

    def end_as_scripted(self, picked: tuple[int, Outcome] | None) -> None:
        """End what a property's script `picked` (an index into the active attempts and its
        outcome), or, the script run out, every active attempt well."""
        active = self.active()
        if picked is None:
            for alloc_id in active:
                self.end(alloc_id, "ok")
        elif active:
            index, outcome = picked
            self.end(active[index % len(active)], outcome)

    def run_to_end(self, outcomes: Sequence[Outcome] = (), limit: int = 500) -> None:
        """Step and end every active attempt (as `outcomes` says, then "ok") until the job ends."""
        script = iter(outcomes)
        for _ in range(limit):
            self.step()
            if self.job.terminal:
                return
            for alloc_id in self.active():
                self.end(alloc_id, next(script, "ok"))
        raise AssertionError("the job never ended")


def requested_of(decided: JobStep) -> list[tuple[int, int]]:
    return [(r.task_index, r.attempt) for r in decided.requested]


# --- requesting attempts ------------------------------------------------------------------------


def test_the_first_step_requests_tasks_in_index_order_in_one_transaction() -> None:
    """Tried: the first step of a 10-task job with parallelism 3. Must hold: tasks 0, 1, 2 are
    requested as attempt 1 in one transaction (quota charges and JobTaskRequested with their
    expected versions, each allocation on a new stream), pending, with the task's spec plus its
    index and job id in the environment, the job's lifetime, constraints and keep_for."""
    sim = Sim(job_spec(10, parallelism=3, constraints={"arch": "x86_64"}))
    decided = sim.decide()
    assert requested_of(decided) == [(0, 1), (1, 1), (2, 1)]
    streams = [(a.stream, a.expected_version, [type(e).__name__ for e in a.events]) for a in decided.appends]
    assert streams[0] == ("quota-alice", 0, ["QuotaCharged"] * 3)
    assert streams[1] == (job_stream(JOB), 1, ["JobTaskRequested"] * 3)
    assert [(s[1], s[2]) for s in streams[2:]] == [(0, ["AllocationRequested"])] * 3
    sim.add(decided.appends)
    for index, alloc_id in enumerate(sim.job.alloc_ids()):
        state = sim.allocations[alloc_id]
        assert state.status == "pending"
        assert (state.job_id, state.task_index, state.attempt) == (JOB, index, 1)
        assert state.spec.env == {"KEEP": "me", TASK_INDEX_ENV: str(index), JOB_ID_ENV: JOB}
        assert state.spec.keep_for_s == 60.0
        assert state.spec.resources == TASK.resources
        assert state.lifetime_s == 600.0
        assert state.constraints == {"arch": "x86_64"}
        assert state.queue_timeout_s == QUEUE_WAIT_S
    assert sim.model.jobs.task_of[sim.job.alloc_ids()[0]] == (JOB, 0)
    assert requested_of(sim.decide()) == [], "parallelism 3 is reached: nothing more"


def test_a_job_with_a_deadline_waits_in_the_queue_until_its_deadline() -> None:
    """Tried: a job with a one-hour deadline, stepped ten minutes after submission. Must hold:
    its attempts may wait in the queue as long as the job has left, not the default."""
    sim = Sim(job_spec(1, deadline_s=3600.0))
    sim.step(now=sim.job.submitted_at + timedelta(minutes=10))
    [alloc_id] = sim.job.alloc_ids()
    assert sim.allocations[alloc_id].queue_timeout_s == pytest.approx(3000.0)


def test_a_job_never_takes_its_user_past_the_quota_it_waits_for_room() -> None:
    """Tried: a user who holds one allocation elsewhere, a quota of 3 allocations and 1.2 CPUs,
    and a 5-task job of 0.5-CPU tasks. Must hold: the job holds at most 2 attempts (CPUs),
    says it waits for room, never exceeds the quota (no QUOTA_EXCEEDED), and requests the
    next task once one ends."""
    sim = Sim(job_spec(5), quota=Quota(allocations=3, cpus=1.2))
    decided = sim.step()
    assert requested_of(decided) == [(0, 1), (1, 1)]
    assert decided.waits_for_room
    assert requested_of(sim.step()) == []
    sim.end(sim.job.alloc_ids()[0], "ok")
    assert requested_of(sim.step()) == [(2, 1)]


def test_quota_room_counts_allocations_cpus_memory_and_disk() -> None:
    """Tried: the room of a quota against what is held, and how many tasks fit in it. Must
    hold: each dimension bounds the count; a full quota fits nothing."""
    each = Capacity(cpus=1.0, memory_bytes=1 << 30, disk_bytes=1 << 30)
    quota = Quota(allocations=10, cpus=4.0, memory_bytes=3 << 30, disk_bytes=5 << 30)
    assert quota_room(quota, {}).fits(each) == 3
    assert quota_room(quota, {"a": each}).fits(each) == 2
    assert quota_room(quota, {f"a{i}": each for i in range(10)}).fits(each) == 0
    assert (
        Room(allocations=5, cpus=0.3, memory_bytes=1 << 40, disk_bytes=1 << 40).fits(
            Capacity(cpus=0.1, memory_bytes=1, disk_bytes=1)
        )
        == 3
    ), "float shares summing exactly to the room fit"


def test_pending_attempts_and_batches_are_bounded() -> None:
    """Tried: a 500-task job with all the quota it wants. Must hold: one step requests at most
    MAX_PENDING attempts (pending ones would only wait) and, with a larger pending bound, at
    most MAX_BATCH per transaction."""
    sim = Sim(job_spec(500))
    assert len(sim.step().requested) == MAX_PENDING
    assert requested_of(sim.step()) == [], "its attempts are all still pending"
    other = Sim(job_spec(500))
    assert len(other.decide(max_pending=1000).requested) == MAX_BATCH


def test_two_replicas_deciding_on_the_same_state_cannot_both_request() -> None:
    """Tried: two steps decided on the same state (two allocator replicas), appended in turn.
    Must hold: the second is refused by the job stream's expected version; decided again on
    the new state, it requests the next tasks, never the same attempt twice."""
    sim = Sim(job_spec(6, parallelism=4))
    first = sim.decide(max_pending=2)
    second = sim.decide(max_pending=2)
    sim.add(first.appends)
    with pytest.raises(WrongExpectedVersion):
        sim.add(second.appends)
    again = sim.decide(max_pending=4)
    assert requested_of(again) == [(2, 1), (3, 1)]


# --- a task's standing and retries ----------------------------------------------------------------


def test_a_job_whose_tasks_exit_0_succeeds() -> None:
    """Tried: a 5-task job whose attempts all exit 0. Must hold: each task succeeded in one
    attempt and the job completes once, succeeded 5, failed 0."""
    sim = Sim(job_spec(5, parallelism=2))
    sim.run_to_end()
    assert sim.job.status == "succeeded"
    assert (sim.job.succeeded, sim.job.failed) == (5, 0)
    for index in range(5):
        assert standing(sim.job, index, sim.allocations).state == "succeeded"
        assert len(sim.job.attempts[index]) == 1
    assert sim.decide().appends == [], "an ended job decides nothing more"


def test_a_non_zero_exit_fails_the_task_unless_retries_were_asked() -> None:
    """Tried: task 0 exits 3, without retries, then with retries 1 on `exit`. Must hold:
    without, it fails after one attempt and the job fails (1 failed); with, it gets exactly
    2 attempts, then fails for good."""
    plain = Sim(job_spec(2))
    plain.run_to_end(["exit", "ok"])
    assert plain.job.status == "failed"
    assert (plain.job.succeeded, plain.job.failed) == (1, 1)
    assert len(plain.job.attempts[0]) == 1

    retrying = Sim(job_spec(1, retries=1, retry_on=("exit",)))
    retrying.step()
    retrying.end(retrying.job.alloc_ids()[0], "exit")
    assert standing(retrying.job, 0, retrying.allocations).state == "retrying"
    assert requested_of(retrying.step()) == [(0, 2)]
    retrying.end(retrying.job.alloc_ids()[-1], "exit")
    assert retrying.step().completed == JobCompleted(job_id=JOB, succeeded=0, failed=1)
    assert len(retrying.job.attempts[0]) == 2


def test_a_job_is_refused_once_its_tasks_specs_together_pass_the_bound() -> None:
    """Tried: jobs whose tasks times one task's recorded spec is just at MAX_JOB_SPEC_BYTES and
    one byte past it; and the largest job of a common task (a short command, two keys). Must
    hold: at the bound and the common job pass; past it, a 400 INVALID_FIELD naming the field
    that makes most of it."""
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me"
    common = JobSpec(tasks=MAX_TASKS, task=TASK.model_copy(update={"ssh_keys": [key, key]}), lifetime_s=600.0)
    check_job_size(common)

    def sized(tasks: int, extra: int) -> JobSpec:
        return JobSpec(
            tasks=tasks, task=TASK.model_copy(update={"command": ["true", "x" * extra]}), lifetime_s=600.0
        )

    base = len(sized(1, 0).task.model_dump_json())
    tasks = 1000
    each = MAX_JOB_SPEC_BYTES // tasks
    at_bound = sized(tasks, each - base)
    assert tasks * len(at_bound.task.model_dump_json()) <= MAX_JOB_SPEC_BYTES
    check_job_size(at_bound)
    past = sized(tasks, each - base + 1)
    assert tasks * len(past.task.model_dump_json()) > MAX_JOB_SPEC_BYTES
    with pytest.raises(Rejected) as refused:
        check_job_size(past)
    assert (refused.value.status, refused.value.code, refused.value.field) == (
        400,
        "INVALID_FIELD",
        "command",
    )


def test_a_failed_task_is_retried_only_after_a_pause_that_doubles_and_a_loss_at_once() -> None:
    """Tried: a task that exits 3 again and again (retries 8 on `exit` and `lost`), stepped just
    before and at the end of each pause after its attempt ended; then its host is lost.
    Must hold: no retry is requested before RETRY_PAUSE_S after the first failure, 2x after
    the second, ... never more than MAX_RETRY_PAUSE_S; each step before says when (`retry_at`);
    one at the moment requests exactly the next attempt; after a loss with the host the task
    is re-queued at once."""
    sim = Sim(job_spec(1, retries=8, retry_on=("exit", "lost")))
    sim.step()
    for failures in range(1, 9):
        sim.end(sim.job.alloc_ids()[-1], "exit")
        ended = sim.allocations[sim.job.alloc_ids()[-1]].ended_at
        assert ended is not None
        pause = min(RETRY_PAUSE_S * 2 ** (failures - 1), MAX_RETRY_PAUSE_S)
        due = ended + timedelta(seconds=pause)
        assert retry_due(sim.job, 0, sim.allocations) == due
        early = sim.step(now=due - timedelta(milliseconds=1))
        assert (requested_of(early), early.retry_at) == ([], due), failures
        assert standing(sim.job, 0, sim.allocations).state == "retrying"
        assert requested_of(sim.step(now=due)) == [(0, failures + 1)], failures
    assert retry_pause(["exit"] * 101) == MAX_RETRY_PAUSE_S, "the most retries never overflow it"
    sim.end(sim.job.alloc_ids()[-1], "lost")
    lost_at = sim.allocations[sim.job.alloc_ids()[-1]].ended_at
    assert retry_due(sim.job, 0, sim.allocations) is None
    assert requested_of(sim.step(now=lost_at)) == [(0, 10)]


@pytest.mark.parametrize(
    ("outcome", "retry_on", "again"),
    [
        ("oom", ("exit",), False),
        ("oom", ("oom",), True),
        ("failed", ("lost",), False),
        ("failed", ("failed",), True),
        ("exit", ("oom", "failed", "lost"), False),
        ("lost", ("exit",), False),
        ("lost", ("lost",), True),
        ("taken", ("exit",), False),
        ("taken", ("lost",), True),
    ],
)
def test_only_the_endings_named_in_retry_on_are_retried(
    outcome: Outcome, retry_on: tuple[RetryOn, ...], again: bool
) -> None:
    """Tried: one attempt ending as `outcome` with `retry_on` set. Must hold: a second attempt
    is requested exactly when its kind is named."""
    sim = Sim(job_spec(1, retries=1, retry_on=retry_on))
    sim.step()
    sim.end(sim.job.alloc_ids()[0], outcome)
    assert requested_of(sim.step()) == ([(0, 2)] if again else [])
    assert sim.job.terminal is not again


def test_a_task_its_host_took_back_is_requeued_without_using_its_retries() -> None:
    """Tried: a task with the defaults (retries 0, retry_on `lost`) whose first attempt its host
    stopped as a drain's grace ran out (exited 143, by its host), then one that exits 3. Must
    hold: the stop is a loss, not the task's failure: a second attempt is requested; the exit
    after it, with no retries, fails the task."""
    sim = Sim(job_spec(1))
    sim.step()
    sim.end(sim.job.alloc_ids()[0], "taken")
    assert standing(sim.job, 0, sim.allocations).state == "retrying"
    assert requested_of(sim.step()) == [(0, 2)]
    sim.end(sim.job.alloc_ids()[-1], "exit")
    assert sim.step().completed == JobCompleted(job_id=JOB, succeeded=0, failed=1)


def test_refused_and_expired_attempts_count_as_failed() -> None:
    """Tried: allocations refused (queue timeout) and expired. Must hold: both end as `failed`,
    an exit 0 as `succeeded`, a release as `released`."""
    base = AllocationState(alloc_id="a", user=USER, spec=TASK, lifetime_s=1, status="refused")
    assert ended_as(base) == "failed"
    assert (
        ended_as(AllocationState(alloc_id="a", user=USER, spec=TASK, lifetime_s=1, status="expired"))
        == "failed"
    )
    assert (
        ended_as(AllocationState(alloc_id="a", user=USER, spec=TASK, lifetime_s=1, status="running")) is None
    )
    sim = Sim(job_spec(1, retries=2, retry_on=("failed",)))
    sim.step()
    first = sim.job.alloc_ids()[0]
    sim.add([StreamAppend(alloc_stream(first), [AllocationRefused(alloc_id=first, reason="QUEUE_TIMEOUT")])])
    assert requested_of(sim.step()) == [(0, 2)]
    second = sim.job.alloc_ids()[-1]
    sim.end(second, "run")
    sim.add([StreamAppend(alloc_stream(second), [AllocationExpired(alloc_id=second, host_id="h1")])])
    assert requested_of(sim.step()) == [(0, 3)]


def test_host_losses_are_requeued_without_using_retries_up_to_the_limit() -> None:
    """Tried: a task (retries 0, the default retry_on `lost`) whose attempts are all lost with
    their hosts. Must hold: it is re-queued MAX_HOST_LOSSES times without any retry left, then
    fails for good with MAX_HOST_LOSSES + 1 attempts."""
    sim = Sim(job_spec(1))
    sim.run_to_end(["lost"] * 10)
    assert sim.job.status == "failed"
    assert len(sim.job.attempts[0]) == MAX_HOST_LOSSES + 1


def test_losses_and_retries_are_counted_apart() -> None:
    """Tried: retries 1 on exit and lost: an attempt lost, one that exits 3, one lost, one that
    exits 0. Must hold: every one of them is retried (losses do not use the retry), so the task
    succeeds at its fourth attempt."""
    assert retried(job_spec(1, retries=1, retry_on=("exit", "lost")), ["lost", "exit", "lost"])
    assert not retried(job_spec(1, retries=1, retry_on=("exit", "lost")), ["exit", "lost", "exit"])
    sim = Sim(job_spec(1, retries=1, retry_on=("exit", "lost")))
    sim.run_to_end(["lost", "exit", "lost", "ok"])
    assert sim.job.status == "succeeded"
    assert len(sim.job.attempts[0]) == 4


def test_a_task_released_by_its_user_is_cancelled_and_counts_as_failed() -> None:
    """Tried: the user releases one task's allocation by hand. Must hold: that task is final
    (cancelled), not retried, and the job completes with it counted as failed."""
    sim = Sim(job_spec(2, retries=3, retry_on=("exit", "failed", "lost")))
    sim.step()
    first = sim.job.alloc_ids()[0]
    sim.add([StreamAppend(alloc_stream(first), [AllocationReleased(alloc_id=first, by="user:alice")])])
    assert standing(sim.job, 0, sim.allocations).state == "cancelled"
    sim.run_to_end()
    assert (sim.job.status, sim.job.succeeded, sim.job.failed) == ("failed", 1, 1)


# --- ending a job ---------------------------------------------------------------------------------


def test_a_passed_deadline_cancels_the_job_and_its_attempts_are_released() -> None:
    """Tried: a job with a 60 s deadline, one attempt running and one pending, stepped after the
    deadline. Must hold: JobCancelled by "deadline"; then each open attempt is released by the
    job, the running one freeing its capacity in the same append, and the job shows its tasks
    cancelled."""
    sim = Sim(job_spec(3, parallelism=2, deadline_s=60.0))
    sim.step(now=sim.job.submitted_at)
    running, pending = sim.job.alloc_ids()
    sim.end(running, "run")
    assert sim.decide(now=sim.job.submitted_at + timedelta(seconds=59)).cancelled is None
    decided = sim.step(now=sim.job.submitted_at + timedelta(seconds=60))
    assert decided.cancelled == JobCancelled(job_id=JOB, by="deadline", reason="its deadline passed")
    assert sim.job.status == "cancelled"
    assert open_attempts(sim.job, sim.allocations, range(3)) == [running, pending]
    freeing = release_attempt(sim.job, sim.allocations[running])
    assert [type(e) for a in freeing for e in a.events] == [AllocationReleased, CapacityFreed]
    released = freeing[0].events[0]
    assert isinstance(released, AllocationReleased)
    assert released.by == f"job:{JOB}"
    sim.add(freeing)
    sim.add(release_attempt(sim.job, sim.allocations[pending]))
    assert open_attempts(sim.job, sim.allocations, range(3)) == []
    assert release_attempt(sim.job, sim.allocations[pending]) == [], "released once"
    shown = sim.shown()
    assert shown.state == "cancelled"
    assert shown.counts == {"cancelled": 3}
    assert shown.reason == "cancelled: its deadline passed"


def test_a_user_cancels_a_running_job_once() -> None:
    """Tried: cancelling a running job, then again. Must hold: one JobCancelled with the user,
    expecting the job's version; nothing the second time; an attempt of a job that is not
    cancelled is never released by it."""
    sim = Sim(job_spec(2))
    sim.step()
    assert release_attempt(sim.job, sim.allocations[sim.job.alloc_ids()[0]]) == []
    [append] = cancellation(sim.job, "user:alice", "removed by its user")
    assert (append.stream, append.expected_version) == (job_stream(JOB), sim.job.version)
    sim.add([append])
    assert sim.job.cancelled_by == "user:alice"
    assert cancellation(sim.job, "user:alice", "again") == []
    assert sim.decide().appends == []


def test_the_job_view_shows_each_task_its_attempts_and_why_it_ended() -> None:
    """Tried: a 3-task job with task 0 succeeded, task 1 exited 3 (failed for good) and task 2
    running. Must hold: counts by state, and each task's host, exit code, attempts and reason."""
    sim = Sim(job_spec(3))
    sim.step()
    a0, a1, a2 = sim.job.alloc_ids()
    sim.end(a0, "ok")
    sim.end(a1, "exit")
    sim.end(a2, "run")
    shown = sim.shown()
    assert shown.counts == {"succeeded": 1, "failed": 1, "running": 1}
    t0, t1, t2 = shown.task_list
    assert (t0.state, t0.host_id, t0.exit_code, t0.attempts, t0.reason) == ("succeeded", "h1", 0, 1, None)
    assert (t1.state, t1.exit_code, t1.reason) == ("failed", 3, "exited with code 3")
    assert (t2.state, t2.alloc_id, t2.exit_code) == ("running", a2, None)
    assert sim.shown(first_tasks=False).task_list == []


def test_tasks_not_requested_yet_are_counted_waiting_then_cancelled() -> None:
    """Tried: a 10-task job with parallelism 3, shown before and after its user cancels it.
    Must hold: 3 pending and 7 waiting; once cancelled the 7 count as cancelled."""
    sim = Sim(job_spec(10, parallelism=3))
    sim.step()
    assert sim.shown().counts == {"pending": 3, "waiting": 7}
    sim.add(cancellation(sim.job, "user:alice", ""))
    shown = sim.shown(first_tasks=False)
    assert shown.counts == {"pending": 3, "cancelled": 7}
    assert shown.reason == "removed by user:alice"


def test_the_body_becomes_the_spec_it_asks_for() -> None:
    """Tried: a CreateJob body with sizes as text and a repeated retry_on. Must hold: the spec's
    task has exactly those limits, keep_for and environment, and each retry kind once."""
    body = CreateJob.model_validate(
        {
            "tasks": 4,
            "cpus": 0.25,
            "memory": "32M",
            "disk": "64M",
            "image": "potluck-test:1",
            "command": ["true"],
            "env": {"A": "1"},
            "retries": 2,
            "retry_on": ["exit", "exit", "lost"],
            "keep_for": "10m",
            "deadline": "1h",
            "parallelism": 2,
        }
    )
    spec = body.spec()
    assert spec.task.resources == Capacity(cpus=0.25, memory_bytes=32 << 20, disk_bytes=64 << 20)
    assert (spec.task.keep_for_s, spec.deadline_s, spec.parallelism) == (600.0, 3600.0, 2)
    assert spec.retry_on == ("exit", "lost")
    assert spec.task.env == {"A": "1"}


# --- properties -----------------------------------------------------------------------------------

OUTCOMES: tuple[Outcome, ...] = ("ok", "exit", "oom", "failed", "lost", "run")


@st.composite
def jobs(draw: st.DrawFn) -> tuple[JobSpec, Quota]:
    spec = job_spec(
        draw(st.integers(1, 8)),
        parallelism=draw(st.none() | st.integers(1, 4)),
        retries=draw(st.integers(0, 2)),
        retry_on=tuple(draw(st.sets(st.sampled_from(["exit", "oom", "lost", "failed"])))),
    )
    return spec, Quota(allocations=draw(st.integers(1, 5)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jobs(), st.lists(st.tuples(st.integers(0, 7), st.sampled_from(OUTCOMES)), max_size=80))
def test_jobs_keep_their_invariants_however_their_attempts_end(
    job: tuple[JobSpec, Quota], endings: list[tuple[int, Outcome]]
) -> None:
    """Tried: random jobs (tasks, parallelism, retries, retry_on, quota) whose active attempts
    end in random ways between steps, then end well. Must hold after every step: no more
    attempts active than parallelism and quota allow; each (task, attempt) requested once and
    attempts numbered 1, 2, ... per task; the job completes exactly when every task is final,
    with the right counts; a task has one attempt more than the endings that were retried;
    and a step that knows the settled tasks decides as one that looks at all of them."""
    spec, quota = job
    sim = Sim(spec, quota)
    script = iter(endings)
    for _ in range(400):
        from_scratch = sim.decide(tracked=False)
        decided = sim.decide()
        assert requested_of(decided) == requested_of(from_scratch)
        assert decided.completed == from_scratch.completed
        sim.add(decided.appends)
        sim.settled.update(decided.settled)
        _check(sim, spec, quota)
        if sim.job.terminal:
            break
        sim.end_as_scripted(next(script, None))
    assert sim.job.terminal


def _check(sim: Sim, spec: JobSpec, quota: Quota) -> None:
    job = sim.job
    active = sim.active()
    assert len(active) <= quota.allocations
    if spec.parallelism is not None:
        assert len(active) <= spec.parallelism
    requested = [
        (e.task_index, e.attempt)
        for r in sim.log.records
        if r.type == "JobTaskRequested"
        for e in [JobTaskRequested.model_validate(r.data)]
    ]
    assert len(requested) == len(set(requested))
    for index, tried in job.attempts.items():
        assert [sim.allocations[a].attempt for a in tried] == list(range(1, len(tried) + 1))
        assert all(sim.allocations[a].task_index == index for a in tried)
    states = [standing(job, i, sim.allocations).state for i in range(spec.tasks)]
    all_final = all(s in FINAL_TASK for s in states)
    if job.status in ("succeeded", "failed"):
        assert all_final
        assert job.succeeded == states.count("succeeded")
        assert job.failed == spec.tasks - job.succeeded
    else:
        assert not all_final, "every task is final: the step must have completed the job"
    for index, tried in job.attempts.items():
        endings = [ended_as(sim.allocations[a]) for a in tried]
        done = [e for e in endings if e is not None]
        retried_count = sum(1 for k in range(1, len(done) + 1) if retried(spec, done[:k]))
        if standing(job, index, sim.allocations).state == "retrying":
            assert len(tried) == retried_count
        else:
            assert len(tried) == retried_count + 1
        assert done.count("lost") <= MAX_HOST_LOSSES + 1


def test_the_job_events_fold_as_the_decisions_expect() -> None:
    """Tried: the events a step appends, read back from the log. Must hold: the job stream
    holds JobSubmitted then JobTaskRequested, and the quota stream one charge per attempt."""
    sim = Sim(job_spec(2))
    sim.step()
    types = [(r.stream, r.type) for r in sim.log.records]
    assert types[0] == (job_stream(JOB), JobSubmitted.__name__)
    assert types.count(("quota-alice", QuotaCharged.__name__)) == 2
    assert types.count((job_stream(JOB), JobTaskRequested.__name__)) == 2
    assert [t for s, t in types if s.startswith("alloc-")] == [AllocationRequested.__name__] * 2
