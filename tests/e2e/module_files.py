"""One pool, gateway and hostd for all the file-transfer tests of a module, instead of one each.

Starting them (a pool, the gateway, a hostd linked to it, the user) took about 10 s a test, and
the three modules of such tests (test_file_transfer.py, test_upload_bounds.py,
test_sftp_bounds.py) hold some forty. Each of their tests makes its own allocations and touches
nothing else of the pool, so they can share one: each test gets the module's `Gatewayed`, and
after the test every allocation the test asked for that is not over is released, and the wait
goes on until each is over and the engine holds no container of it. The next test finds the
pool as the first did: its user's allocations all over, and all of the host's donation free.

A module takes the two fixtures below in its own namespace (`files` named as conftest's, so
its tests stay as they were):

    module_files = module_files_fixtures.module_files
    files = module_files_fixtures.files
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from potluck.hostd.docker_driver import DockerDriver
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG
from tests.e2e.conftest import Gatewayed, start_gatewayed
from tests.fixtures.pool import Pool, allocation

__all__ = ["files", "module_files"]

#: How long a released allocation may take to be over and its container gone.
RELEASE_WAIT_S = 60.0


async def start_module_files(
    pool: Pool, engine: DockerEngine, default_image: str, workdir: Path
) -> Gatewayed:
    """What conftest's `files` starts (a gateway and a hostd on `engine` that may run both the
    default image and the busybox test image, a user), for a module's tests to share."""
    return await start_gatewayed(
        pool,
        engine,
        workdir,
        allowed_images=[DEFAULT_TAG, default_image],
        donate={"cpus": 2, "memory": "2G", "disk": "6G"},
    )


@pytest.fixture(scope="module")
async def module_files(
    module_pool: Pool,
    docker_engines: list[DockerEngine],
    default_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Gatewayed:
    """One gateway and hostd for the module's tests."""
    workdir = tmp_path_factory.mktemp("files")
    return await start_module_files(module_pool, docker_engines[0], default_image, workdir)


@pytest.fixture
async def files(module_files: Gatewayed, docker_engines: list[DockerEngine]) -> AsyncIterator[Gatewayed]:
    """The module's gateway and hostd; what the test allocated is released and gone after it."""
    async with one_test(module_files, docker_engines[0]) as g:
        yield g


@contextlib.asynccontextmanager
async def one_test(g: Gatewayed, engine: DockerEngine) -> AsyncIterator[Gatewayed]:
    """The module's gateway and hostd for one test; afterwards, what the test allocated is
    released and gone (see the module's docstring)."""
    store = g.pool.store
    since = await store.head_position()
    yield g
    made = [
        str(r.data["alloc_id"])
        for r in await store.read_all(since, limit=100_000)
        if r.type == "AllocationRequested"
    ]
    await release(g, made)
    await gone(g, engine, made)


async def release(g: Gatewayed, alloc_ids: list[str]) -> None:
    """Each of `alloc_ids` that is not over released by its user, as `potluck rm` would."""
    headers = {"Authorization": f"Bearer {g.token}"}
    async with aiohttp.ClientSession() as http:
        for alloc_id in alloc_ids:
            state = await allocation(g.pool.store, alloc_id)
            if state is None or state.terminal:
                continue
            async with http.delete(f"{g.pool.api}/v1/allocations/{alloc_id}", headers=headers) as r:
                said = await r.text()
            if r.status != 200:  # refused only if it ended meanwhile (the disk guard failed it)
                state = await allocation(g.pool.store, alloc_id)
                assert state is not None, f"{alloc_id}: {r.status} {said}"
                assert state.terminal, f"{alloc_id}: {r.status} {said}"


async def gone(g: Gatewayed, engine: DockerEngine, alloc_ids: list[str]) -> None:
    """Until each of `alloc_ids` is over in the log and the engine holds no container of it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RELEASE_WAIT_S
    wanted = set(alloc_ids)
    with DockerDriver(engine.url) as driver:
        while True:
            states = [await allocation(g.pool.store, a) for a in alloc_ids]
            left = [s.alloc_id for s in states if s is not None and not s.terminal]
            held = [c.allocation_id for c in await asyncio.to_thread(driver.list_managed, None)]
            if not left and not wanted & set(held):
                return
            assert loop.time() < deadline, f"not over: {left}; containers of {held}\n{g.pool.logs()}"
            await asyncio.sleep(0.1)
