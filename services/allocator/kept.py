"""Stopped containers kept after their command exited, and their removal: pure decisions.

An allocation whose spec asks for it (`keep_for_s`) keeps its stopped
container on its host after AllocationExited (`kept_until`), so that its
user can fetch results (`potluck cp ALLOC:PATH .`) and read its logs
(`potluck logs ALLOC`); only its disk stays reserved (CapacityRetained,
lifecycle.py). It is discarded (AllocationDiscarded, routed to its host,
which removes the container, and CapacityFreed in the same append) when its
time is up (`due`), when its user releases it early, when its job is removed
(the jobs helper calls `discard`), or when its host is gone
(AllocationsView.kept_on).
"""

from collections.abc import Iterable
from datetime import datetime

from potluck.contracts.allocation_events import (
    AllocationDiscarded,
    CapacityFreed,
    alloc_stream,
    capacity_stream,
)
from potluck.events import StreamAppend
from potluck.readmodels.allocations import AllocationState

__all__ = ["TIME_UP", "discard", "due"]

#: The reason an AllocationDiscarded carries when its keep_for ran out.
TIME_UP = "keep_for is up"


def discard(state: AllocationState, reason: str) -> list[StreamAppend]:
    """Remove the allocation's kept container now and free its disk, in one append expecting
    the alloc stream's version; nothing when it is not kept (never was, or removed already)."""
    if not state.kept or state.host_id is None:
        return []
    discarded = AllocationDiscarded(alloc_id=state.alloc_id, host_id=state.host_id, reason=reason)
    # The amount names its reservation (a Capacity is never zero); the ledger frees what it
    # still holds of it, which for a kept allocation is its disk alone (CapacityRetained).
    freed = CapacityFreed(host_id=state.host_id, alloc_id=state.alloc_id, amount=state.spec.resources)
    return [
        StreamAppend(alloc_stream(state.alloc_id), [discarded], state.version),
        StreamAppend(capacity_stream(state.host_id), [freed]),
    ]


def due(allocations: Iterable[AllocationState], now: datetime) -> list[str]:
    """The kept allocations whose keep_for is up at `now`, by id."""
    return sorted(a.alloc_id for a in allocations if a.kept_until is not None and a.kept_until <= now)
