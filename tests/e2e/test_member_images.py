"""A member's own images stay the member's: real registry, allocator, hostd and engines.

A member's engine holds images the member built or pulled with their own registry login
(`acme/internal-app:dev`, its source and whatever secret was baked in). hostd runs for the pool
only the images it pulled for the pool (its ledger, services/hostd/pool_images.py) and what a
non-empty `allowed_images` lists; anything else is, to the pool, absent: pulled the pool's way
or failed, never run, and never named in what hostd reports.
"""

import asyncio
import stat
from typing import Any

import aiohttp
import docker
import pytest

from potluck.contracts.host_images import images_stream
from potluck.hostd.pool_images import LEDGER_FILE
from potluck.localstack.docker_engine import DockerEngine
from tests.e2e.allocator_api import create_on
from tests.e2e.conftest import containers_from, engine_image_id, start_laptop
from tests.fixtures.images import build_and_push, get_allocation
from tests.fixtures.pool import Pool

MEMBERS_IMAGE = "acme/internal-app:dev"
MEMBERS_NAME = "docker.io/acme/internal-app:dev"


def _build_members_image(engine: DockerEngine) -> str:
    """The member's own image, built on their engine with a secret in it; its id."""
    client = docker.DockerClient(base_url=engine.url)
    try:
        made = client.containers.create(
            "potluck-test:latest", ["sh", "-c", "echo hunter2 > /secret"], network_mode="none"
        )
        made.start()
        made.wait(timeout=30)
        repository, _, tag = MEMBERS_IMAGE.rpartition(":")
        image = made.commit(repository, tag, changes=['CMD ["/bin/sh"]'])
        made.remove(force=True)
        return str(image.id)
    finally:
        client.close()


async def _reported(pool: Pool, host_id: str) -> list[str]:
    """The names the host's last image report gave the pool."""
    records = await pool.store.read_stream(images_stream(host_id))
    assert records, f"host {host_id} reported no images"
    images: list[str] = records[-1].data["images"]
    return images


async def _history(http: aiohttp.ClientSession, pool: Pool, token: str, alloc_id: str) -> list[str]:
    history: dict[str, Any] = await get_allocation(http, pool.api, token, alloc_id, "/events")
    return [entry["type"] for entry in history["events"]]


