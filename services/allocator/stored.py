"""An allocation the model no longer holds, folded from its own stream in the log on demand.

The model drops an allocation once it has been ended longer than the retention window
(retention.py); what the API said of it (`GET /v1/allocations/{id}`, its history, a release
that has nothing left to do) still holds: its state is the fold of its own `alloc-<id>` stream
with the very `evolve` the model folds, so it answers as the model did before it let go. One
indexed read of one stream, of a length bounded by the allocation's own life, never the log.
"""

import re

from potluck.allocator.model import passed_over
from potluck.contracts.allocation_events import alloc_stream
from potluck.contracts.job_events import job_stream
from potluck.events import EventStore, SkippedEvents
from potluck.events.projection import decode_or_skip
from potluck.readmodels import jobs
from potluck.readmodels.allocations import AllocationState, evolve

__all__ = ["ALLOC_ID", "stored_allocation", "stored_job"]

#: What the allocator names allocations (decisions.new_alloc_id): anything else was never one,
#: and costs no read of the log.
ALLOC_ID = re.compile(r"a-[0-9a-f]{12}")


async def stored_allocation(
    store: EventStore,
    alloc_id: str,
    *,
    skipped: SkippedEvents | None = None,
    reader: str = "allocator-stored",
) -> AllocationState | None:
    """The allocation as its stream in the log says (None: the log has no such allocation).

    An event of the stream that cannot be read is skipped (logged as `reader`'s, and counted in
    `skipped`) but still counts in the version, as in the model."""
    state: AllocationState | None = None
    skipped = SkippedEvents(keep=1) if skipped is None else skipped
    for record in await store.read_stream(alloc_stream(alloc_id)):
        event = decode_or_skip(record, skipped, reader=reader)
        if event is None:
            state = passed_over(state, record)
        else:
            state = evolve(state, event, record.version, record.recorded_at, record.position)
    return state


async def stored_job(
    store: EventStore, job_id: str, *, reader: str = "allocator-stored"
) -> jobs.JobState | None:
    """The job as its stream in the log says (None: the log has no such job): what an
    Idempotency-Key's job that has left the model's memory was (idempotency.py)."""
    state: jobs.JobState | None = None
    skipped = SkippedEvents(keep=1)
    for record in await store.read_stream(job_stream(job_id)):
        event = decode_or_skip(record, skipped, reader=reader)
        if event is not None:
            state = jobs.evolve(state, event, record.version, record.recorded_at) or state
    return state
