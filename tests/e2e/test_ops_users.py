"""Operators manage users: `potluck ops users add` and `rotate-token`, against the running allocator."""

import asyncio
import json
import subprocess
import sys

import aiohttp

from tests.fixtures.pool import Pool


async def potluck(pool: Pool, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "potluck", *args, "--database-url", pool.database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def status_with(pool: Pool, token: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{pool.api}/v1/allocations", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        return r.status


async def test_a_user_added_then_given_a_new_token_loses_the_old_one(pool: Pool) -> None:
    """What is tried: add carol, add her again, a bad name, rotate her token, rotate an unknown user.
    What must hold: the printed token works at once; a duplicate or bad name fails with a message
    and adds nothing; after rotation the new token works and the old one gets 401."""
    await pool.wait_api()
    added = await potluck(pool, "ops", "users", "add", "carol", "--cpus", "2")
    assert added.returncode == 0, added.stderr
    first = json.loads(added.stdout)["token"]
    assert await status_with(pool, first) == 200

    again = await potluck(pool, "ops", "users", "add", "carol")
    assert again.returncode == 1
    assert "exists already" in again.stderr
    bad = await potluck(pool, "ops", "users", "add", "Carol!")
    assert bad.returncode == 2
    assert "user name" in bad.stderr

    rotated = await potluck(pool, "ops", "users", "rotate-token", "carol")
    assert rotated.returncode == 0, rotated.stderr
    second = json.loads(rotated.stdout)["token"]
    assert second != first
    assert await status_with(pool, second) == 200
    # The allocator folds the rotation from the log; the old token stops working once it has.
    for _ in range(100):
        if await status_with(pool, first) == 401:
            break
        await asyncio.sleep(0.1)
    assert await status_with(pool, first) == 401

    unknown = await potluck(pool, "ops", "users", "rotate-token", "nobody")
    assert unknown.returncode == 1
    assert "potluck ops users add nobody" in unknown.stderr
