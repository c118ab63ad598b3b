"""Placement knows where images are: two laptops (two Docker engines), the image only on one.

Real registry, allocator and two hostds. Laptop A's engine alone holds the image
`locality-test:1`; both members allow it. A donates more than B, so best fit alone
would choose B, which does not have the image.
"""

import asyncio
from typing import Any

import aiohttp

from potluck.contracts.host_images import HostImagesReported, images_stream
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG, import_rootfs, rootfs_tarball
from tests.e2e.conftest import wait_for_status
from tests.fixtures.pool import Pool

IMAGE = "locality-test:1"
HELD_NAME = "docker.io/library/locality-test:1"
GIB = 1 << 30


async def logged_images(pool: Pool, host_id: str) -> set[str]:
    records = await pool.store.read_stream(images_stream(host_id))
    events = [pool.store.registry.decode_record(r) for r in records]
    held = [e for e in events if isinstance(e, HostImagesReported)]
    return set(held[-1].images) if held else set()


async def test_allocations_go_first_to_the_laptop_that_holds_the_image(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """Tried: the image imported into engine A only; A donates 1.5 cpus, B 1 (within the test
    machine's two cores, as hostd demands); four allocations of 0.5 cpu each. Must hold: each
    hostd's report is logged (A's names the image, B's does not); the first three are placed
    on A (where they run), the fourth, with A full, on B; A's registered disk is its donation
    less its image_cache; an image that later reaches B's engine is in B's next logged report."""
    engine_a, engine_b = docker_engines
    await asyncio.to_thread(
        import_rootfs,
        engine_a.url,
        rootfs_tarball(),
        IMAGE,
        changes=["ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin", 'CMD ["/bin/sh"]'],
    )
    allowed = [DEFAULT_TAG, "locality-test:*"]
    a, b = await pool.enroll("laptop-a"), await pool.enroll("laptop-b")
    pool.write_config(
        a,
        engine_a,
        allowed_images=allowed,
        image_cache="1G",
        donate={"cpus": 1.5, "memory": "2G", "disk": "4G"},
    )
    pool.write_config(b, engine_b, allowed_images=allowed, donate={"cpus": 1, "memory": "2G", "disk": "4G"})
    pool.start_hostd(a)
    pool.start_hostd(b)
    await pool.wait_for_host(a.host_id, "active")
    await pool.wait_for_host(b.host_id, "active")
    deadline = asyncio.get_running_loop().time() + 30
    while not (
        HELD_NAME in await logged_images(pool, a.host_id)
        and f"docker.io/library/{DEFAULT_TAG}" in await logged_images(pool, b.host_id)
    ):
        assert asyncio.get_running_loop().time() < deadline, f"no image report logged\n{pool.logs()}"
        await asyncio.sleep(0.2)
    assert HELD_NAME not in await logged_images(pool, b.host_id)
    donated = (await pool.hosts()).hosts[a.host_id].donated
    assert donated is not None
    assert donated.disk_bytes == 3 * GIB

    await pool.wait_api()
    headers = {"Authorization": f"Bearer {await pool.add_user('alice')}"}
    body = {"cpus": 0.5, "memory": "64M", "disk": "64M", "image": IMAGE, "command": ["sleep", "3600"]}
    placed: list[tuple[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        for _ in range(4):
            async with http.post(f"{pool.api}/v1/allocations", json=body, headers=headers) as r:
                created: dict[str, Any] = await r.json()
                assert r.status == 201, created
            async with http.get(f"{pool.api}/v1/allocations/{created['id']}", headers=headers) as r:
                shown = await r.json()
            placed.append((created["id"], shown["host_id"]))
    assert [host for _, host in placed] == [a.host_id] * 3 + [b.host_id], (placed, pool.logs())
    for alloc_id, _ in placed[:3]:
        await wait_for_status(pool, alloc_id, "running")

    # B's engine gets the image too (by hand, as a member might): its hostd notices from the
    # engine's events and the pool learns of it.
    await asyncio.to_thread(import_rootfs, engine_b.url, rootfs_tarball(), IMAGE, changes=[])
    deadline = asyncio.get_running_loop().time() + 15
    while HELD_NAME not in await logged_images(pool, b.host_id):
        assert asyncio.get_running_loop().time() < deadline, f"B's new image never logged\n{pool.logs()}"
        await asyncio.sleep(0.2)
