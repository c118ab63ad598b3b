"""An image that unpacks to more than a host's donated disk: real registry, allocator, hostd, engines.

A pull's stream announces compressed sizes only: a layer of zeros is a thousandth of what it
unpacks to on the member's disk.
"""

import asyncio

import aiohttp
import pytest

from potluck.localstack.docker_engine import DockerEngine
from tests.e2e.conftest import start_laptop
from tests.fixtures.images import build_and_push, get_allocation, has_image
from tests.fixtures.pool import Pool


async def test_an_image_that_unpacks_past_the_donated_disk_fails_and_leaves_nothing(
    pool: Pool, docker_engines: list[DockerEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tried: alice pushes an image with a 96 MB layer of zeros (some 100 KB compressed) and a
    small one; each is asked for on laptop B, which donates 64 MB of disk. Must hold: the big
    one fails with image_pull_failed after one try, its detail saying how much it takes
    unpacked and what the host donates, and the engine no longer holds it; the small one runs."""
    laptop_a, laptop_b = docker_engines
    await pool.wait_api()
    registry = await asyncio.to_thread(pool.start_image_registry)
    alice = await pool.add_user("alice")
    zeros, small = f"{registry.address}/alice/zeros:1", f"{registry.address}/alice/small:1"
    await asyncio.to_thread(
        build_and_push, laptop_a, [zeros], alice, layer="head -c 100663296 /dev/zero > /z"
    )
    await asyncio.to_thread(build_and_push, laptop_a, [small], alice)

    monkeypatch.setenv("POTLUCK_HOSTD_PULL_ATTEMPTS", "2")
    monkeypatch.setenv("POTLUCK_HOSTD_PULL_BACKOFF_S", "1")
    await start_laptop(
        pool,
        laptop_b,
        "laptop-b",
        allowed_images=[f"{registry.address}/alice/*:*"],
        donate={"cpus": 1, "memory": "1G", "disk": "64M"},
    )

    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {alice}"}
        ids = {}
        for image in (zeros, small):
            body = {"cpus": 0.2, "memory": "64M", "disk": "16M", "image": image, "command": ["sleep", "3600"]}
            async with http.post(f"{pool.api}/v1/allocations", json=body, headers=headers) as response:
                created = await response.json()
                assert response.status in (201, 202), created
                ids[image] = created["id"]

        failed = await get_allocation(http, pool.api, alice, ids[zeros], "?wait=failed&timeout=60")
        assert failed["state"] == "failed", (failed, pool.logs(80))
        assert failed["reason"] == "image_pull_failed"
        assert "unpacked, it takes" in failed["detail"], failed["detail"]
        assert f"more than the {64 * 1024 * 1024} bytes of disk this host donates" in failed["detail"]
        assert "(tried once)" in failed["detail"], failed["detail"]
        assert not await asyncio.to_thread(has_image, laptop_b, zeros)

        running = await get_allocation(http, pool.api, alice, ids[small], "?wait=running&timeout=60")
        assert running["state"] == "running", (running, pool.logs(80))
