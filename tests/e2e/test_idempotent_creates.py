"""POST /v1/allocations, POST /v1/jobs and extensions with an Idempotency-Key, on a real
allocator and Postgres: a request sent again (its answer lost, the log's database away, the
allocator killed under it) is one allocation, one job or one extension, never two
(services/allocator/idempotency.py)."""

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from potluck.contracts.allocation_events import alloc_stream
from potluck.contracts.capacity import Capacity
from potluck.localstack.postgres_server import PostgresServer
from potluck.localstack.test_image import DEFAULT_TAG
from potluck.user.client import Login
from tests.fixtures.pool import Pool
from tests.helpers import host_in_the_log

BODY = {"cpus": 0.5, "memory": "64M", "disk": "64M", "image": DEFAULT_TAG, "command": ["sleep", "60"]}


async def _host_in_the_log(pool: Pool) -> None:
    pool.processes["registry"].stop()  # no liveness checks: this host never beats
    await host_in_the_log(pool.store, "h-keyed", Capacity(cpus=8, memory_bytes=8 << 30, disk_bytes=8 << 30))


async def _post(
    http: aiohttp.ClientSession, pool: Pool, path: str, token: str, key: str | None, body: dict[str, Any]
) -> tuple[int, dict[str, Any], str | None]:
    """POST `body` to `path` as `token`'s user with `key`: status, answer, Idempotent-Replayed."""
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    async with http.post(f"{pool.api}{path}", json=body, headers=headers) as r:
        return r.status, await r.json(), r.headers.get("Idempotent-Replayed")


