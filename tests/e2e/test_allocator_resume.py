"""A real allocator process killed with SIGKILL resumes from its checkpoint (potluck.events.checkpoints)."""

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from potluck.localstack.test_image import DEFAULT_TAG
from tests.e2e.test_allocator_concurrency import register_hosts_in_the_log
from tests.fixtures.pool import Pool


def loaded_lines(pool: Pool) -> list[dict[str, Any]]:
    """The allocator's `allocator.loaded` log lines, oldest first (its log spans its restarts)."""
    lines = []
    for raw in (pool.workdir / "allocator.log").read_text(errors="replace").splitlines():
        if '"allocator.loaded"' in raw:
            lines.append(json.loads(raw))
    return lines


async def kept_at(pool: Pool) -> int:
    """The position of the allocator's newest checkpoint (0: none)."""
    kept = await pool.store.pool.fetchval("SELECT max(position) FROM checkpoints WHERE reader = 'allocator'")
    return int(kept or 0)


async def test_a_killed_allocator_resumes_from_its_checkpoint_and_carries_on(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An allocator that checkpoints after every event holds three allocations, is killed with
    SIGKILL and started again. Afterwards: its log says it resumed from its checkpoint's
    position (not from zero), it lists the same allocations, and a new request is placed."""
    await register_hosts_in_the_log(pool)
    pool.processes["allocator"].stop()
    monkeypatch.setenv("POTLUCK_CHECKPOINT_EVERY_EVENTS", "1")
    pool.start_allocator(port=pool.api_port)
    await pool.wait_api()
    token = await pool.add_user("erin", allocations=100, cpus=100.0)
    headers = {"Authorization": f"Bearer {token}"}
    body = {"cpus": 1.0, "memory": "64M", "disk": "64M", "image": DEFAULT_TAG}
    async with aiohttp.ClientSession() as http:

        async def create() -> dict[str, Any]:
            async with http.post(pool.api + "/v1/allocations", json=body, headers=headers) as response:
                assert response.status == 201, await response.text()
                result: dict[str, Any] = await response.json()
                return result

        async def listing() -> list[dict[str, Any]]:
            async with http.get(pool.api + "/v1/allocations", headers=headers) as response:
                result: list[dict[str, Any]] = (await response.json())["allocations"]
                return result

        first = [await create() for _ in range(3)]
        before = await listing()
        head = await pool.store.head_position()

        deadline = asyncio.get_running_loop().time() + 30
        while (await kept_at(pool)) < head:
            assert asyncio.get_running_loop().time() < deadline, f"no checkpoint at {head}: {pool.logs()}"
            await asyncio.sleep(0.1)
        pool.processes["allocator"].kill()
        pool.start_allocator(port=pool.api_port)
        await pool.wait_api()

        assert loaded_lines(pool)[-1]["resumed_from"] >= head > 0
        assert await listing() == before
        assert {a["id"] for a in first} == {a["id"] for a in before}
        after = await create()
        assert after["state"] == "placed"
        assert len(await listing()) == 4
