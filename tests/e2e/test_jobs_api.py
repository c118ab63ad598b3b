"""Batch jobs through the allocator's HTTP API (/v1/jobs) on a real pool: two hostds, each on its
own Docker engine, the real allocator and event log."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from potluck.allocator.job_decisions import MAX_JOB_SPEC_BYTES, MAX_UNFINISHED_JOBS
from potluck.allocator.paging import DEFAULT_LIMIT, MAX_LIMIT
from potluck.allocator.task_standing import RETRY_PAUSE_S
from potluck.contracts.job_events import MAX_RETRIES, MAX_TASKS, TASK_INDEX_ENV
from potluck.hostd.docker_driver import DockerDriver
from potluck.localstack.docker_engine import DockerEngine
from potluck.user.client import Api as ClientApi
from potluck.user.client import Login
from tests.e2e.allocator_api import Api, refused_pages
from tests.e2e.conftest import replay_agrees
from tests.fixtures.pool import EnrolledHost, Pool, allocation

#: Long enough for a loaded machine; the waits end as soon as the job does.
WAIT = "wait=done&timeout=240"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def two_hosts(pool: Pool, docker_engines: list[DockerEngine]) -> list[EnrolledHost]:
    """Two active hosts, each on its own engine, donating 2 CPUs and 2 GiB."""
    hosts = [await pool.enroll(name) for name in ("laptop-a", "laptop-b")]
    for host, engine in zip(hosts, docker_engines, strict=True):
        pool.write_config(host, engine)
        pool.start_hostd(host)
    await pool.central_services_ready()  # see HOST_FIXTURES_THAT_WAIT
    for host in hosts:
        await pool.wait_for_host(host.host_id, "active")
        await pool.wait_for_images(host.host_id)
    return hosts


def job(test_image: str, command: str, **extra: Any) -> dict[str, Any]:
    return {
        "cpus": 0.5,
        "memory": "32M",
        "disk": "32M",
        "image": test_image,
        "command": ["sh", "-c", command],
        "keep_for": 0,
        **extra,
    }


@pytest.fixture
async def one_host(pool: Pool, docker_engines: list[DockerEngine]) -> EnrolledHost:
    """One active host on its own engine, donating 2 CPUs and 2 GiB."""
    host = await pool.enroll("laptop-a")
    pool.write_config(host, docker_engines[0])
    pool.start_hostd(host)
    await pool.central_services_ready()  # see HOST_FIXTURES_THAT_WAIT
    await pool.wait_for_host(host.host_id, "active")
    await pool.wait_for_images(host.host_id)
    return host


def size(answer: Any) -> int:
    """An answer's bytes as the allocator writes it (compact JSON)."""
    return len(json.dumps(answer, separators=(",", ":")))


#: Most bytes of one task in an answer (its ids, host, times, reason), with room to spare;
#: and of a job without its tasks.
TASK_BYTES = 500
SUMMARY_BYTES = 2000


async def task_pages(
    api: Api, job_id: str, query: str = "", after: int | None = None
) -> list[list[dict[str, Any]]]:
    """Every page of the job's tasks (GET /v1/jobs/{id}/tasks?`query`), following `next`."""
    pages = []
    while True:
        cursor = "" if after is None else f"&after={after}"
        status, page = await api.call("GET", f"/v1/jobs/{job_id}/tasks?{query}{cursor}")
        assert status == 200, page
        pages.append(page["tasks"])
        if page["next"] is None:
            return pages
        assert page["next"] == page["tasks"][-1]["index"], "next is the page's last task"
        after = page["next"]


async def count_streams(pool: Pool, *prefixes: str) -> int:
    """Streams of the log whose names start with one of `prefixes`."""
    patterns = [f"{p}%" for p in prefixes]
    return int(
        await pool.store.pool.fetchval(
            "SELECT count(DISTINCT stream) FROM events WHERE stream LIKE ANY($1::text[])", patterns
        )
    )


