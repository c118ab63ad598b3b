"""Operators remove users and change their quotas: `potluck ops users remove` and `set-quota`,
against a running allocator, hostd, Docker engine and SSH gateway."""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from potluck.contracts.job_events import JobCancelled, JobTaskRequested, job_stream
from potluck.events.schema import registry
from potluck.hostd.docker_driver import DockerDriver
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG
from tests.e2e.allocator_api import Api
from tests.e2e.conftest import Gatewayed, replay_agrees, wait_for_status
from tests.fixtures.pool import EnrolledHost, Pool, allocation
from tests.helpers import wait_until

REASON = "left the group"


async def users(pool: Pool, *args: str) -> subprocess.CompletedProcess[str]:
    """`potluck ops users ARGS` as operator olga ($USER)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "potluck", "ops", "users", *args, "--database-url", pool.database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "USER": "olga"},
    )


def task(cpus: float, **more: Any) -> dict[str, Any]:
    return {
        "cpus": cpus,
        "memory": "32M",
        "disk": "64M",
        "image": DEFAULT_TAG,
        "command": ["sleep", "3600"],
        **more,
    }


async def test_a_removed_user_is_refused_everywhere_and_their_work_ended_with_the_reason(
    gatewayed: Gatewayed, docker_engines: list[DockerEngine]
) -> None:
    """What is tried: alice runs an allocation with an open SSH session, runs a job, and has a
    request waiting for room; otto runs an allocation too (same key). The operator removes alice
    with a reason; then again; then an unknown user; then adds alice again.
    What must hold: the command says what it did and records UserRemoved; alice's token gets 401
    saying she was removed; her open session ends and a new SSH login to her allocation is refused;
    her allocation is released by "operator" with the reason naming the removal, and its container
    is gone from the engine; her waiting request is released with the reason and her job cancelled
    with it, its attempt released; otto's token, allocation and SSH login still work; a second
    removal records nothing (exit 0), an unknown user fails (exit 1); `ops users list` shows her
    removed (by whom, why) and otto's quota; replay agrees with the running services. (Her name
    given again, and her restored: test_a_removed_name_is_not_given_again_and_restored_is_the_same_person.)"""
    pool = gatewayed.pool
    said = f"user alice was removed by the operator (olga): {REASON}"
    added = await users(pool, "add", "otto", "--json")
    assert added.returncode == 0, added.stderr
    otto_token = json.loads(added.stdout)["token"]
    async with aiohttp.ClientSession() as http:
        mine = await gatewayed.allocate(http)
        otto = Gatewayed(pool, gatewayed.host, gatewayed.ssh_port, gatewayed.key, otto_token)
        theirs = await otto.allocate(http)
        alice = Api(http, pool.api, gatewayed.token)
        status, job = await alice.call("POST", "/v1/jobs", {"tasks": 1, **task(0.2)})
        assert status == 201, job
        # 0.5 + 0.5 + 0.2 of the laptop's 2 CPUs held: 1.5 more waits for room.
        status, waiting = await alice.call("POST", "/v1/allocations", task(1.5))
        assert (status, waiting["state"]) == (202, "pending"), waiting
    for _ in range(300):  # the job's first attempt is requested by the allocator's next round
        requested = await pool.store.read_stream(job_stream(job["id"]))
        if any(r.type == "JobTaskRequested" for r in requested):
            break
        await asyncio.sleep(0.1)
    greeted = await gatewayed.ssh(mine, "echo before")
    assert greeted.stdout == "before\n", greeted.stderr
    session = await gatewayed.ssh_process(mine, "sleep 600")
    try:
        removed = await users(pool, "remove", "alice", "--reason", REASON)
        assert removed.returncode == 0, removed.stderr
        assert removed.stdout.startswith(f"removed user alice ({REASON}): their token no longer works"), (
            removed.stdout
        )
        types = [r.type for r in await pool.store.read_stream("user-alice")]
        assert types == ["UserAdded", "UserRemoved"], types

        async with aiohttp.ClientSession() as http:
            alice = Api(http, pool.api, gatewayed.token)
            for _ in range(100):
                status, refused = await alice.call("GET", "/v1/allocations")
                if status == 401:
                    break
                await asyncio.sleep(0.1)
            assert status == 401, refused
            assert refused["error"]["code"] == "USER_REMOVED"
            assert "user alice was removed" in refused["error"]["message"], refused

        async with asyncio.timeout(30):
            await session.wait()
        assert session.returncode != 0
    finally:
        if session.returncode is None:
            session.kill()
            await session.wait()

    await wait_for_status(pool, mine, "released")
    state = await allocation(pool.store, mine)
    assert state is not None
    assert state.reason == said, state
    await wait_for_status(pool, waiting["id"], "released")
    state = await allocation(pool.store, waiting["id"])
    assert state is not None
    assert state.reason == said
    records = await pool.store.read_stream(job_stream(job["id"]))
    cancelled = [e for e in map(registry.decode_record, records) if isinstance(e, JobCancelled)]
    assert [(c.by, c.reason) for c in cancelled] == [("operator", said)], records
    attempts = [e.alloc_id for e in map(registry.decode_record, records) if isinstance(e, JobTaskRequested)]
    assert attempts, records
    for attempt in attempts:
        await wait_for_status(pool, attempt, "released")

    def containers() -> set[str]:
        with DockerDriver(docker_engines[0].url) as driver:
            return {c.allocation_id for c in driver.list_managed(gatewayed.host.host_id)}

    await wait_until(lambda: mine not in containers(), 30, "alice's container to be removed")
    assert theirs in containers()
    refused_login = await gatewayed.ssh(mine, "echo after")
    assert refused_login.returncode == 255, refused_login
    assert "Permission denied" in refused_login.stderr, refused_login.stderr

    # Otto is untouched.
    assert (await allocation(pool.store, theirs)).status == "running"  # type: ignore[union-attr]
    still = await otto.ssh(theirs, "echo still")
    assert still.stdout == "still\n", still.stderr
    async with aiohttp.ClientSession() as http:
        status, _ = await Api(http, pool.api, otto_token).call("GET", "/v1/allocations")
    assert status == 200

    again = await users(pool, "remove", "alice")
    assert again.returncode == 0, again.stderr
    assert again.stdout == "user alice was already removed; nothing recorded\n"
    unknown = await users(pool, "remove", "nobody")
    assert unknown.returncode == 1
    assert "there is no user nobody" in unknown.stderr
    listed = await users(pool, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["user"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert rows["alice"] == {"user": "alice", "status": "removed", "by": "olga", "reason": REASON}
    assert rows["otto"]["status"] == "active"
    plain = await users(pool, "list")
    assert plain.returncode == 0, plain.stderr
    assert f"alice  removed by olga: {REASON}\n" in plain.stdout, plain.stdout
    assert "otto  8 CPUs, 16G memory, 64G disk, 10 allocations held at once\n" in plain.stdout, plain.stdout
    await replay_agrees(pool)


async def as_user(pool: Pool, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The user's `potluck ARGS`, logged in with `token` (POTLUCK_URL and POTLUCK_TOKEN)."""
    env = {**os.environ, "POTLUCK_URL": pool.api, "POTLUCK_TOKEN": token, "POTLUCK_CONFIG": "/nonexistent"}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "potluck", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


