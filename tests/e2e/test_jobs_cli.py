"""Batch jobs through the real `potluck run` / `potluck job` commands, against a real pool of two
hosts (two hostds, two private Docker engines), as a logged-in user.

Each host donates 0.5 CPU and each task asks for 0.1, so at most five tasks run on a host
at once: a job of more tasks needs both hosts, whatever the placement strategy.
"""

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from potluck.hostd.docker_driver import DockerDriver
from potluck.localpool import EnrolledHost
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import build_test_image
from potluck.user.client import ExitCode, Login
from tests.e2e.conftest import start_laptop
from tests.fixtures.pool import Pool

#: Every task but index 3 exits 0; index 3 exits 3 (busybox sh has no ?: in $(( ))).
EXIT_3_ON_INDEX_3 = ["sh", "-c", 'if [ "$POTLUCK_TASK_INDEX" = 3 ]; then exit 3; fi']
#: Small tasks, removed as soon as they end (nothing here fetches their results).
TASK = ["--cpus", "0.1", "--memory", "32M", "--disk", "64M", "--keep-for", "0"]


@dataclass
class TwoHosts:
    pool: Pool
    hosts: list[EnrolledHost]
    engines: list[DockerEngine]
    token: str
    env: dict[str, str]

    async def potluck(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The real `potluck` command as this user."""
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "potluck", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )

    async def run(self, *args: str) -> str:
        """`potluck run ...`; the new job's id."""
        done = await self.potluck("run", *args)
        assert done.returncode == 0, done.stderr + self.pool.logs()
        return done.stdout.strip()

    async def show(self, job_id: str) -> dict[str, Any]:
        done = await self.potluck("job", "show", job_id, "--json")
        assert done.returncode == 0, done.stderr
        job: dict[str, Any] = json.loads(done.stdout)
        return job

    def host_of(self, host_id: str) -> int:
        return next(i for i, h in enumerate(self.hosts) if h.host_id == host_id)


@pytest.fixture
async def two_hosts(pool: Pool, docker_engines: list[DockerEngine], tmp_path: Path) -> TwoHosts:
    hosts = []
    for name, engine in zip(("laptop-a", "laptop-b"), docker_engines, strict=True):
        host = await pool.enroll(name)
        pool.write_config(host, engine, donate={"cpus": 0.5, "memory": "1G", "disk": "2G"})
        pool.start_hostd(host)
        hosts.append(host)
    await pool.central_services_ready()  # see HOST_FIXTURES_THAT_WAIT
    for host in hosts:
        await pool.wait_for_host(host.host_id, "active")
    token = await pool.add_user("alice")
    config = tmp_path / "client" / "client.toml"
    Login(pool.api, token).save(config)
    env = {**os.environ, "POTLUCK_CONFIG": str(config)}
    return TwoHosts(pool, hosts, list(docker_engines), token, env)


def by_index(job: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {t["index"]: t for t in job["task_list"]}


@pytest.mark.liveness(0.5, 6, 30.0)
async def test_a_job_of_twenty_tasks_runs_each_index_once_and_wait_exits_by_the_outcome(
    two_hosts: TwoHosts, test_image: str
) -> None:
    """20 tasks on two hosts, index 3 exiting 3, no retries: `job wait` exits 5 (failed), and
    `job show` lists each index once with one attempt, exit 3 for index 3 and 0 for the rest,
    on both hosts. Then, at once, the same with `--retries 1 --retry-on exit` (index 3 tried
    twice, failed for good: 5) and a job whose tasks all exit 0 (`run --wait` exits 0). A job
    removed with `job rm` is cancelled and `job wait` on it exits 5. `job ls` and `alloc ls`
    list every job and allocation, each once, and `--limit N` the first N. Bad input (no tasks,
    an unknown job, `--limit 0`) is refused with the CLI's usage and refusal codes."""
    p = two_hosts
    job_id = await p.run("--tasks", "20", *TASK, "--image", test_image, "--", *EXIT_3_ON_INDEX_3)

    waited = await p.potluck("job", "wait", job_id, "--timeout", "90")
    assert waited.returncode == ExitCode.JOB_FAILED, waited.stderr + p.pool.logs()
    assert "task 3 failed" in waited.stderr, waited.stderr

    job = await p.show(job_id)
    assert job["state"] == "failed", job
    tasks = by_index(job)
    assert sorted(tasks) == list(range(20)), job["task_list"]
    assert len(job["task_list"]) == 20
    assert all(t["attempts"] == 1 for t in tasks.values()), job["task_list"]
    assert {i: t["exit_code"] for i, t in tasks.items()} == {i: 3 if i == 3 else 0 for i in range(20)}
    assert {i: t["state"] for i, t in tasks.items()} == {
        i: "failed" if i == 3 else "succeeded" for i in range(20)
    }
    assert job["counts"]["succeeded"] == 19
    assert job["counts"]["failed"] == 1
    assert {t["host_id"] for t in tasks.values()} == {h.host_id for h in p.hosts}
    assert {(t["host_id"], t["host_name"]) for t in tasks.values()} == {(h.host_id, h.name) for h in p.hosts}

    table = await p.potluck("job", "show", job_id)
    assert table.returncode == 0, table.stderr
    assert "INDEX" in table.stdout
    # Each task's host by the name users select it with, not its id.
    for host in p.hosts:
        assert host.name in table.stdout, table.stdout
        assert host.host_id not in table.stdout, table.stdout
    assert "19 succeeded, 1 failed" in table.stdout, table.stdout

    retried, clean = await asyncio.gather(
        p.potluck(
            "run", "--tasks", "5", *TASK, "--image", test_image, "--retries", "1", "--retry-on", "exit",
            "--wait", "--timeout", "90", "--json", "--", *EXIT_3_ON_INDEX_3,
        ),
        p.potluck(
            "run", "--tasks", "4", *TASK, "--image", test_image, "--wait", "--timeout", "90", "--", "true"
        ),
    )  # fmt: skip
    assert retried.returncode == ExitCode.JOB_FAILED, retried.stderr + p.pool.logs()
    again = by_index(json.loads(retried.stdout))
    assert again[3]["attempts"] == 2, again[3]
    assert again[3]["state"] == "failed", again[3]
    assert again[3]["exit_code"] == 3, again[3]
    assert all(again[i]["attempts"] == 1 and again[i]["state"] == "succeeded" for i in (0, 1, 2, 4)), again
    assert clean.returncode == ExitCode.OK, clean.stderr + p.pool.logs()
    clean_id = clean.stdout.strip()
    assert (await p.show(clean_id))["counts"] == {"succeeded": 4}

    listed = await p.potluck("job", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    every_job = json.loads(listed.stdout)
    assert {j["id"] for j in every_job} >= {job_id, clean_id}
    # The lists follow the API's pages to the end; --limit shows the first N (oldest first).
    first = await p.potluck("job", "ls", "--json", "--limit", "1")
    assert first.returncode == 0, first.stderr
    assert [j["id"] for j in json.loads(first.stdout)] == [every_job[0]["id"]]
    allocations = await p.potluck("alloc", "ls", "--json")
    assert allocations.returncode == 0, allocations.stderr
    every_allocation = [a["id"] for a in json.loads(allocations.stdout)]
    assert len(every_allocation) == len(set(every_allocation)) >= 20 + 5 + 4
    some = await p.potluck("alloc", "ls", "--json", "--limit", "3")
    assert [a["id"] for a in json.loads(some.stdout)] == every_allocation[:3]
    table = await p.potluck("job", "ls", "--limit", "1")
    assert table.returncode == 0, table.stderr
    assert every_job[0]["id"] in table.stdout
    assert (await p.potluck("alloc", "ls", "--limit", "0")).returncode == ExitCode.USAGE

    long_id = await p.run("--tasks", "2", *TASK, "--image", test_image, "--", "sleep", "600")
    removed = await p.potluck("job", "rm", long_id, "--json")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["state"] == "cancelled", removed.stdout
    cancelled = await p.potluck("job", "wait", long_id, "--timeout", "30")
    assert cancelled.returncode == ExitCode.JOB_FAILED, cancelled.stderr

    # Several at once, as `docker rm` takes them: `job ls -q` lists the ids alone, and an id
    # that is not the user's is named while the others are cancelled all the same.
    first_long, second_long = [
        await p.run("--tasks", "1", *TASK, "--image", test_image, "--", "sleep", "600") for _ in range(2)
    ]
    ids = (await p.potluck("job", "ls", "-q")).stdout.split()
    assert ids == [j["id"] for j in every_job] + [long_id, first_long, second_long]
    several = await p.potluck("job", "rm", first_long, "j-000000000000", second_long, "--json")
    assert several.returncode == ExitCode.REFUSED, several.stderr
    assert "no job j-000000000000 of yours" in several.stderr, several.stderr
    answers = [json.loads(line) for line in several.stdout.splitlines()]
    assert [(j["id"], j["state"]) for j in answers] == [(first_long, "cancelled"), (second_long, "cancelled")]

    none = await p.potluck("run", "--tasks", "0", *TASK, "--image", test_image, "--", "true")
    assert none.returncode == ExitCode.USAGE, none.stderr
    commandless = await p.potluck("run", "--tasks", "1", *TASK, "--image", test_image)
    assert commandless.returncode == ExitCode.USAGE, commandless.stderr
    assert "COMMAND" in commandless.stderr, commandless.stderr
    unknown = await p.potluck("job", "show", "no-such-job")
    assert unknown.returncode == ExitCode.REFUSED, unknown.stderr
    assert "no-such-job" in unknown.stderr, unknown.stderr


async def test_job_show_and_wait_page_through_a_job_of_more_tasks_than_one_answer_holds(
    two_hosts: TwoHosts, test_image: str
) -> None:
    """A job of 250 tasks, one at a time (the API answers a job with its first 100 tasks):
    `job show --json` and `job wait --json` (timing out, as the tasks sleep) print every task
    once, in index order, with the counts; `job show` lists them all in its table; `job rm`
    answers the cancelled job's counts."""
    p = two_hosts
    job_id = await p.run(
        "--tasks", "250", "--parallelism", "1", *TASK, "--image", test_image, "--", "sleep", "600"
    )
    job = await p.show(job_id)
    assert [t["index"] for t in job["task_list"]] == list(range(250)), job["task_list"]
    assert sum(job["counts"].values()) == 250, job["counts"]
    waited = await p.potluck("job", "wait", job_id, "--timeout", "1", "--json")
    assert waited.returncode == ExitCode.TIMEOUT, waited.stderr
    assert [t["index"] for t in json.loads(waited.stdout)["task_list"]] == list(range(250))
    table = await p.potluck("job", "show", job_id)
    assert table.returncode == 0, table.stderr
    indices = [line.split()[0] for line in table.stdout.splitlines() if line.split()[:1] != []]
    assert [int(i) for i in indices if i.isdigit()] == list(range(250)), table.stdout
    removed = await p.potluck("job", "rm", job_id, "--json")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["counts"] == {"cancelled": 250}, removed.stdout


async def test_job_rm_of_an_ended_job_says_nothing_was_cancelled_and_its_kept_results_went(
    two_hosts: TwoHosts, test_image: str
) -> None:
    """Tried: a one-task job that succeeds, its task's container kept 10 minutes, then `job rm`.
    Before, it printed the job and exited 0, saying nothing, while it removed that container.
    Must hold: exit 0, the job still `succeeded`, and stderr says it had ended, nothing was
    cancelled and the kept containers were removed; the task's container is gone (its logs
    say so)."""
    p = two_hosts
    task = [*TASK[:-1], "600"]  # --keep-for 600
    job_id = await p.run("--tasks", "1", *task, "--image", test_image, "--wait", "--", "true")
    alloc_id = (await p.show(job_id))["task_list"][0]["alloc_id"]
    removed = await p.potluck("job", "rm", job_id)
    assert removed.returncode == 0, removed.stderr
    said = " ".join(removed.stderr.split())
    assert f"job {job_id} had already ended (succeeded): nothing was cancelled" in said, said
    assert "the containers its tasks kept for results were removed" in said, said
    assert (await p.show(job_id))["state"] == "succeeded"
    logs = await p.potluck("logs", alloc_id)
    assert logs.returncode == 1, logs.stderr
    assert "container was removed" in logs.stderr, logs.stderr


async def running_on(p: TwoHosts, http: aiohttp.ClientSession, job_id: str) -> dict[int, tuple[str, str]]:
    """{task index: (host id, allocation id)} of the job's running tasks, as the API has them."""
    headers = {"Authorization": f"Bearer {p.token}"}
    async with http.get(f"{p.pool.api}/v1/jobs/{job_id}", headers=headers) as response:
        job = await response.json()
    return {t["index"]: (t["host_id"], t["alloc_id"]) for t in job["task_list"] if t["state"] == "running"}


async def containers_of(engine: DockerEngine, alloc_ids: set[str]) -> list[str]:
    with DockerDriver(engine.url) as driver:
        found = await asyncio.to_thread(driver.list_managed, None)
    return [c.allocation_id for c in found if c.allocation_id in alloc_ids]


@pytest.mark.liveness(0.5, 4, 4.0)
async def test_tasks_of_a_host_killed_mid_job_are_requeued_and_the_job_completes_on_the_other(
    two_hosts: TwoHosts, test_image: str
) -> None:
    """8 tasks sleeping a few seconds; once tasks run on a host, its hostd is killed (-9) and
    its Docker engine stopped. The registry declares it lost; its tasks are re-queued (their
    attempts count 2) and finish on the other host; `job wait` exits 0. When the host comes
    back (engine and hostd), the earlier attempts' containers left on its engine are removed."""
    p = two_hosts
    job_id = await p.run("--tasks", "8", *TASK, "--image", test_image, "--", "sleep", "4")
    async with aiohttp.ClientSession() as http:
        deadline = asyncio.get_running_loop().time() + 60
        while not (running := await running_on(p, http, job_id)):
            assert asyncio.get_running_loop().time() < deadline, p.pool.logs()
            await asyncio.sleep(0.2)
    # The host with the most running tasks is the one that goes.
    on_host = [host_id for host_id, _ in running.values()]
    victim = p.host_of(max(set(on_host), key=on_host.count))
    survivor = 1 - victim
    doomed = {i: alloc_id for i, (h, alloc_id) in running.items() if h == p.hosts[victim].host_id}
    engine = p.engines[victim]
    process = p.hosts[victim].process
    assert process is not None
    process.kill()
    await asyncio.to_thread(engine.stop)
    engine_up = False
    try:
        await p.pool.wait_for_host(p.hosts[victim].host_id, "lost", timeout=60)
        waited = await p.potluck("job", "wait", job_id, "--timeout", "90")
        assert waited.returncode == ExitCode.OK, waited.stderr + p.pool.logs()
        tasks = by_index(await p.show(job_id))
        assert all(t["state"] == "succeeded" for t in tasks.values()), tasks
        for index in doomed:
            assert tasks[index]["attempts"] == 2, tasks[index]
            assert tasks[index]["host_id"] == p.hosts[survivor].host_id, tasks[index]

        await asyncio.to_thread(engine.start)
        engine_up = True
        assert await containers_of(engine, set(doomed.values())), "the engine kept the stopped containers"
        p.pool.start_hostd(p.hosts[victim])
        await p.pool.wait_for_host(p.hosts[victim].host_id, "active")
        deadline = asyncio.get_running_loop().time() + 30
        while left := await containers_of(engine, set(doomed.values())):
            assert asyncio.get_running_loop().time() < deadline, f"{left} still there\n{p.pool.logs()}"
            await asyncio.sleep(0.2)
    finally:
        # The session's engines outlive this test: the next one finds it up, image and all.
        if not engine_up:
            await asyncio.to_thread(engine.start)
        await asyncio.to_thread(build_test_image, engine.url)


@pytest.fixture
async def one_host(pool: Pool, docker_engines: list[DockerEngine], tmp_path: Path) -> TwoHosts:
    """Alice logged in to a pool of one active host (the TwoHosts helpers, one host)."""
    host = await start_laptop(pool, docker_engines[0], donate={"cpus": 1, "memory": "1G", "disk": "2G"})
    token = await pool.add_user("alice")
    config = tmp_path / "client" / "client.toml"
    Login(pool.api, token).save(config)
    env = {**os.environ, "POTLUCK_CONFIG": str(config)}
    return TwoHosts(pool, [host], [docker_engines[0]], token, env)


async def test_an_id_that_is_a_path_names_no_other_endpoint_and_gets_a_clear_error(
    one_host: TwoHosts, test_image: str
) -> None:
    """Tried: with a job and an allocation of alice's running, ids that are paths or queries
    given to `job rm/show/wait` and `alloc rm/show/extend`, `logs` (`../allocations/ALLOC`,
    `JOB/tasks`, `JOB?wait=done`, `../jobs/JOB`), and ids `.` and `..`. Must hold: each is
    refused with a clear error and no traceback: a path or query is an id that is not hers
    (exit 1, "no job"/"no allocation"), `.` and `..` are not ids (exit 2, before any
    request); afterwards her allocation is still running, not released, and her job still
    running (before, `job rm ../allocations/ALLOC` released the allocation, then failed with
    a KeyError traceback)."""
    p = one_host
    job_id = await p.run("--tasks", "1", *TASK, "--image", test_image, "--", "sleep", "600")
    created = await p.potluck(
        "alloc", "create", "--cpus", "0.1", "--memory", "32M", "--image", test_image, "--json"
    )
    assert created.returncode == 0, created.stderr
    alloc_id = json.loads(created.stdout)["id"]
    refused = [
        (("job", "rm", f"../allocations/{alloc_id}"), "no job"),
        (("job", "rm", f"../allocations/{alloc_id}", f"{job_id}/tasks"), "no job"),
        (("job", "show", f"{job_id}/tasks"), "no job"),
        (("job", "show", f"{job_id}?wait=done"), "no job"),
        (("job", "wait", "--timeout", "5", f"{job_id}/tasks"), "no job"),
        (("alloc", "rm", f"../jobs/{job_id}"), "no allocation"),
        (("alloc", "show", f"../jobs/{job_id}"), "no allocation"),
        (("alloc", "extend", f"{alloc_id}/../{alloc_id}"), "no allocation"),
    ]
    for args, said in refused:
        done = await p.potluck(*args)
        assert done.returncode == ExitCode.REFUSED, (args, done.stdout, done.stderr)
        assert said in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr, (args, done.stderr)
    for args in (
        ("job", "rm", ".."),
        ("job", "rm", job_id, "."),
        ("job", "show", ".."),
        ("job", "wait", "."),
        ("alloc", "rm", ".."),
        ("alloc", "show", "."),
        ("alloc", "extend", ".."),
        ("logs", ".."),
    ):
        done = await p.potluck(*args)
        assert done.returncode == ExitCode.USAGE, (args, done.stdout, done.stderr)
        assert "is not an id" in done.stderr, (args, done.stderr)
        assert " ls` lists yours" in done.stderr, (args, done.stderr)
    job = await p.show(job_id)
    assert job["state"] == "running", job
    shown = await p.potluck("alloc", "show", alloc_id, "--json")
    assert json.loads(shown.stdout)["state"] not in ("released", "expired"), shown.stdout
    assert (await p.potluck("job", "rm", job_id)).returncode == 0
    assert (await p.potluck("alloc", "rm", alloc_id)).returncode == 0


async def test_job_wait_rides_out_an_allocator_restart_and_exits_by_the_outcome(
    one_host: TwoHosts, test_image: str
) -> None:
    """Tried: `potluck job wait` (piped, as a script runs it) on a job of one task that sleeps 25 s;
    meanwhile the allocator is killed (SIGKILL) and started again a few seconds later. Must
    hold: the wait says once on stderr that it asks again, carries on, and exits 0 once the job
    succeeded, its task run once (one attempt); before, it exited 3 ("cannot reach the
    allocator") at the first round after the kill, with the job still running."""
    p = one_host
    job_id = await p.run("--tasks", "1", *TASK, "--image", test_image, "--", "sleep", "25")
    waiting = asyncio.create_task(p.potluck("job", "wait", job_id, "--timeout", "150", timeout=180))
    # The wait has started (a second or two on a loaded machine) and is in its first round
    # (piped: rounds of 30 s).
    await asyncio.sleep(6)
    assert not waiting.done(), waiting.result().stderr
    p.pool.processes["allocator"].kill()
    await asyncio.sleep(3)
    p.pool.start_allocator(port=p.pool.api_port)
    done = await waiting
    assert done.returncode == ExitCode.OK, (done.stdout, done.stderr, p.pool.logs())
    assert done.stderr.count("asking again") == 1, done.stderr
    assert f"job {job_id} succeeded: 1 succeeded" in done.stderr, done.stderr
    job = await p.show(job_id)
    assert (job["state"], job["task_list"][0]["attempts"]) == ("succeeded", 1), job
