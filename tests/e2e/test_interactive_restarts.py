"""An interactive allocation is up until released or expired: its container stopped from outside
(the keep-alive killed, as an engine shutdown or the OOM killer would) is started again by hostd,
a bounded number of times (services/hostd/restart_budget.py). Real hostd, Docker, NATS and log.
The engine restarting under a running hostd is in test_host_faults.py."""

import asyncio
from pathlib import Path

from potluck.hostd.docker_driver import DockerDriver
from potluck.hostd.restart_budget import RestartBudget
from potluck.localstack.docker_engine import DockerEngine
from tests.e2e.conftest import wait_for_status
from tests.e2e.sandboxes import (
    alloc_event_types,
    assert_file_kept,
    container_of,
    laptop_with_a_sandbox,
    sandbox_beside_a_task,
    wait_for_events,
    wait_running_again,
)
from tests.fixtures.pool import EnrolledHost, Pool, allocation


async def _kill(driver: DockerDriver, container_id: str) -> None:
    """SIGKILL to the container's PID 1 (docker-init): the container dies with 137."""
    started = (await asyncio.to_thread(driver.state, container_id)).started_at
    await asyncio.to_thread(driver.signal, container_id, "KILL")
    async with asyncio.timeout(30):
        while True:
            now = await asyncio.to_thread(driver.state, container_id)
            if not now.running or now.started_at != started:
                return
            await asyncio.sleep(0.05)


async def test_a_killed_keep_alive_is_started_again_until_its_budget_then_its_end_is_reported(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    """What is tried: an interactive allocation's container is killed from outside, once more
    than hostd's restart budget allows; a task's container is killed once. What must hold: each
    time within the budget the same container runs again with the file written before the first
    kill, and the allocation stays running with no end logged; the kill past the budget ends it
    (exited, 137, its reason saying so), as a task's kill ends the task at once (exited, 137,
    no restart, its reason saying it was stopped on its host)."""
    budget = RestartBudget()
    driver = DockerDriver(docker_engines[0].url)
    try:
        sandbox = await sandbox_beside_a_task(pool, laptop.host_id, driver, "task")

        for _ in range(budget.times):
            await _kill(driver, sandbox)
            await wait_running_again(driver, sandbox, timeout=30)
            await assert_file_kept(driver, sandbox)
        state = await allocation(pool.store, "sandbox")
        assert state is not None
        assert state.status == "running", pool.logs()
        assert await container_of(pool, "sandbox") == sandbox
        await wait_for_events(pool, "sandbox", "AllocationRestarted", budget.times)
        assert "AllocationExited" not in await alloc_event_types(pool.store, "sandbox")
        assert "hostd.container_restarted" in (laptop.process.log_tail(400) if laptop.process else "")

        await _kill(driver, sandbox)
        await wait_for_status(pool, "sandbox", "exited", timeout=30)
        state = await allocation(pool.store, "sandbox")
        assert state is not None
        assert state.exit_code == 137
        assert state.reason is not None
        assert "could not keep its container running" in state.reason

        await _kill(driver, await container_of(pool, "task"))
        await wait_for_status(pool, "task", "exited", timeout=30)
        state = await allocation(pool.store, "task")
        assert state is not None
        assert state.exit_code == 137
        # Killed from outside Potluck, on its host: its user reads so, not a bare 137.
        assert state.reason == "stopped on its host (by its member, or its Docker engine stopped)", state
    finally:
        driver.close()


async def test_after_a_reboot_hostd_starts_the_interactive_container_again_and_reports_the_task(
    pool: Pool, tmp_path: Path
) -> None:
    """A member's reboot: hostd is killed (-9), then its engine restarts with hostd away, then
    hostd starts. What must hold: the interactive allocation is still running, in the same
    container with the file written before; the task that ran is exited (143) once hostd is
    back, saying it was stopped on its host (no hostd saw the stop: its engine stopped it as
    it shut down), so that a job would re-queue it; nothing placed ends lost."""
    # hostd is away for seconds: long enough to be suspected, not lost.
    pool.processes["registry"].stop()
    pool.liveness = (0.5, 3, 120.0)
    pool.start_registry()
    async with laptop_with_a_sandbox(pool, tmp_path, "rebooted", "task") as (engine, driver, host, sandbox):
        assert host.process is not None
        host.process.kill()
        await asyncio.to_thread(engine.restart)
        assert not (await asyncio.to_thread(driver.state, sandbox)).running
        pool.start_hostd(host)

        process = host.process
        await wait_running_again(driver, sandbox, logs=lambda: process.log_tail(100) if process else "")
        await assert_file_kept(driver, sandbox)
        await wait_for_status(pool, "task", "exited", timeout=60)
        task = await allocation(pool.store, "task")
        assert task is not None
        assert task.exit_code == 143
        assert (task.reason, task.exited_by_host) == (
            "stopped on its host (by its member, or its Docker engine stopped)",
            True,
        ), task
        state = await allocation(pool.store, "sandbox")
        assert state is not None
        assert state.status == "running", pool.logs()
        await wait_for_events(pool, "sandbox", "AllocationRestarted", 1)
        assert "AllocationExited" not in await alloc_event_types(pool.store, "sandbox")