async def _listed(http: aiohttp.ClientSession, pool: Pool, path: str, token: str) -> list[str]:
    """The ids of `token`'s user's allocations or jobs (`path`), as their first page lists them."""
    async with http.get(f"{pool.api}{path}", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200, await r.text()
        listed: dict[str, list[dict[str, Any]]] = await r.json()
        return [item["id"] for item in listed[path.rsplit("/", 1)[-1]]]


async def _create(
    http: aiohttp.ClientSession, pool: Pool, token: str, key: str | None, body: dict[str, Any] = BODY
) -> tuple[int, dict[str, Any], str | None]:
    return await _post(http, pool, "/v1/allocations", token, key, body)


async def _ids(http: aiohttp.ClientSession, pool: Pool, token: str) -> list[str]:
    return await _listed(http, pool, "/v1/allocations", token)


async def test_a_request_sent_again_with_its_key_is_answered_with_the_one_allocation(pool: Pool) -> None:
    """Tried: alice creates with a key, then sends the same request with the same key again,
    then the same key with another request (more memory), then bob sends alice's key; then
    alice sends ten requests with a new key at once. Before: every POST was a new allocation.
    Must hold: the second answer is the first's allocation (same id, `Idempotent-Replayed:
    true`, the first has no such header) and her list holds one; the log holds one request for
    it; another request with her key is 422 IDEMPOTENCY_KEY_REUSED naming that allocation and
    appends nothing; bob's is an allocation of his own; of the ten at once, each is that one
    allocation (201, or 409 IDEMPOTENCY_KEY_IN_USE while the first is decided) and her list
    grows by exactly one."""
    await _host_in_the_log(pool)
    alice = await pool.add_user("alice")
    bob = await pool.add_user("bob")
    key = str(uuid.uuid4())
    async with aiohttp.ClientSession() as http:
        status, first, replayed = await _create(http, pool, alice, key)
        assert status == 201, first
        assert replayed is None
        status, again, replayed = await _create(http, pool, alice, key)
        assert status == 201, again
        assert replayed == "true"
        assert again["id"] == first["id"]
        assert await _ids(http, pool, alice) == [first["id"]]
        types = [r.type for r in await pool.store.read_stream(alloc_stream(first["id"]))]
        assert types.count("AllocationRequested") == 1, types

        head = await pool.store.head_position()
        status, answer, _ = await _create(http, pool, alice, key, {**BODY, "memory": "128M"})
        assert status == 422, answer
        assert answer["error"]["code"] == "IDEMPOTENCY_KEY_REUSED", answer
        assert first["id"] in answer["error"]["message"], answer
        assert await pool.store.head_position() == head

        status, bobs, replayed = await _create(http, pool, bob, key)
        assert status == 201, bobs
        assert replayed is None
        assert bobs["id"] != first["id"]

        burst_key = str(uuid.uuid4())
        answers = await asyncio.gather(*(_create(http, pool, alice, burst_key) for _ in range(10)))
        made = {a["id"] for status, a, _ in answers if status == 201}
        refused = [a["error"]["code"] for status, a, _ in answers if status != 201]
        assert len(made) == 1, answers
        assert set(refused) <= {"IDEMPOTENCY_KEY_IN_USE"}, answers
        assert sorted(await _ids(http, pool, alice)) == sorted([first["id"], *made])


async def test_an_extension_sent_again_with_its_key_extends_once(pool: Pool) -> None:
    """Tried: alice extends her allocation by 10 minutes with a key, sends it again (its answer
    lost), then ten times at once with another key, then her first key asking 20 minutes, then
    an extension without a key. Before: every POST pushed the expiry out again. Must hold: the
    repeat is answered with the allocation as the first left it (`Idempotent-Replayed: true`,
    same expiry) and appends nothing; of the ten at once, exactly one extension is recorded and
    every answer shows its expiry; the first key with another `by` is 422
    IDEMPOTENCY_KEY_REUSED and appends nothing; an extension without a key still extends."""
    await _host_in_the_log(pool)
    alice = await pool.add_user("alice")
    async with aiohttp.ClientSession() as http:
        status, made, _ = await _create(http, pool, alice, None)
        assert status == 201, made
        path = f"/v1/allocations/{made['id']}/extend"

        async def extensions() -> int:
            stream = await pool.store.read_stream(alloc_stream(made["id"]))
            return [r.type for r in stream].count("AllocationExtended")

        key = str(uuid.uuid4())
        status, first, replayed = await _post(http, pool, path, alice, key, {"by": 600})
        assert status == 200, first
        assert replayed is None
        assert first["expires_at"] > made["expires_at"]
        head = await pool.store.head_position()
        status, again, replayed = await _post(http, pool, path, alice, key, {"by": 600})
        assert status == 200, again
        assert replayed == "true"
        assert again["expires_at"] == first["expires_at"]
        assert await pool.store.head_position() == head

        burst_key = str(uuid.uuid4())
        answers = await asyncio.gather(
            *(_post(http, pool, path, alice, burst_key, {"by": 60}) for _ in range(10))
        )
        assert {status for status, _, _ in answers} == {200}, answers
        assert await extensions() == 2
        assert len({a["expires_at"] for _, a, _ in answers}) == 1, answers
        assert sorted(r for _, _, r in answers if r is not None) == ["true"] * 9

        head = await pool.store.head_position()
        status, answer, _ = await _post(http, pool, path, alice, key, {"by": 1200})
        assert status == 422, answer
        assert answer["error"]["code"] == "IDEMPOTENCY_KEY_REUSED", answer
        assert await pool.store.head_position() == head

        status, plain, replayed = await _post(http, pool, path, alice, None, {"by": 60})
        assert status == 200, plain
        assert replayed is None
        assert plain["expires_at"] > answers[0][1]["expires_at"]
        assert await extensions() == 3


async def test_a_key_whose_allocation_ended_and_left_memory_still_names_it(pool: Pool) -> None:
    """Tried: the allocator restarted with `--retention 1s`; alice creates with a key and
    releases it; once it has left her list (an event logged 1.5 s later moves the log's clock;
    the allocator then keeps only the log's copy), she sends the same request with the same
    key. Then malformed keys: empty, with a space, 256 characters, two headers. Must hold: the
    answer is that allocation, released, marked replayed, and nothing new is in her list; each
    malformed key is a 400 INVALID_FIELD naming the header, and nothing is appended."""
    await _host_in_the_log(pool)
    pool.processes["allocator"].stop()
    pool.start_allocator(port=pool.api_port, options=["--retention", "1s"])
    await pool.wait_api()
    alice = await pool.add_user("alice")
    headers = {"Authorization": f"Bearer {alice}"}
    key = str(uuid.uuid4())
    async with aiohttp.ClientSession() as http:
        status, first, _ = await _create(http, pool, alice, key)
        assert status == 201, first
        async with http.delete(f"{pool.api}/v1/allocations/{first['id']}", headers=headers) as r:
            assert r.status == 200, await r.text()
        await asyncio.sleep(1.5)
        await pool.add_user("later")  # the log's clock moves on (a quiet log retires nothing)
        for _ in range(100):
            if not await _ids(http, pool, alice):
                break
            await asyncio.sleep(0.2)
        assert await _ids(http, pool, alice) == []

        status, again, replayed = await _create(http, pool, alice, key)
        assert status == 201, again
        assert (again["id"], again["state"], replayed) == (first["id"], "released", "true")
        assert await _ids(http, pool, alice) == []

        head = await pool.store.head_position()
        for bad in ("", "a b", "k" * 256):
            status, answer, _ = await _create(http, pool, alice, bad)
            assert status == 400, (bad, answer)
            assert answer["error"]["field"] == "Idempotency-Key", answer
        twice = [("Authorization", f"Bearer {alice}"), ("Idempotency-Key", "one"), ("Idempotency-Key", "two")]
        async with http.post(f"{pool.api}/v1/allocations", json=BODY, headers=twice) as r:
            answer = await r.json()
            assert r.status == 400, answer
            assert answer["error"]["field"] == "Idempotency-Key", answer
        assert await pool.store.head_position() == head


async def _through_the_log_away(
    postgres: PostgresServer, argv: list[str], env: dict[str, str]
) -> "subprocess.CompletedProcess[str]":
    """`potluck ARGV` started while the log's Postgres is stopped, which starts again 4 s later."""
    await asyncio.to_thread(postgres.stop)
    running = asyncio.create_task(
        asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "potluck", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=150,
        )
    )
    await asyncio.sleep(4)
    assert not running.done(), running.result()
    await asyncio.to_thread(postgres.start)
    return await running


