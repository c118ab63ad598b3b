"""Why a pending allocation waits, as its user asks: what placing it would decide now, and where it
stands in the fair queue (Kubernetes' "0/3 nodes are available: 3 Insufficient cpu", Nomad's
placement failures).

Worked out when asked and never logged: it changes whenever a host comes, goes or frees capacity,
and the log holds facts, not forecasts. Pure: a decision and the queue in, a value out.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from potluck.allocator.queue import fair_order_of
from potluck.allocator.scheduler import (
    NO_FREE_CAPACITY,
    NO_HOST_REGISTERED,
    NO_SCHEDULABLE_HOST,
    Decision,
    HostSnapshot,
    Placed,
    PlacementRequest,
    Scheduler,
    Strategy,
    Wait,
    place,
)
from potluck.contracts.capacity import Capacity
from potluck.kernel.sizes import format_size
from potluck.readmodels.allocations import AllocationState, AllocationsView

if TYPE_CHECKING:  # decisions.py reads the request schemas, which read this module
    from potluck.allocator.decisions import Outlook

__all__ = [
    "KeptFreed",
    "KeptIndex",
    "Standing",
    "WaitingReason",
    "kept_freed",
    "kept_in_the_way",
    "kept_note",
    "queue_positions",
    "standing",
    "standing_in",
]

#: `no_free_capacity`: a host that takes work could hold it, once it frees capacity;
#: `no_schedulable_host`: only hosts that are away, paused, draining, frozen, without their
#: Docker engine (HostState.engine_away) or awaiting an
#: upgrade of their hostd (potluck.contracts.compatibility) could;
#: `no_host_registered`: the pool has no host at all, and it waits for one to join;
#: `placing`: a host has room for it now, and the allocator's next look places it (unless a
#: request ahead of it takes the room);
#: `refusing`: no host could hold it any more, and the allocator's next look refuses it.
WaitingReason = Literal[
    "no_free_capacity", "no_schedulable_host", "no_host_registered", "placing", "refusing"
]

_WAITS: dict[str, WaitingReason] = {
    NO_FREE_CAPACITY: "no_free_capacity",
    NO_SCHEDULABLE_HOST: "no_schedulable_host",
    NO_HOST_REGISTERED: "no_host_registered",
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


@dataclass(frozen=True)
class KeptFreed:
    """The hosts as placement sees them with the disk of the stopped containers kept on them
    (for their logs and files) given back, and those containers by host: what `kept_note` asks
    whether a waiting request would be placed on."""

    hosts: list[HostSnapshot]
    held: dict[str, list[AllocationState]]


#: KeptFreed's hosts indexed for placement, and its containers by host (the allocator's, per
#: log position: AllocatorEngine._kept_freed).
KeptIndex = tuple[Scheduler, dict[str, list[AllocationState]]]


def kept_freed(hosts: Sequence[HostSnapshot], kept: Sequence[AllocationState]) -> KeptFreed | None:
    """`hosts` with the disk the `kept` containers (AllocationsView.kept) hold given back; None
    when nothing is kept."""
    held: dict[str, list[AllocationState]] = {}
    for state in kept:
        if state.host_id is not None:
            held.setdefault(state.host_id, []).append(state)
    if not held:
        return None
    freed = [
        replace(host, reserved=host.reserved - _disk_of(held[host.host_id])) if host.host_id in held else host
        for host in hosts
    ]
    return KeptFreed(freed, held)


def kept_note(decision: Decision, held: dict[str, list[AllocationState]], user: str) -> str | None:
    """What to add to a NO_FREE_CAPACITY wait of `user`'s when the kept containers' disk is what
    stands in the way: `decision` is its placement with that disk free (on KeptFreed.hosts).
    None when it would not be placed then either.

    Why said: a job's finished tasks keep their containers (1 h by default) and each holds its
    whole disk meanwhile, so a job's later tasks can wait on its own earlier ones, and the plain
    "no host has that much free" sends the user looking at the pool's CPUs."""
    if not isinstance(decision, Placed) or decision.host_id not in held:
        return None
    there = sorted(held[decision.host_id], key=lambda a: (a.kept_until, a.alloc_id))
    yours = [a for a in there if a.user == user]
    said = (
        f"on host {decision.host_id}, {len(there)} stopped container(s) kept for their logs and files "
        f"hold {format_size(_disk_of(there).disk_bytes)} of disk until their keep-for ends"
    )
    if not yours:
        return f"{said}; it is placed as that disk frees"
    return (
        f"{said}, {len(yours)} of them yours: `potluck alloc rm {yours[0].alloc_id}` removes one now "
        "(its files and logs with it; `potluck cp` what you want first), and a shorter --keep-for "
        "keeps less"
    )


def kept_in_the_way(
    hosts: Sequence[HostSnapshot],
    request: PlacementRequest,
    strategy: Strategy,
    kept: Sequence[AllocationState],
    user: str,
) -> str | None:
    """The rule in one call: `kept_note` of placing `request` on `hosts` with the kept
    containers' disk free (the allocator keeps the freed hosts indexed, KeptFreed, per log
    position: a page of pending allocations asks it once each)."""
    freed = kept_freed(hosts, kept)
    if freed is None:
        return None
    return kept_note(place(freed.hosts, request, strategy), freed.held, user)


def _disk_of(states: Sequence[AllocationState]) -> Capacity:
    """The disk the stopped containers of `states` hold (their reservation's disk alone)."""
    disk = sum(a.spec.resources.disk_bytes for a in states)
    return Capacity.model_construct(cpus=0.0, memory_bytes=0, disk_bytes=disk)


def standing_in(
    outlook: "Outlook",
    state: AllocationState,
    strategy: Strategy,
    positions: dict[str, int],
    kept: Callable[[], KeptIndex | None] | None = None,
) -> Standing:
    """Why the pending allocation `state` waits, decided on `outlook` as its placement would be;
    `positions`: the queue's (queue_positions); `kept`: gives KeptFreed's hosts, indexed, and
    its containers by host (None: nothing is kept), asked only for a wait on free capacity."""
    decision = outlook.place(state, strategy)
    told = standing(decision, positions.get(state.alloc_id, 0), len(positions))
    index = (
        kept()
        if kept is not None and isinstance(decision, Wait) and decision.reason == NO_FREE_CAPACITY
        else None
    )
    if index is not None:
        scheduler, held = index
        note = kept_note(scheduler.place(outlook.request(state), strategy), held, state.user)
        if note is not None:
            told = replace(told, message=f"{told.message}; {note}")
    return told
