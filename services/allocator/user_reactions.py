"""The allocator's reactions to what an operator does to a user: removed, or given another quota.

The engine tells `UserReactions` of each event its model folded (`notice`); each round of the
reactions (reactions.py) then, before anything is placed:

- ends the work of each user removed (user_changes.py): their jobs cancelled, every allocation
  of theirs released, running or waiting, and the containers they keep removed, each with
  the removal's words, one decision at a time through `engine.decide`. A request of theirs
  that was decided as they were removed (its token checked just before) is folded after
  the removal: its AllocationRequested, or its job's JobSubmitted, brings the user back here;
- judges again the waiting requests of each user whose quota changed, refusing those the new
  quota does not admit (QUOTA_EXCEEDED). What raises the quota lets their jobs that waited for
  room go on: the job driver is told by the same event (job_reactions.py).

Nothing here is stored: after a restart the engine notices it all again from its model
(`notice_resumed`), and whatever was appended already finds nothing more to do.
"""

from typing import TYPE_CHECKING

import structlog

from potluck.allocator.decisions import refusal
from potluck.allocator.job_decisions import cancellation
from potluck.allocator.user_changes import REMOVED_BY, over_quota, removal_ending
from potluck.contracts.allocation_events import AllocationRequested, UserQuotaChanged, UserRemoved
from potluck.contracts.job_events import JobSubmitted
from potluck.events import Event

if TYPE_CHECKING:
    from potluck.allocator.engine import AllocatorEngine

__all__ = ["UserReactions"]

log = structlog.get_logger(__name__)


class UserReactions:
    def __init__(self, engine: "AllocatorEngine") -> None:
        self.engine = engine
        #: Removed users whose work may not have been ended yet.
        self.removed: set[str] = set()
        #: Users whose waiting requests are to be judged against their quota again.
        self.quota_changed: set[str] = set()

    def notice(self, event: Event) -> bool:
        """After the model folded `event`: whether a user's work has something to end now."""
        users = self.engine.model.users
        match event:
            case UserRemoved() if event.user in users.removed:
                self.removed.add(event.user)
            case UserQuotaChanged() if event.user in users.users:
                self.quota_changed.add(event.user)
            case AllocationRequested() | JobSubmitted() if event.user in users.removed:
                self.removed.add(event.user)
            case _:
                return False
        return True

    def notice_resumed(self) -> None:
        """What `notice` would have found folding the log up to a checkpoint: every removed user
        (their work may not all have been ended) and every user with requests waiting."""
        model = self.engine.model
        self.removed.update(model.users.removed)
        self.quota_changed.update(a.user for a in model.pending() if a.user in model.users.users)

    def waiting(self) -> bool:
        return bool(self.removed or self.quota_changed)

    async def run(self) -> None:
        """End the work of the users removed, judge again the requests of those whose quota
        changed. A user not done (an error) is left for the next round."""
        while self.removed:
            user = min(self.removed)
            await self.end_work_of(user)
            self.removed.discard(user)
        while self.quota_changed:
            user = min(self.quota_changed)
            await self.judge_waiting_of(user)
            self.quota_changed.discard(user)

    async def end_work_of(self, user: str) -> None:
        engine = self.engine
        model = engine.model
        gone = model.users.removed.get(user)
        if gone is None:  # restored since (or, in an older log, added again): nothing is ended
            return
        said = gone.said()
        # The jobs first: a job left running would request attempts for those released here.
        jobs = sorted(model.jobs.unfinished_of(user))
        for job_id in jobs:

            async def cancel(job_id: str = job_id) -> None:
                job = model.jobs.jobs.get(job_id)
                if job is not None:
                    await engine.append(cancellation(job, REMOVED_BY, said), "allocator")

            await engine.decide(cancel)
        ended = [a.alloc_id for a in model.allocations.held_by(user)]
        ended += [a.alloc_id for a in model.allocations.kept() if a.user == user]
        for alloc_id in ended:

            async def end(alloc_id: str = alloc_id) -> None:
                state = model.allocations.allocations.get(alloc_id)
                if state is not None:
                    await engine.append(removal_ending(state, said), "allocator")

            await engine.decide(end)
        if jobs or ended:
            log.warning("user.work_ended", user=user, jobs=len(jobs), allocations=len(ended), reason=said)

    async def judge_waiting_of(self, user: str) -> None:
        engine = self.engine
        model = engine.model
        async with engine.placing:
            account = model.users.users.get(user)
            if account is None:
                return
            for state, why in over_quota(account.quota, model.allocations.held_by(user)):

                async def refuse(alloc_id: str = state.alloc_id, why: str = why) -> None:
                    now = model.allocations.allocations.get(alloc_id)
                    if now is not None and now.status == "pending":
                        await engine.append(refusal(now, "QUOTA_EXCEEDED", why), "allocator")

                await engine.decide(refuse)
                log.info("allocation.refused_over_quota", alloc_id=state.alloc_id, user=user, detail=why)