async def test_bad_jobs_get_a_clear_400_or_404_and_nothing_is_created(
    pool: Pool, http: aiohttp.ClientSession, test_image: str
) -> None:
    """Tried: zero and 100,000 tasks, a negative retry count, an unknown retry_on, an empty
    command, one whose first word is empty or blank, none at all, a deadline, lifetime or
    keep_for of less than a second, env naming POTLUCK_TASK_INDEX or POTLUCK_JOB_ID (which Potluck
    sets), a body that is not JSON, and an unknown job read and removed.
    Must hold: 400 naming the field (or the malformed body), 404 for the job, and no job- or
    alloc- stream in the log afterwards."""
    await pool.wait_api()
    alice = Api(http, pool.api, await pool.add_user("alice"))
    good = job(test_image, "true", tasks=2)
    for change, field in (
        ({"tasks": 0}, "tasks"),
        ({"tasks": 100_000}, "tasks"),
        ({"retries": -1}, "retries"),
        ({"retry_on": ["sometimes"]}, "retry_on"),
        ({"parallelism": 0}, "parallelism"),
        # Docker would run the image's own CMD for [], which nobody who wrote a command meant.
        ({"command": []}, "command"),
        # Nor a first word that names no program: it failed only as each task's container started.
        ({"command": [""]}, "command"),
        ({"command": ["\t", "true"]}, "command"),
        # Durations of less than a second: a deadline, a lifetime or a keep that is 0 in all but name.
        ({"deadline": 1e-300}, "deadline"),
        ({"lifetime": 1e-300}, "lifetime"),
        ({"lifetime": "0.0001h"}, "lifetime"),
        ({"keep_for": 0.5}, "keep_for"),
        # Without one a task is interactive, up until its lifetime ends: it would never end.
        ({"command": None}, "command"),
        # Potluck sets these for each task: a value given was replaced without a word.
        ({"env": {"POTLUCK_TASK_INDEX": "7"}}, "env"),
        ({"env": {"OTHER": "x", "POTLUCK_JOB_ID": "j-000000000000"}}, "env"),
    ):
        body = {k: v for k, v in {**good, **change}.items() if v is not None}
        status, answer = await alice.call("POST", "/v1/jobs", body)
        assert status == 400, (change, answer)
        assert answer["error"]["code"] == "INVALID_FIELD"
        assert answer["error"]["field"] == field
        assert field in answer["error"]["message"]
    async with http.post(
        pool.api + "/v1/jobs",
        data="{tasks: 3",
        headers={**alice.headers, "Content-Type": "application/json"},
    ) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "MALFORMED_JSON"
    for method in ("GET", "DELETE"):
        status, answer = await alice.call(method, "/v1/jobs/j-000000000000")
        assert status == 404, answer
        assert answer["error"]["code"] == "NOT_FOUND"
        assert "j-000000000000" in answer["error"]["message"]
    status, listed = await alice.call("GET", "/v1/jobs")
    assert (status, listed) == (200, {"jobs": [], "next": None})
    assert await count_streams(pool, "job-", "alloc-") == 0


async def test_a_job_whose_tasks_together_describe_too_much_is_refused_and_appends_nothing(
    pool: Pool, one_host: EnrolledHost, http: aiohttp.ClientSession, test_image: str
) -> None:
    """Tried: jobs whose tasks' specs add up past MAX_JOB_SPEC_BYTES: MAX_TASKS tasks of a 4 KB
    command, 200 tasks of a 200 KB one, MAX_TASKS tasks with 16 long ssh keys, 1,000 tasks of
    100 long environment variables. Must hold: each is a 400 INVALID_FIELD naming the field
    that makes most of it and saying what to do; the log gets no job and no allocation (before,
    each was accepted: each attempt then recorded its spec twice and kept it in the
    allocator's memory for good, 290 KB an attempt for a 240 KB command)."""
    alice = Api(http, pool.api, await pool.add_user("alice"))
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + "A" * 4000 + " me"
    for change, field in (
        ({"tasks": MAX_TASKS, "command": ["sh", "-c", "x" * 4000]}, "command"),
        ({"tasks": 200, "command": ["true", "y" * 200_000]}, "command"),
        ({"tasks": MAX_TASKS, "ssh_keys": [key] * 16}, "ssh_keys"),
        ({"tasks": 1000, "env": {f"V{i}": "z" * 400 for i in range(100)}}, "env"),
    ):
        status, answer = await alice.call("POST", "/v1/jobs", {**job(test_image, "true"), **change})
        assert status == 400, (field, answer)
        assert answer["error"]["code"] == "INVALID_FIELD", answer
        assert answer["error"]["field"] == field, answer
        assert f"at most {MAX_JOB_SPEC_BYTES >> 20} MiB" in answer["error"]["message"], answer
        assert "put a long script in the image" in answer["error"]["message"], answer
    assert await count_streams(pool, "job-", "alloc-") == 0