async def test_potluck_alloc_create_and_extend_ride_out_the_log_away_and_act_once(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    """Tried: the log's Postgres stopped, `potluck alloc create --json` started (its requests
    meet 503 LOG_UNAVAILABLE, or a connection lost mid-append: OUTCOME_UNKNOWN), and Postgres
    started again 4 s later; then the same with `potluck alloc extend`, then `potluck alloc rm`.
    Before: the command failed at the first 503 ("the allocator failed"), and sending it again
    by hand could make a second allocation, or extend twice. Must hold: each command exits 0
    with the allocation, the user holds exactly that one, and its stream holds exactly one
    extension, then one release."""
    pool = await Pool.create(tmp_path / "pool", own_postgres.url, log_level="DEBUG")
    try:
        await pool.start_central_services()
        await _host_in_the_log(pool)
        token = await pool.add_user("alice")
        config = tmp_path / "config.toml"
        Login(pool.api, token).save(config)
        env = {**os.environ, "POTLUCK_CONFIG": str(config)}
        async with aiohttp.ClientSession() as http:
            assert await _ids(http, pool, token) == []  # the allocator knows her token (folded)
        argv = ["alloc", "create", "--json", "--cpus", "0.5", "--memory", "64M", "--disk", "64M"]
        argv += ["--image", DEFAULT_TAG, "--", "sleep", "60"]
        done = await _through_the_log_away(own_postgres, argv, env)
        assert done.returncode == 0, done.stderr + pool.logs()
        made = json.loads(done.stdout)
        async with aiohttp.ClientSession() as http:
            assert await _ids(http, pool, token) == [made["id"]]

        done = await _through_the_log_away(
            own_postgres, ["alloc", "extend", made["id"], "--by", "10m", "--json"], env
        )
        assert done.returncode == 0, done.stderr + pool.logs()
        assert json.loads(done.stdout)["expires_at"] > made["expires_at"]
        stream = await pool.store.read_stream(alloc_stream(made["id"]))
        assert [r.type for r in stream].count("AllocationExtended") == 1

        done = await _through_the_log_away(own_postgres, ["alloc", "rm", made["id"], "--json"], env)
        assert done.returncode == 0, done.stderr + pool.logs()
        stream = await pool.store.read_stream(alloc_stream(made["id"]))
        assert [r.type for r in stream].count("AllocationReleased") == 1
    finally:
        await pool.close()


JOB = {"tasks": 3, "cpus": 0.5, "memory": "64M", "disk": "64M", "image": DEFAULT_TAG, "command": ["true"]}


async def _submit(
    http: aiohttp.ClientSession, pool: Pool, token: str, key: str, body: dict[str, Any] = JOB
) -> tuple[int, dict[str, Any], str | None]:
    return await _post(http, pool, "/v1/jobs", token, key, body)


async def _job_ids(http: aiohttp.ClientSession, pool: Pool, token: str) -> list[str]:
    return await _listed(http, pool, "/v1/jobs", token)


async def test_a_job_sent_again_with_its_key_is_the_one_job_even_after_it_left_memory(pool: Pool) -> None:
    """Tried: the allocator restarted with `--retention 1s`; alice submits a job of three tasks
    with a key, sends it again with the key, then the key with another job (four tasks); bob
    sends her key; she sends ten jobs at once with a new key; then she cancels the first job,
    and once it has left her list sends it again with its key. Before: every POST /v1/jobs was a
    new job (a job sent again after a lost answer ran every task twice).
    Must hold: the second answer is the first's job (same id, `Idempotent-Replayed: true`); the
    log holds one JobSubmitted for it; the other job is 422 IDEMPOTENCY_KEY_REUSED and appends
    nothing; bob's is a job of his own; of the ten at once, each answer is that one job (201, or
    409 IDEMPOTENCY_KEY_IN_USE while the first is decided) and her list grows by exactly one;
    after it ended and left memory, the key still names it: cancelled, replayed, nothing new."""
    await _host_in_the_log(pool)
    pool.processes["allocator"].stop()
    pool.start_allocator(port=pool.api_port, options=["--retention", "1s"])
    await pool.wait_api()
    alice = await pool.add_user("alice")
    bob = await pool.add_user("bob")
    key = str(uuid.uuid4())
    async with aiohttp.ClientSession() as http:
        status, first, replayed = await _submit(http, pool, alice, key)
        assert (status, replayed) == (201, None), first
        status, again, replayed = await _submit(http, pool, alice, key)
        assert (status, again["id"], replayed) == (201, first["id"], "true"), again
        submitted = await pool.store.pool.fetchval(
            "SELECT count(*) FROM events WHERE type = 'JobSubmitted' AND stream = $1", f"job-{first['id']}"
        )
        assert submitted == 1

        # Not the log's head: the job's tasks are being requested meanwhile.
        jobs_submitted = "SELECT count(*) FROM events WHERE type = 'JobSubmitted'"
        before = await pool.store.pool.fetchval(jobs_submitted)
        status, other, _ = await _submit(http, pool, alice, key, {**JOB, "tasks": 4})
        assert status == 422, other
        assert other["error"]["code"] == "IDEMPOTENCY_KEY_REUSED", other
        assert first["id"] in other["error"]["message"], other
        assert await pool.store.pool.fetchval(jobs_submitted) == before

        status, bobs, _ = await _submit(http, pool, bob, key)
        assert status == 201, bobs
        assert bobs["id"] != first["id"]

        burst_key = str(uuid.uuid4())
        answers = await asyncio.gather(*(_submit(http, pool, alice, burst_key) for _ in range(10)))
        made = {body["id"] for status, body, _ in answers if status == 201}
        assert len(made) == 1, answers
        assert all(
            status == 201 or (status == 409 and body["error"]["code"] == "IDEMPOTENCY_KEY_IN_USE")
            for status, body, _ in answers
        ), answers
        assert sorted(await _job_ids(http, pool, alice)) == sorted([first["id"], *made])

        headers = {"Authorization": f"Bearer {alice}"}
        async with http.delete(f"{pool.api}/v1/jobs/{first['id']}", headers=headers) as r:
            assert r.status == 200, await r.text()
        await asyncio.sleep(1.5)
        await pool.add_user("later")  # the log's clock moves on (a quiet log retires nothing)
        for _ in range(100):
            if first["id"] not in await _job_ids(http, pool, alice):
                break
            await asyncio.sleep(0.2)
        assert first["id"] not in await _job_ids(http, pool, alice)
        status, late, replayed = await _submit(http, pool, alice, key)
        assert (status, late["id"], late["state"], replayed) == (201, first["id"], "cancelled", "true"), late
        assert first["id"] not in await _job_ids(http, pool, alice)
