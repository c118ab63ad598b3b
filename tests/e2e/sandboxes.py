"""Interactive allocations on a laptop, for the tests of what survives their container
stopping (test_host_faults: the engine restarting; test_interactive_restarts: a reboot, a
killed keep-alive): a sandbox with a file in it, and waits on its container and its log."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from potluck.contracts.allocation_events import AllocationSpec, alloc_stream
from potluck.events import EventStore
from potluck.hostd.docker_driver import ContainerNotFound, DockerDriver
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import build_test_image
from tests.e2e.conftest import start_laptop, wait_for_status
from tests.fixtures.pool import EnrolledHost, Pool, allocation, place, spec


def interactive() -> AllocationSpec:
    """An allocation without a command: up until released or expired."""
    return spec().model_copy(update={"command": None})


async def container_of(pool: Pool, alloc_id: str) -> str:
    state = await allocation(pool.store, alloc_id)
    assert state is not None
    assert state.container_id, state
    return state.container_id


async def alloc_event_types(store: EventStore, alloc_id: str) -> list[str]:
    return [r.type for r in await store.read_stream(alloc_stream(alloc_id))]


async def wait_running_again(
    driver: DockerDriver, container_id: str, timeout: float = 60, logs: Callable[[], str] = str
) -> None:
    """Until the container runs (again); gone or still stopped after `timeout` fails, with `logs()`."""
    try:
        async with asyncio.timeout(timeout):
            while not (await asyncio.to_thread(driver.state, container_id)).running:
                await asyncio.sleep(0.2)
    except (TimeoutError, ContainerNotFound) as exc:
        raise AssertionError(f"container {container_id[:12]} does not run again: {exc!r}\n{logs()}") from None


async def sandbox_beside_a_task(pool: Pool, host_id: str, driver: DockerDriver, task: str) -> str:
    """`sandbox` (interactive, a file written in it) and the task `task` placed on `host_id` and
    running; the sandbox's container id."""
    await place(pool.store, host_id, task, spec())
    await place(pool.store, host_id, "sandbox", interactive())
    await wait_for_status(pool, task, "running")
    await wait_for_status(pool, "sandbox", "running")
    sandbox = await container_of(pool, "sandbox")
    wrote = await asyncio.to_thread(driver.exec_run, sandbox, ["sh", "-c", "echo kept > /kept.txt"])
    assert wrote.exit_code == 0, wrote.output
    return sandbox


async def assert_file_kept(driver: DockerDriver, sandbox: str) -> None:
    read = await asyncio.to_thread(driver.exec_run, sandbox, ["cat", "/kept.txt"])
    assert read.output.strip() == b"kept", read.output


@contextlib.asynccontextmanager
async def laptop_with_a_sandbox(
    pool: Pool, directory: Path, name: str, task: str
) -> AsyncIterator[tuple[DockerEngine, DockerDriver, EnrolledHost, str]]:
    """A laptop `name` on an engine of its own (in `directory`), with `sandbox` (see
    sandbox_beside_a_task) and the task `task` running on it; the sandbox's container id last."""
    engine = DockerEngine(directory / "own-engine")
    engine.start()
    driver = DockerDriver(engine.url)
    try:
        build_test_image(engine.url)
        host = await start_laptop(pool, engine, name)
        yield engine, driver, host, await sandbox_beside_a_task(pool, host.host_id, driver, task)
    finally:
        driver.close()
        engine.stop()


async def wait_for_events(pool: Pool, alloc_id: str, event: str, count: int, timeout: float = 30) -> None:
    """Until `alloc_id`'s stream holds `count` events of type `event` (no more, at the end)."""
    async with asyncio.timeout(timeout):
        while (types := await alloc_event_types(pool.store, alloc_id)).count(event) < count:
            await asyncio.sleep(0.1)
    assert types.count(event) == count, types
