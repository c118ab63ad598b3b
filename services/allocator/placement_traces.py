"""The trace context each of a host's placements was logged in, for its desired-state snapshot.

hostd starts most containers from the AllocationPlaced event on its consumer, inside that
event's trace. One placed while its hostd was away (restarting, reconnecting) is started from
the snapshot instead, which carries no message headers: the snapshot names each placement's
trace context, read back from the placement's metadata in the log.

Best effort, by design: the snapshot is what lets a hostd start at all, so a database that is
slow or away costs the snapshot its trace contexts (the containers start in traces of their
own), never the snapshot.
"""

import asyncio
from collections.abc import Iterable

import structlog

from potluck.events import EventStore
from potluck.events.follower import TRANSIENT_DB_ERRORS
from potluck.events.tracing import trace_carrier_of
from potluck.readmodels.allocations import AllocationState

log = structlog.get_logger(__name__)

#: How long a snapshot waits for its trace contexts before it goes without them.
LOOKUP_TIMEOUT_S = 2.0


async def placement_traces(
    store: EventStore, allocations: Iterable[AllocationState]
) -> dict[str, dict[str, str]]:
    """Each placed allocation's trace carrier (by allocation id); those without one are left out."""
    by_position = {a.placed_position: a.alloc_id for a in allocations if a.placed_position is not None}
    if not by_position:
        return {}
    try:
        async with asyncio.timeout(LOOKUP_TIMEOUT_S):
            records = await store.read_at(by_position.keys())
    except TRANSIENT_DB_ERRORS as exc:
        log.warning(
            "allocator.placement_traces_unread",
            allocations=len(by_position),
            error=repr(exc),
            hint="the snapshot goes without them: containers it starts are traced on their own",
        )
        return {}
    carriers = {by_position[r.position]: trace_carrier_of(r.metadata) for r in records}
    return {alloc_id: carrier for alloc_id, carrier in carriers.items() if carrier}
