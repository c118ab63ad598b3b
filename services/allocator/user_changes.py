"""What follows for a user's work when an operator removes them or changes their quota. Pure.

The operator's command records the fact on the user's stream (users.py); the allocator's
reactions (user_reactions.py) then decide here, on its model, what to append:

- a removed user's allocations are released (`removal_ending`), each with the removal's words
  as its reason, whether it runs or still waits; the stopped containers they keep are removed
  (their disk freed); their jobs are cancelled with the same words (job_decisions.cancellation);
- after a quota change, the user's requests still waiting are judged against the new quota
  (`over_quota`): what they hold (placed, pulling, running) counts first and is kept whatever
  the quota, then the attempts of their jobs (a job never gets QUOTA_EXCEEDED, it waits for room:
  job_decisions.py), then their own requests oldest first; one that does not fit beside what
  counts before it is refused as QUOTA_EXCEEDED, saying why, and a later, smaller one may still
  fit. A raised quota refuses nothing.
"""

from collections.abc import Iterable

from potluck.allocator.decisions import check_quota, ending
from potluck.allocator.kept import discard
from potluck.contracts.allocation_events import AllocationReleased, Quota
from potluck.contracts.capacity import Capacity
from potluck.events import StreamAppend
from potluck.kernel.rejections import Rejected
from potluck.readmodels.allocations import ACTIVE, AllocationState

__all__ = ["REMOVED_BY", "over_quota", "removal_ending"]

#: Who ends a removed user's work, as their allocations' and jobs' `by` says.
REMOVED_BY = "operator"


def removal_ending(state: AllocationState, said: str) -> list[StreamAppend]:
    """End what `state` (an allocation of a removed user) still holds: released with `said` as its
    reason while it runs or waits, its kept container removed once it has ended, nothing after."""
    if not state.terminal:
        released = AllocationReleased(
            alloc_id=state.alloc_id, host_id=state.host_id, by=REMOVED_BY, reason=said
        )
        return ending(state, released)
    return discard(state, said)


def over_quota(quota: Quota, allocations: Iterable[AllocationState]) -> list[tuple[AllocationState, str]]:
    """The user's waiting requests (of `allocations`, their held ones) that `quota` does not admit
    beside what counts before them, each with why, oldest first."""
    held = sorted(allocations, key=_counted_first)
    counted: dict[str, Capacity] = {}
    refused: list[tuple[AllocationState, str]] = []
    for state in held:
        if state.status == "pending" and state.job_id is None:
            try:
                check_quota(quota, counted, state.spec.resources)
            except Rejected as exc:
                refused.append((state, f"the user's quota was lowered: {exc.message}"))
                continue
        counted[state.alloc_id] = state.spec.resources
    return refused


def _counted_first(state: AllocationState) -> tuple[int, str, str]:
    """What is held first, then jobs' attempts, then the user's own requests, oldest first."""
    rank = 0 if state.status in ACTIVE else 1 if state.job_id is not None else 2
    made = state.requested_at.isoformat() if state.requested_at is not None else ""
    return rank, made, state.alloc_id