async def test_a_job_of_20_tasks_runs_every_index_once_on_both_hosts(
    pool: Pool, two_hosts: list[EnrolledHost], http: aiohttp.ClientSession, test_image: str
) -> None:
    """Tried: a job of 20 tasks, each checking that its index and job id are in its environment;
    then a job no host could ever hold; then another user reading the job. Must hold: the job
    succeeds, each index ran exactly once (one attempt, exit 0, its own index in its allocation's
    environment) and tasks ran on both hosts; the impossible job is refused (422) without a job
    stream; the other user gets 404."""
    alice = Api(http, pool.api, await pool.add_user("alice"))
    check = 'echo $POTLUCK_TASK_INDEX; test -n "$POTLUCK_JOB_ID" && test "$POTLUCK_TASK_INDEX" -lt 20'
    status, created = await alice.call("POST", "/v1/jobs", job(test_image, check, tasks=20))
    assert status == 201, created
    assert (created["state"], created["tasks"]) == ("running", 20)
    assert (created["task_list"], created["task_list_next"]) == ([], None), "POST answers a summary"
    status, done = await alice.call("GET", f"/v1/jobs/{created['id']}?{WAIT}")
    assert status == 200
    assert done["state"] == "succeeded", (done["counts"], pool.logs())
    assert done["counts"] == {"succeeded": 20}
    tasks = done["task_list"]
    assert [t["index"] for t in tasks] == list(range(20))
    assert done["task_list_next"] is None, "20 tasks are one page"
    assert {(t["attempts"], t["exit_code"]) for t in tasks} == {(1, 0)}
    assert {t["host_id"] for t in tasks} == {h.host_id for h in two_hosts}
    for task in tasks:
        state = await allocation(pool.store, task["alloc_id"])
        assert state is not None
        assert state.spec.env[TASK_INDEX_ENV] == str(task["index"])
        assert (state.job_id, state.task_index) == (created["id"], task["index"])
    assert await count_streams(pool, "alloc-") == 20, "one allocation per task: none twice"

    before = await count_streams(pool, "job-")
    status, refused = await alice.call("POST", "/v1/jobs", job(test_image, "true", tasks=2, cpus=3))
    assert status == 422, refused
    # The scheduler's own refusal, as POST /v1/allocations gives it for the same size.
    assert refused["error"]["code"] == "EXCEEDS_ANY_HOST"
    assert await count_streams(pool, "job-") == before

    bob = Api(http, pool.api, await pool.add_user("bob"))
    status, hidden = await bob.call("GET", f"/v1/jobs/{created['id']}")
    assert status == 404, hidden
    _, listed = await alice.call("GET", "/v1/jobs")
    assert [(j["id"], j["task_list"]) for j in listed["jobs"]] == [(created["id"], [])]


