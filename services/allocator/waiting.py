"""Why a pending allocation waits, as its user asks: what placing it would decide now, and where it
stands in the fair queue (Kubernetes' "0/3 nodes are available: 3 Insufficient cpu", Nomad's
placement failures).

Worked out when asked and never logged: it changes whenever a host comes, goes or frees capacity,
and the log holds facts, not forecasts. Pure: a decision and the queue in, a value out.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from potluck.allocator.queue import fair_order_of
from potluck.allocator.scheduler import (
    NO_FREE_CAPACITY,
    NO_SCHEDULABLE_HOST,
    Decision,
    Placed,
    Strategy,
    Wait,
)
from potluck.readmodels.allocations import AllocationState, AllocationsView

if TYPE_CHECKING:  # decisions.py reads the request schemas, which read this module
    from potluck.allocator.decisions import Outlook

__all__ = ["Standing", "WaitingReason", "queue_positions", "standing", "standing_in"]

#: `no_free_capacity`: a host that takes work could hold it, once it frees capacity;
#: `no_schedulable_host`: only hosts that are away, paused, draining, frozen or awaiting an
#: upgrade of their hostd (potluck.contracts.compatibility) could;
#: `placing`: a host has room for it now, and the allocator's next look places it (unless a
#: request ahead of it takes the room);
#: `refusing`: no host could hold it any more, and the allocator's next look refuses it.
WaitingReason = Literal["no_free_capacity", "no_schedulable_host", "placing", "refusing"]

_WAITS: dict[str, WaitingReason] = {
    NO_FREE_CAPACITY: "no_free_capacity",
    NO_SCHEDULABLE_HOST: "no_schedulable_host",
}


@dataclass(frozen=True)
class Standing:
    reason: WaitingReason
    message: str
    #: Its place in the order the fair queue serves (1: first), and how many wait in all.
    position: int
    queue_length: int


def queue_positions(allocations: AllocationsView) -> dict[str, int]:
    """Each pending allocation's place, from 1, in the order the fair queue would serve them all
    (queue.py): each user's first request in turn, the users who hold least first, then each
    user's second, and so on."""
    return {a.alloc_id: n for n, a in enumerate(fair_order_of(allocations), start=1)}


def standing(decision: Decision, position: int, queue_length: int) -> Standing:
    """What `decision` (placing the allocation now) means to the user who waits for it."""
    if isinstance(decision, Wait):
        reason = _WAITS.get(decision.reason, "no_free_capacity")
        return Standing(reason, decision.message, position, queue_length)
    if isinstance(decision, Placed):
        message = (
            f"host {decision.host_id} has room for it now: the allocator's next look places it, "
            "unless a request ahead of it in the queue takes the room first"
        )
        return Standing("placing", message, position, queue_length)
    message = f"{decision.message}: the allocator's next look refuses it"
    return Standing("refusing", message, position, queue_length)


def standing_in(
    outlook: "Outlook", state: AllocationState, strategy: Strategy, positions: dict[str, int]
) -> Standing:
    """Why the pending allocation `state` waits, decided on `outlook` as its placement would be;
    `positions`: the queue's (queue_positions)."""
    decision = outlook.place(state, strategy)
    return standing(decision, positions.get(state.alloc_id, 0), len(positions))
