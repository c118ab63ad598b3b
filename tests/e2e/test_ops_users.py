"""Operators manage users: `potluck ops users add`, `rotate-token` and `web-token`, against the
running allocator."""

import asyncio
import json
import subprocess
import sys

import aiohttp

from potluck.localstack.test_image import DEFAULT_TAG
from tests.fixtures.pool import EnrolledHost, Pool


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


async def allocate_disk(pool: Pool, token: str, disk: str) -> tuple[int, dict[str, object]]:
    body = {"cpus": 0.1, "memory": "32M", "disk": disk, "image": DEFAULT_TAG, "command": ["sleep", "60"]}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{pool.api}/v1/allocations", json=body, headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        return r.status, await r.json()


async def test_a_user_added_then_given_a_new_token_loses_the_old_one(
    pool: Pool, laptop: EnrolledHost
) -> None:
    """What is tried: add carol with a disk quota, take more disk than it allows, add her again,
    a bad name, a bad disk quota, rotate her token (with --json), rotate an unknown user.
    What must hold: `add` prints the token alone on stdout (before, a JSON object where the
    README says it prints the token) and what it did on stderr; `--json` prints the object
    scripts read, and nothing on stderr; the printed token works at once; `--disk` bounds the
    disk she holds (403 naming disk); a duplicate or bad name (one the pool registry could not
    take as her namespace, or `library`) or quota fails with a message and adds nothing; after
    rotation the new token works and the old one gets 401."""
    await pool.wait_api()
    added = await potluck(pool, "ops", "users", "add", "carol", "--cpus", "2", "--disk", "100M")
    assert added.returncode == 0, added.stderr
    # The token alone on stdout (what the README says it prints), what was done on stderr.
    first = added.stdout.strip()
    assert added.stdout == f"{first}\n", added.stdout
    assert first.startswith("pl_"), added.stdout
    assert "added user carol (quota: 2 CPUs, 16G memory, 100M disk" in added.stderr, added.stderr
    assert "shown this once" in added.stderr
    # Not pointed at `--token TOKEN`, which leaves the token in the shell's history.
    assert "--token" not in added.stderr, added.stderr
    assert "`potluck login`" in added.stderr, added.stderr
    assert await status_with(pool, first) == 200
    status, _ = await allocate_disk(pool, first, "64M")
    assert status == 201
    status, refused = await allocate_disk(pool, first, "64M")
    assert status == 403, refused
    assert refused["error"] == {
        "code": "QUOTA_EXCEEDED",
        "message": f"this would hold {128 << 20} bytes of disk, your quota is {100 << 20}",
        "field": "disk",
    }
    bad_disk = await potluck(pool, "ops", "users", "add", "dora", "--disk", "lots")
    assert bad_disk.returncode == 2
    assert "not a size" in bad_disk.stderr
    assert await pool.store.read_stream("user-dora") == []

    again = await potluck(pool, "ops", "users", "add", "carol")
    assert again.returncode == 1
    assert "exists already" in again.stderr
    bad = await potluck(pool, "ops", "users", "add", "Carol!")
    assert bad.returncode == 2
    assert "user name" in bad.stderr
    # A name the pool registry could not take as the user's namespace, and the pool's own.
    for name in ("carol-", "library"):
        refused_name = await potluck(pool, "ops", "users", "add", name)
        assert refused_name.returncode == 2, refused_name.stderr
        assert "pool registry" in refused_name.stderr, refused_name.stderr
        assert await pool.store.read_stream(f"user-{name}") == []

    rotated = await potluck(pool, "ops", "users", "rotate-token", "carol", "--json")
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout).keys() == {"user", "token"}, rotated.stdout
    assert rotated.stderr == ""
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


async def web_signin_status(pool: Pool, token: str) -> int:
    """What the allocator answers to the web sign-in form posted with `token` from its own page:
    303 signs in, 401 refuses the token."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{pool.api}/web/signin",
            data={"token": token},
            headers={"Origin": pool.api},
            allow_redirects=False,
        ) as r,
    ):
        return r.status


async def test_the_operator_web_token_is_printed_like_a_users_and_replaces_the_last(pool: Pool) -> None:
    """Tried: `potluck ops users web-token`, then again with --json, signing in to the web page
    with each token. Must hold: like `ops users add`, stdout holds the token alone (before, it did
    too, but nothing said what it was: no sentence at all) and stderr says the previous one stopped
    working and where to use it; `--json` prints {"token": ...} and nothing on stderr; the printed
    token signs in (303); once the second is in force, the first is refused (401)."""
    await pool.wait_api()
    made = await potluck(pool, "ops", "users", "web-token")
    assert made.returncode == 0, made.stderr
    first = made.stdout.strip()
    assert made.stdout == f"{first}\n", made.stdout
    assert first.startswith("pm_"), made.stdout
    assert "the previous one no longer works" in made.stderr, made.stderr
    assert "shown this once" in made.stderr
    assert "/web/signin" in made.stderr
    assert first not in made.stderr

    again = await potluck(pool, "ops", "users", "web-token", "--json")
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""
    assert json.loads(again.stdout).keys() == {"token"}, again.stdout
    second = json.loads(again.stdout)["token"]
    assert second != first
    # The allocator folds the new token from the log; once it signs in, the first is replaced.
    for _ in range(100):
        if await web_signin_status(pool, second) == 303:
            break
        await asyncio.sleep(0.1)
    assert await web_signin_status(pool, second) == 303
    assert await web_signin_status(pool, first) == 401
