"""The allocator's job driver: what makes batch jobs go, round after round of the reactions.

The engine tells the driver of each event its model folded (`notice`): a
job's own events, and any event of an allocation that is a job's attempt,
mark that job dirty; an allocation of a user that ends frees quota room, so
it also marks the user's jobs that waited for room, as does a change of the
user's quota. Each round of the
reactions (reactions.py) then `drive`s the dirty jobs, those whose
deadline is due and those with a task whose pause before its retry is over,
each through `engine.decide` (decided again when another
writer moved a stream first) with the pure `step` of job_decisions.py, under
the engine's `placing` lock, so the quota room it sees counts the user's
requests in flight. The attempts it requests are left pending, for the same
fair queue as every other request.

Per job the driver keeps the tasks it found final (`settled`) and the ones
requested but not final (`open`), so a round looks at a job's open tasks
only: a 1,000-task job costs its active attempts per round, not its tasks.
What it keeps is rebuilt from the log at start (the engine notices every
event it folds), so nothing of it needs to be stored.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from potluck.allocator.job_decisions import (
    JobStep,
    TaskState,
    open_attempts,
    quota_room,
    release_attempt,
    step,
)
from potluck.allocator.kept import discard
from potluck.contracts.allocation_events import AllocationEvent, Quota, UserQuotaChanged
from potluck.contracts.job_events import JobEvent, JobSubmitted, JobTaskRequested
from potluck.events import Event, RecordedEvent
from potluck.events.tracing import continuing, trace_carrier_of, tracer
from potluck.readmodels.allocations import TERMINAL_EVENTS

if TYPE_CHECKING:
    from potluck.allocator.engine import AllocatorEngine

__all__ = ["JobDriver"]

log = structlog.get_logger(__name__)


@dataclass
class _Tracked:
    """What the driver knows of one job between rounds."""

    settled: dict[int, TaskState] = field(default_factory=dict)
    open: set[int] = field(default_factory=set)


class JobDriver:
    def __init__(self, engine: "AllocatorEngine") -> None:
        self.engine = engine
        self.dirty: set[str] = set()
        self.tracked: dict[str, _Tracked] = {}
        #: Jobs with a deadline that have not ended, and when it passes.
        self.deadlines: dict[str, datetime] = {}
        #: Jobs with a task waiting out its pause before a retry, and when the first is over.
        self.retries_due: dict[str, datetime] = {}
        #: By user, the jobs that would have requested more attempts had the quota had room.
        self.waiting_for_room: dict[str, set[str]] = {}
        #: The trace each unfinished job was submitted in, so that its tasks' requests join it
        #: and `potluck ops trace` follows a task as it follows any allocation.
        self.traces: dict[str, dict[str, str]] = {}

    def notice(self, event: Event, record: RecordedEvent) -> bool:
        """After the model folded `event`: whether a job has something to do now."""
        if isinstance(event, UserQuotaChanged):
            # A raised quota has room for what its jobs waited for (a lowered one finds none).
            waited = self.waiting_for_room.pop(event.user, None)
            if waited:
                self.dirty.update(waited)
            return bool(waited)
        if isinstance(event, JobEvent):
            self.dirty.add(event.job_id)
            if isinstance(event, JobSubmitted) and (carrier := trace_carrier_of(record.metadata)):
                self.traces[event.job_id] = carrier
            if isinstance(event, JobTaskRequested):
                self.tracked.setdefault(event.job_id, _Tracked()).open.add(event.task_index)
            job = self.engine.model.jobs.jobs.get(event.job_id)
            if job is not None and job.deadline is not None and not job.terminal:
                self.deadlines[job.job_id] = job.deadline
            return True
        if not isinstance(event, AllocationEvent):
            return False
        state = self.engine.model.allocations.allocations.get(event.alloc_id)
        if state is None:
            return False
        woken = False
        if state.job_id is not None:
            self.dirty.add(state.job_id)
            woken = True
        if isinstance(event, TERMINAL_EVENTS) and state.user in self.waiting_for_room:
            self.dirty.update(self.waiting_for_room.pop(state.user))
            woken = True
        return woken

    async def drive(self) -> int:
        """Drive every dirty job and every job whose deadline is due; how many were driven."""
        now = self.engine.clock()
        self.dirty.update(job_id for job_id, at in self.deadlines.items() if at <= now)
        paused = [job_id for job_id, at in self.retries_due.items() if at <= now]
        for job_id in paused:
            del self.retries_due[job_id]  # its step says when, if another task waits still
        self.dirty.update(paused)
        todo = sorted(self.dirty)
        self.dirty.clear()
        for done, job_id in enumerate(todo):
            try:
                await self.drive_one(job_id)
            except BaseException:
                self.dirty.update(todo[done:])  # not done: again next round
                raise
        return len(todo)

    async def drive_one(self, job_id: str) -> None:
        engine = self.engine
        job = engine.model.jobs.jobs.get(job_id)
        if job is None:
            # Never folded, or ended long ago and dropped from the model (retention.py): nothing
            # to drive, and nothing of it to remember.
            for remembered in (self.deadlines, self.retries_due, self.traces, self.tracked):
                remembered.pop(job_id, None)
            return
        if not job.terminal:
            with (
                continuing(self.traces.get(job_id)),
                tracer().start_as_current_span("job step", attributes={"potluck.job_id": job_id}),
            ):
                done = await engine.decide(lambda: self._step(job_id))
            self._took(job_id, done)
            job = engine.model.jobs.jobs[job_id]
        if job.status == "cancelled":
            await self.release_attempts(job_id)
        if job.terminal:
            self.deadlines.pop(job_id, None)
            self.retries_due.pop(job_id, None)
            self.traces.pop(job_id, None)
            tracked = self.tracked.get(job_id)
            if tracked is None or not open_attempts(job, engine.model.allocations.allocations, tracked.open):
                self.tracked.pop(job_id, None)

    async def _step(self, job_id: str) -> JobStep:
        engine = self.engine
        model = engine.model
        async with engine.placing:
            job = model.jobs.jobs[job_id]
            tracked = self.tracked.setdefault(job_id, _Tracked())
            outlook = engine.outlook()
            user = model.users.users.get(job.user)
            room = quota_room(user.quota if user is not None else Quota(), outlook.held_by(job.user))
            decided = step(
                job,
                model.allocations.allocations,
                room=room,
                quota_version=outlook.quota_version(job.user),
                now=engine.clock(),
                settled=tracked.settled,
                looking_at=tracked.open - tracked.settled.keys(),
            )
            await engine.append(decided.appends, "allocator")
            return decided

    def _took(self, job_id: str, done: JobStep) -> None:
        """Remember what the step found and decided."""
        job = self.engine.model.jobs.jobs[job_id]
        tracked = self.tracked.setdefault(job_id, _Tracked())
        tracked.settled.update(done.settled)
        tracked.open.difference_update(done.settled)
        if done.retry_at is not None:
            self.retries_due[job_id] = done.retry_at
        else:
            self.retries_due.pop(job_id, None)
        if done.waits_for_room:
            self.waiting_for_room.setdefault(job.user, set()).add(job_id)
        if done.requested:
            # Its batch may have been full: look again next round.
            self.dirty.add(job_id)
            log.info(
                "job.requested",
                job_id=job_id,
                attempts=len(done.requested),
                active=done.active,
                first_task=done.requested[0].task_index,
            )
        if done.completed is not None:
            log.info(
                "job.completed",
                job_id=job_id,
                succeeded=done.completed.succeeded,
                failed=done.completed.failed,
            )
        if done.cancelled is not None:
            log.info("job.cancelled", job_id=job_id, by=done.cancelled.by)

    async def release_attempts(self, job_id: str) -> int:
        """Release what a cancelled job still runs or waits for, each attempt in its own
        transaction that frees its capacity; how many."""
        engine = self.engine
        allocations = engine.model.allocations.allocations
        job = engine.model.jobs.jobs[job_id]
        tracked = self.tracked.get(job_id)
        # Not tracked any more: the tally's tasks not final hold any attempt still open, without a
        # look at every task a removed job ever requested (DELETE again on a big job).
        tasks = tracked.open if tracked is not None else engine.model.job_tallies.open_of(job_id)
        released = 0
        for alloc_id in open_attempts(job, allocations, sorted(tasks)):

            async def attempt(alloc_id: str = alloc_id) -> bool:
                state = allocations.get(alloc_id)
                if state is None:
                    return False  # not folded yet: its request's notice drives the job again
                appends = release_attempt(engine.model.jobs.jobs[job_id], state)
                await engine.append(appends, "allocator")
                return bool(appends)

            released += await engine.decide(attempt)
        if released:
            log.info("job.released", job_id=job_id, attempts=released)
        return released

    async def discard_kept(self, job_id: str) -> int:
        """Remove the stopped containers its attempts still keep (the job was removed: its
        results are not wanted any more), freeing their disk; how many."""
        engine = self.engine
        allocations = engine.model.allocations.allocations
        # The pool's kept containers (bounded by its hosts' disk), not every attempt of the job.
        kept = sorted(a.alloc_id for a in engine.model.allocations.kept() if a.job_id == job_id)
        for alloc_id in kept:

            async def attempt(alloc_id: str = alloc_id) -> None:
                await engine.append(
                    discard(allocations[alloc_id], f"its job {job_id} was removed"), "allocator"
                )

            await engine.decide(attempt)
        if kept:
            log.info("job.discarded", job_id=job_id, attempts=len(kept))
        return len(kept)
