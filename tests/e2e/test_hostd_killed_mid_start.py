"""hostd killed with SIGKILL while it is starting containers (between AllocationPlaced and the
container running, wherever in create, verify and start it is), then started again."""

import asyncio

import pytest

from potluck.hostd.docker_driver import DockerDriver
from potluck.localstack.docker_engine import DockerEngine
from potluck.readmodels.allocations import ACTIVE
from tests.fixtures.pool import EnrolledHost, Pool, allocation, place, spec

ALLOCS = [f"mid-{i}" for i in range(6)]


@pytest.mark.liveness(0.5, 6, 60.0)
async def test_hostd_killed_while_starting_leaves_each_allocation_clear_and_no_orphan(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    """Tried: six allocations placed on a laptop at once; as soon as the engine holds the
    first container (created, perhaps not started), hostd is killed (SIGKILL), the others
    caught somewhere between placed and running; hostd is started again.
    Must hold: each allocation ends running, or failed with a reason (none stays placed);
    the engine holds one container for each running one, none for any other."""
    driver = DockerDriver(docker_engines[0].url)
    for alloc_id in ALLOCS:
        await place(pool.store, laptop.host_id, alloc_id, spec(cpus=0.25))  # all fit its 2 CPUs
    assert laptop.process is not None
    async with asyncio.timeout(60):
        # The first container the engine holds (created, perhaps not started yet): hostd is
        # in the middle of its starts.
        while not await asyncio.to_thread(driver.list_managed, laptop.host_id):
            await asyncio.sleep(0.01)
    laptop.process.kill()
    pool.start_hostd(laptop)

    async with asyncio.timeout(90):
        while True:
            states = [await allocation(pool.store, a) for a in ALLOCS]
            if all(s is not None and s.status not in ("placed", "pending") for s in states):
                break
            await asyncio.sleep(0.2)
    await asyncio.sleep(3)  # the restarted hostd's reconciliation, done
    states = [await allocation(pool.store, a) for a in ALLOCS]
    with driver:
        found = await asyncio.to_thread(driver.list_managed, laptop.host_id)
    held: dict[str, list[str]] = {}
    for container in found:
        held.setdefault(container.allocation_id, []).append(container.container_id)
    for state in states:
        assert state is not None
        if state.status in ACTIVE:
            assert state.status == "running", (state, pool.logs())
            assert held.get(state.alloc_id) == [state.container_id], (state, held)
        else:
            assert state.reason, state
            assert state.alloc_id not in held, (state, held)
    assert set(held) <= set(ALLOCS), held
