"""A laptop gone silent (its hostd stopped, SIGSTOP) past the liveness window, then back:
nothing of the pool runs twice on it, and nothing is counted twice."""

import asyncio
import os
import signal

from potluck.allocator import decisions
from potluck.allocator.capacity import CapacityLedger
from potluck.contracts.allocation_events import capacity_stream
from potluck.events import registry
from potluck.hostd.docker_driver import DockerDriver
from potluck.localstack.docker_engine import DockerEngine
from tests.e2e.conftest import wait_for_status
from tests.e2e.sandboxes import alloc_event_types
from tests.fixtures.pool import EnrolledHost, Pool, allocation, place, spec


async def running_here(driver: DockerDriver, host_id: str) -> set[str]:
    return {c.allocation_id for c in await asyncio.to_thread(driver.list_managed, host_id) if c.running}


async def test_a_laptop_back_from_silence_stops_what_the_pool_gave_up_and_released(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    """Tried: two allocations run on a laptop; its hostd is stopped (SIGSTOP); one of them is
    released while it is away; the registry marks the laptop unreachable, then lost; hostd is
    continued (SIGCONT).
    Must hold: the one left is lost (its capacity freed), the released one released; once the
    laptop is back neither runs on its engine any more, and neither is said to run again in
    the log (no AllocationRunning after its end); the laptop's capacity ledger holds nothing
    of them; new work placed on it runs and is counted once."""
    await place(pool.store, laptop.host_id, "given-up", spec())
    await place(pool.store, laptop.host_id, "let-go", spec())
    await wait_for_status(pool, "given-up", "running")
    await wait_for_status(pool, "let-go", "running")
    assert laptop.process is not None
    assert laptop.process.pid is not None
    os.kill(laptop.process.pid, signal.SIGSTOP)
    try:
        # As the allocator's DELETE does: released, and its capacity freed in one append.
        let_go = await allocation(pool.store, "let-go")
        assert let_go is not None
        await pool.store.append_streams(decisions.release(let_go, "test"))
        await pool.wait_for_host(laptop.host_id, "lost", timeout=30)
        await wait_for_status(pool, "given-up", "lost", timeout=30)
    finally:
        os.kill(laptop.process.pid, signal.SIGCONT)
    await pool.wait_for_host(laptop.host_id, "active", timeout=30)

    with DockerDriver(docker_engines[0].url) as driver:
        async with asyncio.timeout(30):
            while await running_here(driver, laptop.host_id) & {"given-up", "let-go"}:
                await asyncio.sleep(0.2)
        await place(pool.store, laptop.host_id, "after", spec())
        await wait_for_status(pool, "after", "running", timeout=60)
        await asyncio.sleep(2)  # what the return's reports would change, changed
        assert await running_here(driver, laptop.host_id) == {"after"}

    for alloc_id, end in (("given-up", "AllocationLost"), ("let-go", "AllocationReleased")):
        types = await alloc_event_types(pool.store, alloc_id)
        assert "AllocationRunning" not in types[types.index(end) :], types
        state = await allocation(pool.store, alloc_id)
        assert state is not None
        assert state.status == ("lost" if alloc_id == "given-up" else "released"), state
    ledger = CapacityLedger()
    for record in await pool.store.read_stream(capacity_stream(laptop.host_id)):
        ledger.apply(registry.decode_record(record), version=record.version)
    assert ledger.reserved(laptop.host_id) == spec().resources, ledger.reserved(laptop.host_id)
