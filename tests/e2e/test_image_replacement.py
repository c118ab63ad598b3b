"""A failed pull re-places the allocation on another host (issue 14): real registry, real
allocator and hostds, two engines.

Before this change a host's failed pull failed the allocation at once, although another host
of the pool held the image.
"""

import asyncio
from typing import Any

import aiohttp

from potluck.hostd.docker_driver import DockerDriver
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG
from tests.e2e.conftest import member, wait_for_status
from tests.fixtures.images import build_and_push, get_allocation, remove_images
from tests.fixtures.pool import Pool


def _containers_of(engine: DockerEngine, host_id: str) -> list[str]:
    with DockerDriver(engine.url) as driver:
        return [c.allocation_id for c in driver.list_managed(host_id)]


async def test_a_failed_pull_places_the_allocation_on_another_host_and_fails_only_when_none_can(
    pool: Pool, docker_engines: list[DockerEngine], monkeypatch: Any
) -> None:
    """Tried: alice's image is in the pool registry and on laptop A only; the registry stops;
    A is paused, so her allocation goes to laptop B, whose pull fails; then A resumes. Then an
    image no host holds is asked for. Must hold: the first allocation goes back to `pending`
    showing B and B's reason, is never placed on B again, and ends running on A; its history
    shows AllocationUnplaced on B; B holds nothing of it and no capacity. The second fails on
    both hosts, once each, and then fails with `image_pull_failed` naming each host's reason."""
    laptop_a, laptop_b = docker_engines
    await pool.wait_api()
    registry = await asyncio.to_thread(pool.start_image_registry)
    alice = await pool.add_user("alice")
    own, nowhere = f"{registry.address}/alice/own:1", f"{registry.address}/alice/nowhere:1"
    await asyncio.to_thread(build_and_push, laptop_a, [own, nowhere], alice, keep=True)
    await asyncio.to_thread(remove_images, laptop_a, [nowhere])  # only in the registry
    try:
        await asyncio.to_thread(registry.stop)

        # Short retries: two attempts, one second apart.
        monkeypatch.setenv("POTLUCK_HOSTD_PULL_ATTEMPTS", "2")
        monkeypatch.setenv("POTLUCK_HOSTD_PULL_BACKOFF_S", "1")
        allowed = [DEFAULT_TAG, f"{registry.address}/alice/*:*"]
        host_a, host_b = await pool.enroll("laptop-a"), await pool.enroll("laptop-b")
        pool.write_config(host_a, laptop_a, allowed_images=allowed)
        pool.write_config(host_b, laptop_b, allowed_images=allowed)
        pool.start_hostd(host_a)
        pool.start_hostd(host_b)
        await pool.wait_for_host(host_a.host_id, "active")
        await pool.wait_for_host(host_b.host_id, "active")
        paused = await asyncio.to_thread(member, host_a, "pause")
        assert paused.returncode == 0, paused.stderr
        await pool.wait_for_host(host_a.host_id, "paused")

        headers = {"Authorization": f"Bearer {alice}"}
        body = {"cpus": 0.2, "memory": "64M", "disk": "64M", "image": own, "command": ["sleep", "3600"]}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{pool.api}/v1/allocations", json=body, headers=headers) as response:
                created = await response.json()
                assert response.status in (201, 202), created
            alloc_id = created["id"]
            assert created["host_id"] == host_b.host_id, created

            # B cannot get the image: the allocation waits for a host again, B's reason shown.
            for _ in range(300):
                shown = await get_allocation(http, pool.api, alice, alloc_id)
                if shown["failed_on"]:
                    break
                await asyncio.sleep(0.1)
            assert shown["state"] == "pending", (shown, pool.logs(80))
            assert shown["host_id"] is None
            [failure] = shown["failed_on"]
            assert failure["host_id"] == host_b.host_id
            assert failure["reason"] == "image_pull_failed"
            assert registry.address in failure["detail"], failure

            resumed = await asyncio.to_thread(member, host_a, "resume")
            assert resumed.returncode == 0, resumed.stderr
            running = await get_allocation(http, pool.api, alice, alloc_id, "?wait=running&timeout=60")
            assert running["state"] == "running", (running, pool.logs(80))
            assert running["host_id"] == host_a.host_id
            history = await get_allocation(http, pool.api, alice, alloc_id, "/events")
            steps = [(e["type"], e["data"].get("host_id")) for e in history["events"]]
            placed_b = steps.index(("AllocationPlaced", host_b.host_id))
            unplaced_b = steps.index(("AllocationUnplaced", host_b.host_id))
            placed_a = steps.index(("AllocationPlaced", host_a.host_id))
            assert placed_b < unplaced_b < placed_a < steps.index(("AllocationRunning", host_a.host_id)), (
                steps
            )
            assert [s for s in steps if s[0] == "AllocationPlaced"] == [
                ("AllocationPlaced", host_b.host_id),
                ("AllocationPlaced", host_a.host_id),
            ], steps
            assert alloc_id not in await asyncio.to_thread(_containers_of, laptop_b, host_b.host_id)

            # An image no host can get: tried on each host once, then failed naming both.
            body["image"] = nowhere
            async with http.post(f"{pool.api}/v1/allocations", json=body, headers=headers) as response:
                doomed = await response.json()
                assert response.status in (201, 202), doomed
            failed = await get_allocation(http, pool.api, alice, doomed["id"], "?wait=failed&timeout=60")
            assert failed["state"] == "failed", (failed, pool.logs(80))
            assert failed["reason"] == "image_pull_failed"
            for host in (host_a, host_b):
                assert f"host {host.host_id}: " in failed["detail"], failed["detail"]
            assert sorted(f["host_id"] for f in failed["failed_on"]) == sorted(
                [host_a.host_id, host_b.host_id]
            )
            history = await get_allocation(http, pool.api, alice, doomed["id"], "/events")
            placements = [e["data"]["host_id"] for e in history["events"] if e["type"] == "AllocationPlaced"]
            assert sorted(placements) == sorted([host_a.host_id, host_b.host_id]), placements

            async with http.get(f"{pool.api}/v1/pool", headers=headers) as response:
                hosts = {h["host_id"]: h for h in (await response.json())["hosts"]}
            # Only the running allocation still holds capacity, on A.
            assert hosts[host_b.host_id]["reserved"]["cpus"] == 0, hosts
            assert abs(hosts[host_a.host_id]["reserved"]["cpus"] - 0.2) < 1e-9, hosts
            await wait_for_status(pool, alloc_id, "running", timeout=5)
    finally:
        await asyncio.to_thread(remove_images, laptop_a, [own, nowhere])
