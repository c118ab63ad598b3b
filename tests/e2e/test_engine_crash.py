"""A laptop's Docker engine crashes (SIGKILL to dockerd) under running work, then starts again."""

import asyncio
import json
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from potluck.contracts.subjects import REPORT_PREFIX
from potluck.hostd.docker_driver import DockerDriver
from potluck.localstack.docker_engine import DockerEngine
from potluck.readmodels.allocations import ACTIVE
from tests.e2e.conftest import wait_for_status
from tests.e2e.sandboxes import alloc_event_types, container_of, laptop_with_a_sandbox
from tests.fixtures.pool import EnrolledHost, Pool, allocation, place, spec


async def settled(pool: Pool, alloc_id: str, timeout: float = 90) -> str:
    """The allocation's status once it no longer changes for a few seconds."""
    last, steady = "", 0
    async with asyncio.timeout(timeout):
        while steady < 20:
            state = await allocation(pool.store, alloc_id)
            status = state.status if state else "unknown"
            steady = steady + 1 if status == last else 0
            last = status
            await asyncio.sleep(0.25)
    return last


@pytest.mark.slow
@pytest.mark.liveness(0.5, 6, 120.0)
async def test_a_crashed_engine_leaves_no_container_unaccounted_and_the_other_laptop_serves(
    pool: Pool, laptop: EnrolledHost, tmp_path: Path, docker_engines: list[DockerEngine]
) -> None:
    """Tried: laptop B runs a task and an interactive sandbox on an engine of its own; its
    dockerd is killed with SIGKILL (containerd and the containers may live on), work is placed
    on laptop A meanwhile, then B's dockerd is started again.
    Must hold: A runs its work during the crash; after it, B's task is running or has ended
    with a reason, the sandbox runs, every container of the pool on B's engine belongs to an
    allocation the log says is active there (none nobody accounts for), and new work runs on B."""
    async with laptop_with_a_sandbox(pool, tmp_path, "laptop-b", "task") as (engine, driver, host, sandbox):
        assert host.process is not None
        await asyncio.to_thread(engine.kill)
        await place(pool.store, laptop.host_id, "on-a", spec())
        await wait_for_status(pool, "on-a", "running", timeout=60)
        await asyncio.sleep(3)  # hostd's calls meet the engine away
        assert host.process.running(), host.process.log_tail(80)
        await asyncio.to_thread(engine.start)

        task = await settled(pool, "task")
        task_state = await allocation(pool.store, "task")
        assert task_state is not None
        assert task == "running" or (task in ("exited", "failed") and task_state.reason), (
            task_state,
            await alloc_event_types(pool.store, "task"),
            pool.logs(),
        )
        await wait_for_status(pool, "sandbox", "running", timeout=60)
        await place(pool.store, host.host_id, "after", spec())
        await wait_for_status(pool, "after", "running", timeout=90)
        await asyncio.sleep(3)  # whatever hostd would clean up, cleaned up

        found = await asyncio.to_thread(driver.list_managed, host.host_id)
        for container in found:
            state = await allocation(pool.store, container.allocation_id)
            assert state is not None, container
            assert state.host_id == host.host_id, (container, state)
            if container.running:
                assert state.status in ACTIVE, (container, state, pool.logs())
                assert state.container_id == container.container_id, (container, state)
        running = {c.allocation_id for c in found if c.running}
        assert {"sandbox", "after"} <= running, (found, pool.logs())
        assert await container_of(pool, "sandbox") == sandbox, "the sandbox's container was replaced"
        with DockerDriver(docker_engines[0].url) as other:
            assert "on-a" in {c.allocation_id for c in other.list_managed(laptop.host_id) if c.running}


@pytest.mark.liveness(0.5, 6, 120.0)
async def test_a_crashed_engine_is_reported_away_until_it_answers_again(pool: Pool, tmp_path: Path) -> None:
    """Tried: a laptop with work running on an engine of its own (so hostd measures its disk
    every half second, with the engine's facts it read once); its dockerd is killed with
    SIGKILL, left down for a few seconds, then started again.
    Must hold: hostd reports the engine unavailable, and no report says it is available again
    until it was started again (before the fix: one at every disk check, hostd's remembered
    facts taken for an answer, each also starting a reconciliation against the dead engine);
    once it is back, it is reported available."""
    nc = await pool.client()
    reports: list[bool] = []
    async with laptop_with_a_sandbox(pool, tmp_path, "laptop-b", "task") as (engine, _, host, _):

        async def on_engine_report(msg: Msg) -> None:
            reports.append(bool(json.loads(msg.data)["available"]))

        await nc.subscribe(f"{REPORT_PREFIX}.{host.host_id}.engine", cb=on_engine_report)
        await nc.flush()
        await asyncio.to_thread(engine.kill)
        async with asyncio.timeout(30):
            while False not in reports:
                await asyncio.sleep(0.1)
        await asyncio.sleep(4)  # eight disk checks with the engine down
        down = list(reports)
        await asyncio.to_thread(engine.start)
        async with asyncio.timeout(60):
            while reports[-1] is not True:
                await asyncio.sleep(0.1)
    assert down[down.index(False) :] == [False], (down, pool.logs())
