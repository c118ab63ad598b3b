"""`ops/bench jobs`: a batch job of many short tasks (`true`) on two private engines.

The whole pool runs as real processes (NATS with nkeys, Postgres, registry, allocator,
two hostds, each on its own private Docker engine). One job of `--tasks` tasks is
posted (POST /v1/jobs) and waited for (GET ?wait=done). Each task asks for 0.25 CPU
and each host donates 2, so the pool runs 16 at once (the user's quota is far above).

The baseline is raw `docker run --rm` of the same image, command and limits, as many
runs as tasks, 16 at once (8 on each engine): the same work at the same concurrency
without Potluck, in the same run, after the job.

    tasks_per_s    tasks / seconds from POST to the job done; baseline: runs / seconds
                   for all the raw runs
    overhead_p50   ms, a task's span from its placement (AllocationPlaced) to its exit
                   (AllocationExited) as the log recorded them, median over tasks;
                   baseline: the median `docker run --rm` wall time; with the medians of
                   the legs the log records (requested_to_placed: the wait for room,
                   placed_to_running: hostd's create and start, running_to_exited)
"""

import argparse
import asyncio
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import cycle
from typing import Any

import aiohttp

from bench.harness import bench_servers, emit, percentile, say, wait_active_host
from bench.pool import BenchPool, private_pool
from potluck.contracts.allocation_events import alloc_stream
from potluck.events import EventStore
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG

BENCH = "jobs"
HOSTS = 2
TASK_CPUS = 0.25
PER_HOST = 8  # 2 donated CPUs / TASK_CPUS
COMMAND = ["true"]


def job_body(tasks: int) -> dict[str, Any]:
    return {
        "tasks": tasks,
        "cpus": TASK_CPUS,
        "memory": "32M",
        "disk": "64M",
        "image": DEFAULT_TAG,
        "command": COMMAND,
        # Removed at once, as `docker run --rm` is: kept containers would hold disk.
        "keep_for": 0,
        "lifetime": "10m",
    }


async def run_job(bench: BenchPool, http: aiohttp.ClientSession, tasks: int) -> tuple[float, dict[str, Any]]:
    """Seconds from the POST to the job ended, and the job as it ended."""
    started = time.perf_counter()
    async with http.post(f"{bench.api}/v1/jobs", json=job_body(tasks), headers=bench.headers) as response:
        job: dict[str, Any] = await response.json()
        if response.status != 201:
            raise RuntimeError(f"POST /v1/jobs answered {response.status}: {job}")
    while job["state"] == "running":
        url = f"{bench.api}/v1/jobs/{job['id']}?wait=done&timeout=10"
        async with http.get(url, headers=bench.headers) as response:
            job = await response.json()
            if response.status != 200:
                raise RuntimeError(f"GET {url} answered {response.status}: {job}")
        say(f"job {job['id']}: {job['counts']}")
    elapsed = time.perf_counter() - started
    if job["state"] != "succeeded":
        raise RuntimeError(f"job {job['id']} {job['state']}: {job['counts']} ({job.get('reason')})")
    return elapsed, job


async def every_task(
    bench: BenchPool, http: aiohttp.ClientSession, job: dict[str, Any]
) -> list[dict[str, Any]]:
    """Each task of the job, read page by page (GET /v1/jobs/{id}/tasks), after the timing."""
    tasks: list[dict[str, Any]] = []
    after = ""
    while True:
        url = f"{bench.api}/v1/jobs/{job['id']}/tasks?limit=1000{after}"
        async with http.get(url, headers=bench.headers) as response:
            page = await response.json()
            if response.status != 200:
                raise RuntimeError(f"GET {url} answered {response.status}: {page}")
        tasks += page["tasks"]
        if page["next"] is None:
            return tasks
        after = f"&after={page['next']}"


#: The legs of a task's life the log records, for where the time goes (medians in the output).
LEGS = {
    "requested_to_placed": ("AllocationRequested", "AllocationPlaced"),
    "placed_to_running": ("AllocationPlaced", "AllocationRunning"),
    "running_to_exited": ("AllocationRunning", "AllocationExited"),
    "placed_to_exited": ("AllocationPlaced", "AllocationExited"),
}