async def test_a_task_that_exits_3_fails_the_job_unless_retried(
    pool: Pool,
    two_hosts: list[EnrolledHost],
    http: aiohttp.ClientSession,
    test_image: str,
    docker_engines: list[DockerEngine],
) -> None:
    """Tried: two jobs of 6 tasks that keep their containers, where task 5 exits 3, one without
    retries and one with `retries: 1, retry_on: ["exit"]`; then the first job is removed. Must
    hold: both fail with 5 succeeded and 1 failed; task 5 exited 3 after 1 attempt in the first
    and after 2 in the second; the others took 1 each; each finished task's container is kept,
    and removing the ended job keeps its outcome but removes its kept containers; a replay of
    the log (`potluck ops replay --check`) holds the same jobs and allocations as the allocator."""
    alice = Api(http, pool.api, await pool.add_user("alice"))
    fails = 'test "$POTLUCK_TASK_INDEX" != 5 || exit 3'
    _, once = await alice.call("POST", "/v1/jobs", job(test_image, fails, tasks=6, keep_for="1h"))
    _, twice = await alice.call(
        "POST", "/v1/jobs", job(test_image, fails, tasks=6, retries=1, retry_on=["exit"], keep_for="1h")
    )
    for created, attempts in ((once, 1), (twice, 2)):
        status, done = await alice.call("GET", f"/v1/jobs/{created['id']}?{WAIT}")
        assert status == 200
        assert done["state"] == "failed", (done["counts"], pool.logs())
        assert done["counts"] == {"succeeded": 5, "failed": 1}
        fifth = done["task_list"][5]
        assert (fifth["state"], fifth["exit_code"], fifth["attempts"]) == ("failed", 3, attempts)
        assert fifth["reason"] == "exited with code 3"
        assert {t["attempts"] for t in done["task_list"][:5]} == {1}
        assert all(t["kept_until"] for t in done["task_list"]), done["task_list"]

    status, removed = await alice.call("DELETE", f"/v1/jobs/{once['id']}")
    assert status == 200
    assert removed["state"] == "failed", "removing an ended job keeps its outcome"
    assert removed["counts"] == {"succeeded": 5, "failed": 1}
    assert removed["task_list"] == [], "DELETE answers a summary"
    _, after_removal = await alice.call("GET", f"/v1/jobs/{once['id']}")
    assert [t["kept_until"] for t in after_removal["task_list"]] == [None] * 6
    gone = {t["alloc_id"] for t in after_removal["task_list"]}
    for _ in range(300):
        left = []
        for engine in docker_engines:
            with DockerDriver(engine.url) as driver:
                left += [c for c in driver.list_managed(None) if c.allocation_id in gone]
        if not left:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"the removed job's containers are still there: {left}\n{pool.logs()}")
    _, still = await alice.call("GET", f"/v1/jobs/{twice['id']}")
    assert all(t["kept_until"] for t in still["task_list"]), "the other job's are kept"
    await replay_agrees(pool)


async def test_a_task_that_fails_at_once_is_retried_after_pauses_that_double_not_in_a_storm(
    pool: Pool, one_host: EnrolledHost, http: aiohttp.ClientSession, test_image: str
) -> None:
    """Tried: a task that exits 3 at once, with `retries: 3` on `exit`; then a job of one such
    task with the most retries, removed while its task waits out its first pause. Must hold:
    the first job fails after 4 attempts, and the log shows each retry requested no sooner
    than RETRY_PAUSE_S, 2x, 4x after the attempt before it ended (before, each came within a
    few milliseconds, as fast as the host could start it); the second job is cancelled with
    its task, and requests nothing after its removal."""
    alice = Api(http, pool.api, await pool.add_user("alice"))
    _, created = await alice.call(
        "POST", "/v1/jobs", job(test_image, "exit 3", tasks=1, retries=3, retry_on=["exit"])
    )
    status, done = await alice.call("GET", f"/v1/jobs/{created['id']}?{WAIT}")
    assert status == 200
    assert done["state"] == "failed", (done, pool.logs())
    task = done["task_list"][0]
    assert (task["state"], task["attempts"], task["exit_code"]) == ("failed", 4, 3), task
    attempts_of = await pool.store.pool.fetch(
        "SELECT data->>'alloc_id' AS alloc_id FROM events"
        " WHERE stream = $1 AND type = 'JobTaskRequested' ORDER BY position",
        f"job-{created['id']}",
    )
    streams = [f"alloc-{r['alloc_id']}" for r in attempts_of]
    rows = await pool.store.pool.fetch(
        "SELECT stream, type, recorded_at FROM events WHERE stream = ANY($1::text[])"
        " AND type IN ('AllocationRequested', 'AllocationExited')",
        streams,
    )
    at = {(r["stream"], r["type"]): r["recorded_at"] for r in rows}
    requested = [at[(stream, "AllocationRequested")] for stream in streams]
    exited = [at[(stream, "AllocationExited")] for stream in streams]
    assert len(streams) == 4, rows
    for failures, (ended, retry) in enumerate(zip(exited, requested[1:], strict=False), start=1):
        pause = (retry - ended).total_seconds()
        assert pause >= RETRY_PAUSE_S * 2 ** (failures - 1), (failures, pause, rows)

    _, storm = await alice.call(
        "POST", "/v1/jobs", job(test_image, "exit 3", tasks=1, retries=MAX_RETRIES, retry_on=["exit"])
    )
    for _ in range(600):
        _, seen = await alice.call("GET", f"/v1/jobs/{storm['id']}")
        if seen["task_list"][0]["state"] == "retrying":
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the task never waited for a retry: {seen}\n{pool.logs()}")
    status, removed = await alice.call("DELETE", f"/v1/jobs/{storm['id']}")
    assert (status, removed["state"], removed["counts"]) == (200, "cancelled", {"cancelled": 1}), removed
    stream = f"job-{storm['id']}"
    attempts = await pool.store.pool.fetchval(
        "SELECT count(*) FROM events WHERE stream = $1 AND type = 'JobTaskRequested'", stream
    )
    await asyncio.sleep(RETRY_PAUSE_S * 3)
    assert (
        await pool.store.pool.fetchval(
            "SELECT count(*) FROM events WHERE stream = $1 AND type = 'JobTaskRequested'", stream
        )
        == attempts
    ), "a removed job's pause ends in no retry"
    _, after = await alice.call("GET", f"/v1/jobs/{storm['id']}")
    assert (after["state"], after["task_list"][0]["state"]) == ("cancelled", "cancelled")