async def answered(api: Api, path: str, status: int) -> Any:
    """What `path` answers once it answers `status` (the allocator folds the log a moment after
    a command appends to it)."""
    for _ in range(100):
        got, answer = await api.call("GET", path)
        if got == status:
            return answer
        await asyncio.sleep(0.1)
    raise AssertionError(f"GET {path} answered {got}, not {status}: {answer}")


async def test_a_removed_name_is_not_given_again_and_restored_is_the_same_person(
    pool: Pool, laptop: EnrolledHost
) -> None:
    """What is tried: bob (2 CPUs of quota) has an allocation running and a job; the operator
    removes him; bob runs `potluck alloc ls` and `potluck ssh`; the operator adds "bob" (for
    somebody else), changes his quota, restores him with a quota past the bounds, then restores
    him; bob logs in with the new token; the old token is tried; restore is tried again, and on
    a name never added.
    What must hold: removed, bob's `alloc ls` and `ssh` exit 1 (refused by the pool, not the
    usage error 2) saying he was removed and to ask the operator; adding the name is refused
    (exit 1) saying by whom and why he was removed, that his allocations, jobs and images stay
    his and how to restore him, and records nothing, nor does set-quota (exit 1, naming restore)
    or the restore over the bounds (exit 2); `ops users list` still shows him removed. Restored,
    UserRestored is recorded with a new token printed alone on stdout, the quota he had when
    removed, and `ops users list` shows him active with it; with the new token he sees his own
    released allocation (with the removal's reason) and cancelled job, in the API and `alloc
    ls`; the old token stays refused with the generic 401 (`alloc ls`: exit 2, log in again);
    restoring an active user or an unknown name fails (exit 1) and records nothing; replay
    agrees."""
    await pool.wait_api()
    made = await users(pool, "add", "bob", "--cpus", "2", "--json")
    assert made.returncode == 0, made.stderr
    old_token = json.loads(made.stdout)["token"]
    async with aiohttp.ClientSession() as http:
        bob = Api(http, pool.api, old_token)
        status, held = await bob.call("POST", "/v1/allocations", task(0.2))
        assert status == 201, held
        status, job = await bob.call("POST", "/v1/jobs", {"tasks": 1, **task(0.2)})
        assert status == 201, job
        await wait_for_status(pool, held["id"], "running")

        removed = await users(pool, "remove", "bob", "--reason", REASON)
        assert removed.returncode == 0, removed.stderr
        await answered(bob, "/v1/allocations", 401)
        for args in (["alloc", "ls"], ["ssh", held["id"], "true"]):
            refused = await as_user(pool, old_token, *args)
            assert refused.returncode == 1, (args, refused.stderr)
            assert "user bob was removed by the pool's operator" in refused.stderr, refused.stderr
            assert "ask the pool's operator" in refused.stderr, refused.stderr
        await wait_for_status(pool, held["id"], "released")

        recorded = ["UserAdded", "UserRemoved"]
        again = await users(pool, "add", "bob", "--json")
        assert (again.returncode, again.stdout) == (1, ""), again.stderr
        assert f"user bob was removed by olga ({REASON})" in again.stderr, again.stderr
        assert "allocations, jobs and images stay theirs" in again.stderr, again.stderr
        assert "`potluck ops users restore bob`" in again.stderr, again.stderr
        quota = await users(pool, "set-quota", "bob", "--cpus", "4")
        assert quota.returncode == 1, quota.stderr
        assert "`potluck ops users restore bob`" in quota.stderr, quota.stderr
        huge = await users(pool, "restore", "bob", "--cpus", "1e300")
        assert huge.returncode == 2, huge.stderr
        assert "--cpus: at most 100,000" in huge.stderr, huge.stderr
        assert [r.type for r in await pool.store.read_stream("user-bob")] == recorded
        listed = await users(pool, "list", "--json")
        assert {"user": "bob", "status": "removed", "by": "olga", "reason": REASON} in map(
            json.loads, listed.stdout.splitlines()
        ), listed.stdout

        restored = await users(pool, "restore", "bob")
        assert restored.returncode == 0, restored.stderr
        new_token = restored.stdout.strip()
        assert restored.stdout == new_token + "\n"
        assert new_token.startswith("pl_")
        assert new_token != old_token
        assert restored.stderr.startswith(
            "restored user bob, who sees their own allocations and jobs again (quota: 2 CPUs, 16G "
            "memory, 64G disk, 10 allocations held at once); their token"
        ), restored.stderr
        assert [r.type for r in await pool.store.read_stream("user-bob")] == [*recorded, "UserRestored"]
        listed = await users(pool, "list", "--json")
        rows = {row["user"]: row for row in map(json.loads, listed.stdout.splitlines())}
        assert rows["bob"]["status"] == "active"
        assert rows["bob"]["quota"]["cpus"] == 2.0

        back = Api(http, pool.api, new_token)
        mine = await answered(back, "/v1/allocations", 200)
        said = f"user bob was removed by the operator (olga): {REASON}"
        shown = {a["id"]: a for a in mine["allocations"]}
        assert (shown[held["id"]]["state"], shown[held["id"]]["reason"]) == ("released", said), mine
        jobs = await answered(back, "/v1/jobs", 200)
        assert [(j["id"], j["state"]) for j in jobs["jobs"]] == [(job["id"], "cancelled")], jobs
        ls = await as_user(pool, new_token, "alloc", "ls", "--json")
        assert ls.returncode == 0, ls.stderr
        assert held["id"] in {a["id"] for a in json.loads(ls.stdout)}

        status, stale = await bob.call("GET", "/v1/allocations")
        assert (status, stale["error"]["code"]) == (401, "UNAUTHENTICATED"), stale
        assert stale["error"]["message"] == "this token is not valid; ask an operator for a new one"
        stale_ls = await as_user(pool, old_token, "alloc", "ls")
        assert stale_ls.returncode == 2, stale_ls.stderr
        assert "run `potluck login` with a valid token" in stale_ls.stderr, stale_ls.stderr

    twice = await users(pool, "restore", "bob")
    assert (twice.returncode, twice.stdout) == (1, ""), twice.stderr
    assert "user bob was not removed" in twice.stderr, twice.stderr
    nobody = await users(pool, "restore", "nobody")
    assert nobody.returncode == 1
    assert "there is no user nobody" in nobody.stderr, nobody.stderr
    assert [r.type for r in await pool.store.read_stream("user-bob")] == [*recorded, "UserRestored"]
    await replay_agrees(pool)