async def test_a_members_own_image_is_never_run_nor_named_unless_the_member_lists_it(
    pool: Pool, docker_engines: list[DockerEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tried: on laptop B, whose member kept the quick start's empty allowed_images and warm
    containers on, the member builds `acme/internal-app:dev` with a secret in it; bob asks for
    that name on B, twice (no registry can be reached, as for any pull of a name Docker Hub does
    not give him). On laptop A the member builds the same name and lists it in allowed_images;
    bob asks for it there. Must hold: on B each allocation fails with image_pull_failed without
    ever running, no container (warm or not) is made from the member's image, the name still
    names the member's image, and B's image reports never name it (nor the test image the
    member holds unlisted); on A, where the member consented, it runs from the member's image
    and is reported."""
    laptop_a, laptop_b = docker_engines
    await pool.wait_api()
    bob = await pool.add_user("bob")
    members_on_b = await asyncio.to_thread(_build_members_image, laptop_b)
    members_on_a = await asyncio.to_thread(_build_members_image, laptop_a)
    monkeypatch.setenv("POTLUCK_HOSTD_PULL_ATTEMPTS", "1")
    b = await start_laptop(pool, laptop_b, "laptop-b", allowed_images=[], warm_containers=1)
    a = await start_laptop(
        pool, laptop_a, "laptop-a", allowed_images=["potluck-test:*", "acme/internal-app:*"]
    )

    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            attempt = await create_on(http, pool.api, bob, MEMBERS_IMAGE, on="laptop-b")
            ended = await get_allocation(http, pool.api, bob, attempt["id"], "?wait=failed&timeout=90")
            assert ended["state"] == "failed", (ended, pool.logs(80))
            assert ended["reason"] == "image_pull_failed", ended
            assert "AllocationRunning" not in await _history(http, pool, bob, attempt["id"])
        assert await asyncio.to_thread(containers_from, laptop_b, members_on_b) == []
        assert await asyncio.to_thread(engine_image_id, laptop_b, MEMBERS_IMAGE) == members_on_b
        on_b = await _reported(pool, b.host_id)
        assert MEMBERS_NAME not in on_b, on_b
        assert "docker.io/library/potluck-test:latest" not in on_b, on_b

        consented = await create_on(http, pool.api, bob, MEMBERS_IMAGE, on="laptop-a")
        running = await get_allocation(http, pool.api, bob, consented["id"], "?wait=running&timeout=60")
        assert running["state"] == "running", (running, pool.logs(80))
        assert "AllocationPulling" not in await _history(http, pool, bob, consented["id"])
        assert await asyncio.to_thread(containers_from, laptop_a, members_on_a) != []
        assert MEMBERS_NAME in await _reported(pool, a.host_id)


async def test_an_image_hostd_pulled_runs_again_after_a_restart_without_a_second_pull(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """Tried: alice pushes her image to the pool registry; laptop B (empty allowed_images, so
    only what hostd pulled for the pool runs) pulls it for her allocation, which she releases;
    B's hostd restarts and the pool registry stops; she asks for it again. Must hold: the first
    allocation pulled and ran, and B reported the image's name afterwards; the ledger in B's
    state_dir holds its id and is readable by its owner alone; after the restart the image runs
    again with no pull (there is no registry to pull from)."""
    laptop_a, laptop_b = docker_engines
    await pool.wait_api()
    registry = await asyncio.to_thread(pool.start_image_registry)
    alice = await pool.add_user("alice")
    image = f"{registry.address}/alice/app:1"
    await asyncio.to_thread(build_and_push, laptop_a, [image], alice, layer="echo alice > /marker")
    b = await start_laptop(pool, laptop_b, "laptop-b", allowed_images=[])
    headers = {"Authorization": f"Bearer {alice}"}

    async with aiohttp.ClientSession() as http:
        first = await create_on(http, pool.api, alice, image)
        running = await get_allocation(http, pool.api, alice, first["id"], "?wait=running&timeout=90")
        assert running["state"] == "running", (running, pool.logs(80))
        assert "AllocationPulling" in await _history(http, pool, alice, first["id"])
        async with http.delete(f"{pool.api}/v1/allocations/{first['id']}", headers=headers) as response:
            assert response.status == 200, await response.text()
        pulled = await asyncio.to_thread(engine_image_id, laptop_b, image)
        assert pulled is not None
        ledger = pool.hostd_state_dir(b) / LEDGER_FILE
        assert pulled in ledger.read_text()
        assert stat.S_IMODE(ledger.stat().st_mode) == 0o600
        deadline = asyncio.get_running_loop().time() + 30
        while image not in await _reported(pool, b.host_id):
            assert asyncio.get_running_loop().time() < deadline, await _reported(pool, b.host_id)
            await asyncio.sleep(0.2)

        assert b.process is not None
        synced_before = b.process.log_path.read_text().count("hostd.synced")
        b.process.stop()
        await asyncio.to_thread(registry.stop)
        restarted = pool.start_hostd(b)
        # Placed only once the new hostd has synced: one placed while it registers is another
        # test's matter (the allocator may judge it lost by the report of the hostd that left).
        deadline = asyncio.get_running_loop().time() + 60
        while restarted.log_path.read_text().count("hostd.synced") == synced_before:
            assert restarted.running(), restarted.log_tail(40)
            assert asyncio.get_running_loop().time() < deadline, restarted.log_tail(40)
            await asyncio.sleep(0.2)
        await pool.wait_for_host(b.host_id, "active")
        again = await create_on(http, pool.api, alice, image)
        shown = await get_allocation(http, pool.api, alice, again["id"], "?wait=running&timeout=60")
        assert shown["state"] == "running", (shown, pool.logs(30))
        assert "AllocationPulling" not in await _history(http, pool, alice, again["id"])