async def test_a_big_job_does_not_starve_another_users_allocation_and_delete_releases_it(
    pool: Pool,
    two_hosts: list[EnrolledHost],
    http: aiohttp.ClientSession,
    test_image: str,
    docker_engines: list[DockerEngine],
) -> None:
    """Tried: alice's job of 1,000 one-CPU tasks that sleep a second fills the pool (4 CPUs);
    then bob asks for one CPU, then alice removes her job. Must hold: bob's allocation waits,
    then is placed while most of the job's tasks still wait (the fair queue serves him before
    the job is done); the removal cancels the job, every attempt it requested ends, the pool
    reserves only bob's CPU, and no container of the job is left on either engine."""
    alice = Api(http, pool.api, await pool.add_user("alice"))
    bob = Api(http, pool.api, await pool.add_user("bob"))
    status, created = await alice.call("POST", "/v1/jobs", job(test_image, "sleep 1", tasks=1000, cpus=1))
    assert status == 201, created
    path = f"/v1/jobs/{created['id']}"
    for _ in range(600):
        _, pool_now = await alice.call("GET", "/v1/pool")
        if pool_now["total"]["free"]["cpus"] == 0:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"the job never filled the pool\n{pool.logs()}")

    body = {"cpus": 1, "memory": "32M", "disk": "32M", "image": test_image, "command": ["sleep", "3600"]}
    status, mine = await bob.call("POST", "/v1/allocations", body)
    assert status == 202, mine
    status, placed = await bob.call("GET", f"/v1/allocations/{mine['id']}?wait=running&timeout=120")
    assert placed["state"] == "running", pool.logs()
    _, meanwhile = await alice.call("GET", path)
    assert meanwhile["counts"].get("waiting", 0) > 900, meanwhile["counts"]

    status, removed = await alice.call("DELETE", path)
    assert status == 200
    assert removed["state"] == "cancelled"
    assert removed["reason"] == "removed by user:alice"
    assert not {"pending", "placed", "pulling", "running"} & removed["counts"].keys(), removed["counts"]
    assert removed["task_list"] == [], "DELETE answers a summary"
    _, pool_after = await alice.call("GET", "/v1/pool")
    assert pool_after["total"]["reserved"]["cpus"] == 1
    every = [t for page in await task_pages(alice, created["id"], f"limit={MAX_LIMIT}") for t in page]
    assert [t["index"] for t in every] == list(range(1000))
    for attempt in [t for t in every if t["alloc_id"]]:
        state = await allocation(pool.store, attempt["alloc_id"])
        assert state is not None
        assert state.terminal, state
    for _ in range(300):
        left = []
        for engine in docker_engines:
            with DockerDriver(engine.url) as driver:
                left += [c for c in driver.list_managed(None) if c.allocation_id != mine["id"]]
        if not left:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"the job's containers are still there: {left}\n{pool.logs()}")