async def legs_ms(
    store: EventStore, job: dict[str, Any], tasks: list[dict[str, Any]]
) -> dict[str, list[float]]:
    """For each leg of LEGS, every task's span in ms as recorded in its allocation's stream."""
    legs: dict[str, list[float]] = {leg: [] for leg in LEGS}
    for task in tasks:
        at = {r.type: r.recorded_at for r in await store.read_stream(alloc_stream(task["alloc_id"]))}
        for leg, (start, end) in LEGS.items():
            if start in at and end in at:
                legs[leg].append((at[end] - at[start]).total_seconds() * 1000)
    if not legs["placed_to_exited"]:
        raise RuntimeError(f"no task of job {job['id']} has both a placement and an exit in the log")
    return legs


def docker_run_rm_ms(engine: DockerEngine) -> float:
    """One raw `docker run --rm` with the limits hostd gives a task."""
    docker = shutil.which("docker") or "docker"
    started = time.perf_counter()
    subprocess.run(
        [
            docker, "-H", engine.url, "run", "--rm", "--init",
            "--network", "none",
            "--cpus", str(TASK_CPUS),
            "--memory", "32m", "--memory-swap", "32m",
            "--pids-limit", "512",
            "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges",
            DEFAULT_TAG, *COMMAND,
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return (time.perf_counter() - started) * 1000


async def raw_runs(engines: list[DockerEngine], runs: int) -> tuple[float, list[float]]:
    """`runs` raw runs, PER_HOST at once on each engine: seconds for all, and each run's ms."""
    todo = iter(range(runs))
    times: list[float] = []
    workers = [e for e, _ in zip(cycle(engines), range(PER_HOST * len(engines)), strict=False)]
    # A pool of its own, one thread per worker: asyncio's default pool (cores + 4 threads)
    # would let only 6 raw runs be under way at once while the job runs 16.
    threads = ThreadPoolExecutor(max_workers=len(workers), thread_name_prefix="docker-run")
    loop = asyncio.get_running_loop()

    async def worker(engine: DockerEngine) -> None:
        for _ in todo:
            times.append(await loop.run_in_executor(threads, docker_run_rm_ms, engine))

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(e) for e in workers))
    finally:
        threads.shutdown(wait=False, cancel_futures=True)
    return time.perf_counter() - started, times


async def measure(tasks: int) -> None:
    with bench_servers() as servers:
        async with (
            private_pool(servers, BENCH, hosts=HOSTS) as bench,
            aiohttp.ClientSession() as http,
        ):
            say(f"waiting for {HOSTS} hosts to register")
            await wait_active_host(http, bench.api, bench.headers, count=HOSTS)
            # Warm both sides: the engines' first container, the pool's first job.
            await raw_runs(bench.engines, HOSTS)
            await run_job(bench, http, HOSTS)
            say(f"a job of {tasks} tasks")
            seconds, job = await run_job(bench, http, tasks)
            tasks_run = await every_task(bench, http, job)
            legs = await legs_ms(bench.pool.store, job, tasks_run)
            hosts_used = len({t["host_id"] for t in tasks_run})
            say(f"job done in {seconds:.1f} s on {hosts_used} host(s); now {tasks} raw docker run --rm")
            raw_seconds, raw = await raw_runs(bench.engines, tasks)
    emit(BENCH, "tasks_per_s", tasks / seconds, "tasks/s", baseline=tasks / raw_seconds, tasks=tasks)
    spans = legs["placed_to_exited"]
    emit(
        BENCH,
        "overhead_p50",
        percentile(spans, 50),
        "ms",
        baseline=percentile(raw, 50),
        tasks=tasks,
        span="placed_to_exited",
        p99=round(percentile(spans, 99), 1),
        baseline_p99=round(percentile(raw, 99), 1),
        # Where the time goes: each leg's median (requested_to_placed is the wait for room).
        **{
            f"{leg}_p50": round(percentile(v, 50), 1)
            for leg, v in legs.items()
            if v and leg != "placed_to_exited"
        },
    )
    say("target: overhead_p50 ratio <= 1.5")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="ops/bench jobs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=500, help="tasks in the job (default 500)")
    parser.add_argument("--quick", action="store_true", help="a job of 10 tasks, for a smoke test")
    args = parser.parse_args()
    if args.tasks < 1:
        parser.error("--tasks must be at least 1")
    asyncio.run(measure(10 if args.quick else args.tasks))


if __name__ == "__main__":
    main()