async def test_a_quota_set_lower_keeps_what_is_held_and_refuses_more_until_raised(
    pool: Pool, laptop: EnrolledHost, tmp_path: Path
) -> None:
    """What is tried: quin (2 CPUs of quota) runs 1.5 CPUs and has a 0.4 CPU request waiting
    for room (the laptop donates 2 CPUs, and another user holds some); the operator lowers her
    quota to 1 CPU, asks for more, gives bad values, then raises it to 4.
    What must hold: set-quota says the whole new quota and records UserQuotaChanged with only
    cpus changed; her running allocation keeps running; her waiting request is refused as
    QUOTA_EXCEEDED saying the quota was lowered; a new request is refused (403) with the quota's
    message; bad values (0, not a size, or past the bounds: 1e300 CPUs, 20-digit allocations,
    memory or disk past 1 PiB; a user added with one too), no option and an unknown user fail
    (exit 2, 2, 1) and record nothing; the same quota again records nothing; raised, a new
    request is placed; each change is said alike ("user quin's quota is now ...")."""
    await pool.wait_api()
    made = await users(pool, "add", "quin", "--cpus", "2", "--memory", "1G", "--json")
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)["token"]
    other = await users(pool, "add", "vera", "--json")
    assert other.returncode == 0, other.stderr
    async with aiohttp.ClientSession() as http:
        quin = Api(http, pool.api, token)
        vera = Api(http, pool.api, json.loads(other.stdout)["token"])
        status, held = await quin.call("POST", "/v1/allocations", task(1.5))
        assert status == 201, held
        status, hers = await vera.call("POST", "/v1/allocations", task(0.2))
        assert status == 201, hers
        status, waiting = await quin.call("POST", "/v1/allocations", task(0.4))
        assert (status, waiting["state"]) == (202, "pending"), waiting
        await wait_for_status(pool, held["id"], "running")

        lowered = await users(pool, "set-quota", "quin", "--cpus", "1")
        assert lowered.returncode == 0, lowered.stderr
        assert (
            lowered.stdout
            == "user quin's quota is now 1 CPUs, 1G memory, 64G disk, 10 allocations held at once\n"
        )
        await wait_for_status(pool, waiting["id"], "refused")
        state = await allocation(pool.store, waiting["id"])
        assert state is not None
        assert state.reason == "QUOTA_EXCEEDED"
        assert state.detail == "the user's quota was lowered: this would hold 1.9 CPUs, your quota is 1"
        for _ in range(100):
            status, refused = await quin.call("POST", "/v1/allocations", task(0.1))
            if status == 403:
                break
            await asyncio.sleep(0.1)
        assert status == 403, refused
        assert refused["error"] == {
            "code": "QUOTA_EXCEEDED",
            "message": "this would hold 1.6 CPUs, your quota is 1",
            "field": "cpus",
        }
        status, shown = await quin.call("GET", f"/v1/allocations/{held['id']}")
        assert (status, shown["state"]) == (200, "running"), shown

        before = [r.type for r in await pool.store.read_stream("user-quin")]
        assert before == ["UserAdded", "UserQuotaChanged"]
        for args, code, said in [
            (["--cpus", "0"], 2, "--cpus"),
            (["--memory", "lots"], 2, "not a size"),
            ([], 2, "give the quota to change"),
            (["--cpus", "1e300"], 2, "--cpus: at most 100,000, "),
            (["--allocations", "99999999999999999999"], 2, "--allocations: at most 1,000,000, "),
            (["--memory", "2048T"], 2, "--memory: at most 1024T (1 PiB), "),
            (["--disk", "1025T"], 2, "--disk: at most 1024T (1 PiB), "),
        ]:
            bad = await users(pool, "set-quota", "quin", *args)
            assert (bad.returncode, said in bad.stderr) == (code, True), (args, bad.stderr)
        huge = await users(pool, "add", "hugo", "--cpus", "1e300")
        assert huge.returncode == 2, huge.stderr
        assert "--cpus: at most 100,000, " in huge.stderr, huge.stderr
        assert await pool.store.read_stream("user-hugo") == []
        unknown = await users(pool, "set-quota", "nobody", "--cpus", "1")
        assert unknown.returncode == 1
        assert "there is no user nobody" in unknown.stderr
        same = await users(pool, "set-quota", "quin", "--cpus", "1")
        assert same.returncode == 0, same.stderr
        assert same.stdout.endswith("already; nothing recorded\n"), same.stdout
        assert [r.type for r in await pool.store.read_stream("user-quin")] == before

        raised = await users(pool, "set-quota", "quin", "--cpus", "4", "--json")
        assert raised.returncode == 0, raised.stderr
        answer = json.loads(raised.stdout)
        assert answer["recorded"] == ["UserQuotaChanged"]
        assert answer["quota"] == {
            "cpus": 4.0,
            "memory_bytes": 1 << 30,
            "allocations": 10,
            "disk_bytes": 64 << 30,
        }
        for _ in range(100):
            status, placed = await quin.call("POST", "/v1/allocations", task(0.1))
            if status != 403:
                break
            await asyncio.sleep(0.1)
        assert status == 201, placed
    more = await users(pool, "set-quota", "quin", "--allocations", "12", "--disk", "32G")
    assert more.returncode == 0, more.stderr
    assert (
        more.stdout == "user quin's quota is now 4 CPUs, 1G memory, 32G disk, 12 allocations held at once\n"
    )
    await replay_agrees(pool)
