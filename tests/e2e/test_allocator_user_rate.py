"""Each user's rate of changes on a real allocator process, set by its --change-rate and
--change-burst (the pool fixture's `change_rate` marker): past it a user is refused with 429
and Retry-After, nothing recorded, while another user goes on; after the wait, they go on too.
The same for reads the allocator fetches from the log, set by --fetch-rate and --fetch-burst."""

import asyncio
import os
import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from potluck.contracts.capacity import Capacity
from potluck.localstack.test_image import DEFAULT_TAG
from tests.fixtures.pool import Pool
from tests.helpers import host_in_the_log

BURST = 3
BODY = {"cpus": 0.25, "memory": "64M", "disk": "64M", "image": DEFAULT_TAG, "command": ["true"]}


async def _host_in_the_log(pool: Pool) -> None:
    pool.processes["registry"].stop()  # no liveness checks: this host never beats
    await host_in_the_log(pool.store, "h-rate", Capacity(cpus=8, memory_bytes=8 << 30, disk_bytes=8 << 30))


async def _create(
    http: aiohttp.ClientSession, pool: Pool, token: str
) -> tuple[int, dict[str, Any], str | None]:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(f"{pool.api}/v1/allocations", json=BODY, headers=headers) as r:
        return r.status, await r.json(), r.headers.get("Retry-After")


@pytest.mark.change_rate(0.5, BURST)
async def test_a_burst_past_the_rate_is_refused_until_the_wait_it_names(pool: Pool) -> None:
    """Tried: with `--change-rate 0.5 --change-burst 3`, alice requests 3 allocations at once,
    then one more; bob then requests one; alice waits the Retry-After she was given and
    requests again. Before: nothing but her quota bounded how often she changed things. Must
    hold: her 3 are placed (201); the fourth is 429 RATE_LIMITED with a Retry-After of whole
    seconds that its message names, and the log's head has not moved; bob's is placed; after
    the wait hers is placed again."""
    await _host_in_the_log(pool)
    alice = await pool.add_user("alice")
    bob = await pool.add_user("bob")
    async with aiohttp.ClientSession() as http:
        for _ in range(BURST):
            status, answer, _ = await _create(http, pool, alice)
            assert status == 201, answer
        head = await pool.store.head_position()
        status, answer, retry_after = await _create(http, pool, alice)
        assert status == 429, answer
        assert answer["error"]["code"] == "RATE_LIMITED", answer
        assert retry_after is not None
        assert int(retry_after) >= 1, retry_after
        assert f"try again in {retry_after} s" in answer["error"]["message"], answer
        assert await pool.store.head_position() == head

        status, answer, _ = await _create(http, pool, bob)
        assert status == 201, answer

        await asyncio.sleep(int(retry_after))
        status, answer, _ = await _create(http, pool, alice)
        assert status == 201, answer


@pytest.mark.change_rate(0.5, 5)
async def test_potluck_alloc_rm_of_more_than_the_burst_releases_every_one_at_the_users_rate(
    pool: Pool,
) -> None:
    """Tried: with `--change-rate 0.5 --change-burst 5`, alice requests 5 allocations (her burst
    spent), then releases all 5 with one `potluck alloc rm` (the real CLI). Before: the CLI
    stopped at the first 429 RATE_LIMITED, exit 1, the rest of the list unreleased. Must hold:
    exit 0 and every one of the 5 released (the CLI waited out each Retry-After: nothing was
    done by a refused request, so sending it again is safe)."""
    await _host_in_the_log(pool)
    alice = await pool.add_user("alice")
    async with aiohttp.ClientSession() as http:
        ids = []
        for _ in range(5):
            status, answer, _ = await _create(http, pool, alice)
            assert status == 201, answer
            ids.append(answer["id"])
        env = {
            **os.environ,
            "POTLUCK_URL": pool.api,
            "POTLUCK_TOKEN": alice,
            "POTLUCK_CONFIG": str(pool.workdir / "absent.toml"),
        }
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "potluck", "alloc", "rm", "--json", *ids],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        headers = {"Authorization": f"Bearer {alice}"}
        for alloc_id in ids:
            async with http.get(f"{pool.api}/v1/allocations/{alloc_id}", headers=headers) as r:
                shown = await r.json()
            assert shown["state"] == "released", shown


async def test_the_fetch_rate_is_the_operators_to_set(pool: Pool) -> None:
    """Tried: the allocator restarted with `--fetch-rate 0.5 --fetch-burst 2` (before, the rate
    of reads the allocator fetches from Postgres was fixed in code); alice reads three
    allocation ids that were never made (each a read of the log), then bob reads one; alice
    waits the Retry-After she was given and reads again. Must hold: her first two are 404
    NOT_FOUND, her third is 429 RATE_LIMITED with a Retry-After of whole seconds; bob's is his
    own 404; after the wait hers is a 404 again."""
    pool.processes["allocator"].stop()
    pool.start_allocator(port=pool.api_port, options=["--fetch-rate", "0.5", "--fetch-burst", "2"])
    await pool.wait_api()
    alice = {"Authorization": f"Bearer {await pool.add_user('alice')}"}
    bob = {"Authorization": f"Bearer {await pool.add_user('bob')}"}
    never = [f"a-{n:012x}" for n in range(4)]
    async with aiohttp.ClientSession() as http:

        async def read(headers: dict[str, str], alloc_id: str) -> tuple[int, dict[str, Any], str | None]:
            async with http.get(f"{pool.api}/v1/allocations/{alloc_id}", headers=headers) as r:
                return r.status, await r.json(), r.headers.get("Retry-After")

        for alloc_id in never[:2]:
            status, answer, _ = await read(alice, alloc_id)
            assert (status, answer["error"]["code"]) == (404, "NOT_FOUND"), answer
        status, answer, retry_after = await read(alice, never[2])
        assert (status, answer["error"]["code"]) == (429, "RATE_LIMITED"), answer
        assert retry_after is not None
        assert int(retry_after) >= 1, retry_after

        status, answer, _ = await read(bob, never[3])
        assert (status, answer["error"]["code"]) == (404, "NOT_FOUND"), answer

        await asyncio.sleep(int(retry_after))
        status, answer, _ = await read(alice, never[2])
        assert (status, answer["error"]["code"]) == (404, "NOT_FOUND"), answer


def test_a_fetch_rate_or_burst_of_zero_is_refused_at_start() -> None:
    """Tried: `potluck allocator --fetch-burst 0` and `--fetch-rate 0`. Must hold: each exits
    with click's usage error (2) naming the option, before it connects to anything."""
    for option, value in (("--fetch-burst", "0"), ("--fetch-rate", "0")):
        done = subprocess.run(
            [sys.executable, "-m", "potluck", "allocator", option, value],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "POTLUCK_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
        )
        assert done.returncode == 2, done.stderr
        assert option in done.stderr, done.stderr