async def test_a_job_past_its_deadline_is_cancelled_and_what_it_ran_is_released(
    pool: Pool, two_hosts: list[EnrolledHost], http: aiohttp.ClientSession, test_image: str
) -> None:
    """Tried: a job of 3 tasks that sleep a minute, with a 3-second deadline. Must hold: the job
    ends cancelled by its deadline, then every task is cancelled (its attempt released by the
    allocator) and the pool reserves nothing."""
    alice = Api(http, pool.api, await pool.add_user("alice"))
    _, created = await alice.call("POST", "/v1/jobs", job(test_image, "sleep 60", tasks=3, deadline=3))
    status, done = await alice.call("GET", f"/v1/jobs/{created['id']}?{WAIT}")
    assert status == 200
    assert done["state"] == "cancelled", (done["counts"], pool.logs())
    assert done["reason"] == "cancelled: its deadline passed"
    for _ in range(300):
        _, shown = await alice.call("GET", f"/v1/jobs/{created['id']}")
        if shown["counts"] == {"cancelled": 3}:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"the job's tasks are {shown['counts']}\n{pool.logs()}")
    _, pool_after = await alice.call("GET", "/v1/pool")
    assert pool_after["total"]["reserved"] == {"cpus": 0, "memory": 0, "disk": 0}


async def test_a_user_walks_the_pages_of_their_jobs_and_bad_pages_get_a_clear_400_or_404(
    pool: Pool, two_hosts: list[EnrolledHost], http: aiohttp.ClientSession, test_image: str
) -> None:
    """Tried: alice submits 5 jobs of one task and bob 1; alice walks pages of 2, then asks for
    `limit` 0, 1001 and x, and `after` bob's job, a job that never was and one of her own
    allocations (no job). Must hold: the pages hold 2, 2 and 1 jobs, `next` the last id of each
    and null on the last, each of alice's jobs once in the order submitted and never bob's; each
    bad limit is a 400 INVALID_FIELD naming the field, each `after` not hers a 404 NOT_FOUND
    naming `after`, bob's job and the unknown id get the same answer; `limit` 1 and 1000 are
    accepted; alice's list is the same afterwards."""
    alice = Api(http, pool.api, await pool.add_user("alice"))
    bob = Api(http, pool.api, await pool.add_user("bob"))
    mine = []
    for _ in range(5):
        status, created = await alice.call("POST", "/v1/jobs", job(test_image, "true", tasks=1))
        assert status == 201, created
        mine.append(created["id"])
    status, theirs = await bob.call("POST", "/v1/jobs", job(test_image, "true", tasks=1))
    assert status == 201, theirs

    pages: list[list[str]] = []
    after = ""
    while True:
        status, page = await alice.call("GET", f"/v1/jobs?limit=2{after}")
        assert status == 200, page
        pages.append([j["id"] for j in page["jobs"]])
        if page["next"] is None:
            break
        assert page["next"] == pages[-1][-1]
        after = f"&after={page['next']}"
    assert pages == [mine[0:2], mine[2:4], mine[4:]]
    _, listed = await alice.call("GET", "/v1/jobs")
    assert [j["id"] for j in listed["jobs"]] == mine
    assert listed["next"] is None

    status, done = await alice.call("GET", f"/v1/jobs/{mine[0]}?{WAIT}")  # its task is requested
    assert status == 200, done
    _, allocations = await alice.call("GET", "/v1/allocations")
    an_allocation = allocations["allocations"][0]["id"]
    await refused_pages(
        alice,
        "/v1/jobs",
        [(f"limit={bad}", "limit") for bad in ("0", "1001", "x")],
        [f"after={theirs['id']}", "after=j-never-was", f"after={an_allocation}"],
        theirs["id"],
        "j-never-was",
    )
    for limit in (1, 1000):
        status, edge = await alice.call("GET", f"/v1/jobs?limit={limit}")
        assert status == 200, edge
        assert [j["id"] for j in edge["jobs"]] == mine[:limit]
    _, again = await alice.call("GET", "/v1/jobs")
    assert [j["id"] for j in again["jobs"]] == mine


