"""Work that ends at once is still logged as having run (real hostd, Docker engine and log).

A command such as `true` can exit before hostd has read its container's limits back and
reported it started. hostd then reported the exit first, the allocator ignored the late start,
and the allocation's history went from AllocationPlaced straight to AllocationExited: no
AllocationRunning, no start time, and a batch task with no duration (`potluck job show`).
"""

import asyncio

from potluck.contracts.allocation_events import alloc_stream
from tests.e2e.conftest import wait_for_status
from tests.fixtures.pool import EnrolledHost, Pool, place, spec

TASKS = 8


async def test_a_command_that_ends_at_once_is_logged_running_then_exited(
    pool: Pool, laptop: EnrolledHost
) -> None:
    """Tried: eight allocations whose command is `true`, placed on one host together. Must
    hold: each ends `exited` with code 0, and its history has AllocationRunning before
    AllocationExited."""
    ids = [f"quick-{i}" for i in range(TASKS)]
    await asyncio.gather(
        # A quarter of a CPU each: the eight together fit the 2 CPUs donated, as hostd demands.
        *(place(pool.store, laptop.host_id, alloc_id, spec(cpus=0.25, command=["true"])) for alloc_id in ids)
    )
    for alloc_id in ids:
        await wait_for_status(pool, alloc_id, "exited", timeout=60)
    for alloc_id in ids:
        types = [e.type for e in await pool.store.read_stream(alloc_stream(alloc_id))]
        assert "AllocationRunning" in types, (alloc_id, types)
        assert types.index("AllocationRunning") < types.index("AllocationExited"), (alloc_id, types)
