"""Shared steps of the end-to-end tests."""

import asyncio

import pytest

from potluck.localstack.docker_engine import DockerEngine
from tests.fixtures.pool import EnrolledHost, Pool, allocation


async def wait_for_status(pool: Pool, alloc_id: str, status: str, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        state = await allocation(pool.store, alloc_id)
        if state is not None and state.status == status:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"allocation {alloc_id} is {state.status if state else 'unknown'}, "
                f"not {status}\n{pool.logs()}"
            )
        await asyncio.sleep(0.1)


@pytest.fixture
async def laptop(pool: Pool, docker_engines: list[DockerEngine]) -> EnrolledHost:
    """One enrolled, registered, online host on the first private engine."""
    host = await pool.enroll("laptop-a")
    pool.write_config(host, docker_engines[0])
    pool.start_hostd(host)
    await pool.wait_for_host(host.host_id, "online")
    return host