async def test_a_job_of_10000_tasks_answers_in_pages_and_each_task_comes_once(
    pool: Pool, one_host: EnrolledHost, http: aiohttp.ClientSession, test_image: str
) -> None:
    """Tried: alice's job of 10,000 tasks (the most), one at a time (`parallelism: 1`), each
    sleeping; her job read, listed and paged through (pages of 1,000, of one state, with bad
    `limit`, `after` and `state`; bob reading it); then removed. Must hold: POST, DELETE and
    the listing answer the job's summary (counts by state, no task), each under 2 kB; GET
    answers the counts and the first 100 tasks, with `task_list_next` to go on from; every
    task comes exactly once, in index order, through the pages after it and through the pages
    from the start, no page more than `limit` tasks; a page of one state holds exactly the
    tasks in it; bad queries are a 400 naming the field, an `after` past a job's last task a
    404 naming `after`, bob gets the 404 of a job that never was; and once removed, all
    10,000 tasks count and page as cancelled."""
    alice = Api(http, pool.api, await pool.add_user("alice"))
    bob = Api(http, pool.api, await pool.add_user("bob"))
    body = job(test_image, "sleep 600", tasks=MAX_TASKS, parallelism=1)
    status, created = await alice.call("POST", "/v1/jobs", body)
    assert status == 201, created
    assert created["counts"] == {"waiting": MAX_TASKS}
    assert (created["task_list"], created["task_list_next"]) == ([], None)
    assert size(created) < SUMMARY_BYTES, size(created)
    path = f"/v1/jobs/{created['id']}"

    for _ in range(600):
        _, running = await alice.call("GET", f"{path}/tasks?state=running")
        if running["tasks"]:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"no task of the job ever ran\n{pool.logs()}")
    assert [t["index"] for t in running["tasks"]] == [0]
    assert running["next"] is None

    status, shown = await alice.call("GET", path)
    assert status == 200, shown
    assert shown["counts"] == {"running": 1, "waiting": MAX_TASKS - 1}
    assert [t["index"] for t in shown["task_list"]] == list(range(DEFAULT_LIMIT))
    assert shown["task_list_next"] == DEFAULT_LIMIT - 1
    assert size(shown) < SUMMARY_BYTES + DEFAULT_LIMIT * TASK_BYTES, size(shown)
    _, listed = await alice.call("GET", "/v1/jobs")
    assert [(j["id"], j["task_list"], j["counts"]) for j in listed["jobs"]] == [
        (created["id"], [], shown["counts"])
    ]
    assert size(listed) < SUMMARY_BYTES, size(listed)

    limit = f"limit={MAX_LIMIT}"
    rest = await task_pages(alice, created["id"], limit, after=shown["task_list_next"])
    from_start = await task_pages(alice, created["id"], limit)
    for pages in (rest, from_start):
        assert all(len(page) <= MAX_LIMIT for page in pages)
        assert all(size(page) < MAX_LIMIT * TASK_BYTES for page in pages)
    walked = [t["index"] for t in [*shown["task_list"], *(t for page in rest for t in page)]]
    assert walked == list(range(MAX_TASKS)), "every task once, in order, after the first page"
    assert [t["index"] for page in from_start for t in page] == list(range(MAX_TASKS))
    assert len(from_start) == MAX_TASKS // MAX_LIMIT
    status, waiting = await alice.call("GET", f"{path}/tasks?state=waiting&limit=3")
    assert ([t["index"] for t in waiting["tasks"]], waiting["next"]) == ([1, 2, 3], 3)
    assert {t["state"] for t in waiting["tasks"]} == {"waiting"}
    _, none = await alice.call("GET", f"{path}/tasks?state=succeeded")
    assert (none["tasks"], none["next"]) == ([], None)
    _, last = await alice.call("GET", f"{path}/tasks?after={MAX_TASKS - 1}")
    assert (last["tasks"], last["next"]) == ([], None)

    for query, field in (
        ("limit=0", "limit"),
        (f"limit={MAX_LIMIT + 1}", "limit"),
        ("limit=x", "limit"),
        ("after=-1", "after"),
        ("after=x", "after"),
        (f"after={MAX_TASKS}", "after"),
        ("state=sleeping", "state"),
    ):
        status, answer = await alice.call("GET", f"{path}/tasks?{query}")
        assert status == 400, (query, answer)
        assert (answer["error"]["code"], answer["error"]["field"]) == ("INVALID_FIELD", field), query
    _, small_job = await alice.call("POST", "/v1/jobs", job(test_image, "sleep 600", tasks=3, parallelism=1))
    status, past = await alice.call("GET", f"/v1/jobs/{small_job['id']}/tasks?after=3")
    assert status == 404, past
    assert (past["error"]["code"], past["error"]["field"]) == ("NOT_FOUND", "after")
    # The client's pages, one task each: the cursor of the first is task 0, not "no cursor".
    client = ClientApi(Login(pool.api, alice.headers["Authorization"].removeprefix("Bearer ")))
    one_by_one = await client.rows(f"/v1/jobs/{small_job['id']}/tasks", "tasks", page_rows=1)
    assert [t["index"] for t in one_by_one] == [0, 1, 2]
    status, hidden = await bob.call("GET", f"{path}/tasks")
    _, never = await bob.call("GET", "/v1/jobs/j-000000000000/tasks")
    assert status == 404, hidden
    assert hidden["error"]["message"].replace(created["id"], "ID") == never["error"]["message"].replace(
        "j-000000000000", "ID"
    )

    status, removed = await alice.call("DELETE", path)
    assert status == 200, removed
    assert removed["state"] == "cancelled"
    assert removed["counts"] == {"cancelled": MAX_TASKS}, "what ran is released before the answer"
    assert (removed["task_list"], removed["task_list_next"]) == ([], None)
    assert size(removed) < SUMMARY_BYTES, size(removed)
    cancelled = await task_pages(alice, created["id"], f"state=cancelled&{limit}")
    assert [t["index"] for page in cancelled for t in page] == list(range(MAX_TASKS))
    await alice.call("DELETE", f"/v1/jobs/{small_job['id']}")


