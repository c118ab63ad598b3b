"""A user's image name reaches only images of that name: real registry, allocator, hostd and engine.

A Docker engine reads a name it does not hold as an image id, or as the first characters of one
(`docker run 3f2a` runs the only image whose id starts so). On a member's engine that holds
another user's private image (pulled for that user's allocation) or the member's own, such a
name would run it for anyone whose allocation named those characters, past the pool registry's
namespaces.
"""

import asyncio

import aiohttp
import pytest

from potluck.contracts.registry_locality import local_registry_of
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG
from tests.e2e.allocator_api import create_on
from tests.e2e.conftest import containers_from, engine_image_id, start_laptop
from tests.fixtures.images import build_and_push, get_allocation
from tests.fixtures.pool import Pool


async def test_an_image_id_or_its_first_characters_never_run_another_users_private_image(
    pool: Pool, docker_engines: list[DockerEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tried: alice's private image is pulled onto laptop B for her allocation, which then ends
    (the engine keeps the image); the pool registry stops (so that nothing can be pulled from
    anywhere: the allocator cannot say whether its library holds a name, and the host pulls
    nothing anonymously); bob then asks, on laptop B whose member admits every official image
    name, for `sha256:<its id>`, `<its id>` and the id's first 12 characters. Must hold: each of
    bob's allocations fails with image_pull_failed without ever running, no container is made
    from alice's image for him; while alice's allocation naming her image, and one naming the
    test image by its short name, still run from what the engine holds."""
    laptop_a, laptop_b = docker_engines
    await pool.wait_api()
    registry = await asyncio.to_thread(pool.start_image_registry)
    alice = await pool.add_user("alice")
    bob = await pool.add_user("bob")
    secret = f"{registry.address}/alice/secret:1"
    await asyncio.to_thread(build_and_push, laptop_a, [secret], alice, layer="echo alice > /secret")
    assert local_registry_of(secret, registry.address) is None

    monkeypatch.setenv("POTLUCK_HOSTD_PULL_ATTEMPTS", "1")
    # `*:*`: every Docker Hub official name and tag, as a member who trusts them all would write.
    await start_laptop(
        pool, laptop_b, "laptop-b", allowed_images=[DEFAULT_TAG, f"{registry.address}/alice/*:*", "*:*"]
    )

    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {alice}"}
        first = await create_on(http, pool.api, alice, secret)
        running = await get_allocation(http, pool.api, alice, first["id"], "?wait=running&timeout=60")
        assert running["state"] == "running", (running, pool.logs(80))
        async with http.delete(f"{pool.api}/v1/allocations/{first['id']}", headers=headers) as response:
            assert response.status == 200, await response.text()
        image_id = await asyncio.to_thread(engine_image_id, laptop_b, secret)
        assert image_id is not None
        hex_id = image_id.removeprefix("sha256:")
        await asyncio.to_thread(registry.stop)

        for name in (image_id, hex_id, hex_id[:12]):
            attempt = await create_on(http, pool.api, bob, name)
            ended = await get_allocation(http, pool.api, bob, attempt["id"], "?wait=failed&timeout=60")
            assert ended["state"] == "failed", (name, ended, pool.logs(80))
            assert ended["reason"] == "image_pull_failed", (name, ended)
            history = await get_allocation(http, pool.api, bob, attempt["id"], "/events")
            assert "AllocationRunning" not in [e["type"] for e in history["events"]], (name, history)
        assert await asyncio.to_thread(containers_from, laptop_b, image_id) == []

        # What the engine holds by name still runs by that name, the registry down or not.
        for owner, name in ((alice, secret), (bob, DEFAULT_TAG.removesuffix(":latest"))):
            again = await create_on(http, pool.api, owner, name)
            shown = await get_allocation(http, pool.api, owner, again["id"], "?wait=running&timeout=60")
            assert shown["state"] == "running", (name, shown, pool.logs(80))