async def test_a_user_past_their_unfinished_jobs_is_refused_and_appends_nothing(
    pool: Pool, one_host: EnrolledHost, http: aiohttp.ClientSession, test_image: str
) -> None:
    """Tried: alice's job that ends, then jobs that keep running up to her cap of unfinished
    jobs (MAX_UNFINISHED_JOBS), the last few at the same moment, one past it, one more after;
    bob's job meanwhile; then alice removes one of hers and submits again. Must hold: the job
    that ended does not count; of the concurrent ones exactly those up to the cap are created
    (201) and the others refused; each refusal is a 403 TOO_MANY_JOBS that says what to do,
    and the log gets no job of it (alice's JobSubmitted stay as many as her jobs created);
    bob's job is created all along; once she removed one, alice's next job is created."""
    alice = Api(http, pool.api, await pool.add_user("alice"))
    bob = Api(http, pool.api, await pool.add_user("bob"))

    async def submitted(user: str) -> int:
        return int(
            await pool.store.pool.fetchval(
                "SELECT count(*) FROM events WHERE type = 'JobSubmitted' AND data->>'user' = $1", user
            )
        )

    _, ended = await alice.call("POST", "/v1/jobs", job(test_image, "true", tasks=1))
    status, done = await alice.call("GET", f"/v1/jobs/{ended['id']}?{WAIT}")
    assert done["state"] == "succeeded", (done, pool.logs())
    running = job(test_image, "sleep 600", tasks=1, cpus=0.1)
    for _ in range(MAX_UNFINISHED_JOBS - 2):
        status, created = await alice.call("POST", "/v1/jobs", running)
        assert status == 201, created
    at_once = await asyncio.gather(*(alice.call("POST", "/v1/jobs", running) for _ in range(4)))
    assert sorted(status for status, _ in at_once) == [201, 201, 403, 403], at_once
    assert await submitted("alice") == 1 + MAX_UNFINISHED_JOBS

    status, refused = await alice.call("POST", "/v1/jobs", running)
    assert status == 403, refused
    assert refused["error"]["code"] == "TOO_MANY_JOBS"
    assert f"you have {MAX_UNFINISHED_JOBS} jobs not finished" in refused["error"]["message"]
    assert "potluck job rm" in refused["error"]["message"]
    for _, answer in at_once:
        if "error" in answer:
            assert answer["error"] == refused["error"]
    assert await submitted("alice") == 1 + MAX_UNFINISHED_JOBS, "a refused job appends nothing"
    _, listed = await alice.call("GET", "/v1/jobs")
    assert len(listed["jobs"]) == 1 + MAX_UNFINISHED_JOBS

    status, theirs = await bob.call("POST", "/v1/jobs", running)
    assert status == 201, theirs
    first_running = listed["jobs"][1]["id"]
    status, removed = await alice.call("DELETE", f"/v1/jobs/{first_running}")
    assert (status, removed["state"]) == (200, "cancelled")
    status, again = await alice.call("POST", "/v1/jobs", running)
    assert status == 201, again
    for j in [*listed["jobs"], again]:
        await alice.call("DELETE", f"/v1/jobs/{j['id']}")
    await bob.call("DELETE", f"/v1/jobs/{theirs['id']}")
