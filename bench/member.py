"""`ops/bench member`: does the pool stay out of its member's way?

A real pool (NATS with nkeys, Postgres, registry, allocator) and one real hostd
on a private Docker engine, donating every core of this machine under the
default owner policy (`[policy]` in services/hostd/config.py, with
`resume_after_idle_s` from `--resume-after`). A pool allocation burns every
donated CPU. The "owner" is a set of plain processes outside any container,
one per core, each running a fixed CPU-bound loop.

    owner_slowdown   the owner's time with the pool burning, over its time with the pool
                     idle; baseline: the same with the burner started as a plain
                     `docker run --cpus N` (normal weight, no policy) on the same engine
    react_p50/p99    ms from the owner's load starting to the pool's CPU quota lowered,
                     read from the burner's cgroup
    resume_s         s from the owner going idle to the full quota back in the cgroup
                     (the hysteresis, `resume_after_idle_s`, plus at most 2 s)
    flaps            changes of the pool's quota while the owner's load alternates busy
                     and idle every `--flap-period` s for `--flap-for` s, then goes idle
                     (target: one throttle, one resume)

The quota is read where the kernel enforces it: the cgroup of the burner's
first process (cgroup v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`, or v2
`cpu.max`), every `POLL_S`.
"""

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import BENCH_CHANGE_RATE, Stopwatch, bench_servers, emit, percentile, say, wait_active_host
from potluck.localpool import LocalPool
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG, build_test_image

BENCH = "member"
POLL_S = 0.02
CORES = os.cpu_count() or 2
BURN = "i=0; while [ $i -lt {n} ]; do (while :; do :; done) & i=$((i+1)); done; wait"


# --- the owner ---------------------------------------------------------------------------


def _spin(iterations: int) -> None:
    x = 0
    for i in range(iterations):
        x += i * i % 7


def owner_benchmark(iterations: int) -> float:
    """Seconds for one process per core to each run `iterations` of a CPU-bound loop."""
    procs = [multiprocessing.Process(target=_spin, args=(iterations,)) for _ in range(CORES)]
    with Stopwatch() as sw:
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    return sw.seconds


def calibrate(seconds: float) -> int:
    """Iterations that take about `seconds` in one process on this machine, idle."""
    n = 200_000
    while True:
        with Stopwatch() as sw:
            _spin(n)
        if sw.seconds > 0.2:
            return max(1, int(n * seconds / sw.seconds))
        n *= 4


class OwnerLoad:
    """One busy process per core outside any container, until `stop` (by PID)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(CORES)]

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        self.procs = []


@contextlib.contextmanager
def owner_load() -> Iterator[OwnerLoad]:
    load = OwnerLoad()
    load.start()
    try:
        yield load
    finally:
        load.stop()


# --- the pool's quota, from the cgroup -------------------------------------------------------


def cpu_quota_file(pid: int) -> tuple[Path, str]:
    """The file holding the CPU quota of `pid`'s cgroup, and its kind ("v1" or "v2")."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "":
            return Path("/sys/fs/cgroup") / rel / "cpu.max", "v2"
        if "cpu" in controllers.split(","):
            for mount in (controllers, "cpu", "cpu,cpuacct"):
                candidate = Path("/sys/fs/cgroup") / mount / rel / "cpu.cfs_quota_us"
                if candidate.exists():
                    return candidate, "v1"
    raise RuntimeError(f"no cpu cgroup found for pid {pid}")


def read_quota(where: tuple[Path, str]) -> float:
    """The quota in CPUs (inf: none)."""
    path, kind = where
    if kind == "v2":
        quota, period = path.read_text().split()
        return float("inf") if quota == "max" else int(quota) / int(period)
    quota_us = int(path.read_text())
    period_us = int((path.parent / "cpu.cfs_period_us").read_text())
    return float("inf") if quota_us < 0 else quota_us / period_us


async def wait_quota(where: tuple[Path, str], test: Any, timeout: float) -> float:
    """Poll the quota until `test(quota)`; the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if test(read_quota(where)):
            return time.monotonic()
        await asyncio.sleep(POLL_S)
    raise RuntimeError(f"the pool's quota stayed at {read_quota(where):.3f} CPUs for {timeout:.0f} s")


def allocation_pid(docker_url: str, alloc_id: str) -> int:
    """The first process of the container hostd runs for `alloc_id` (found by its label)."""
    docker = shutil.which("docker") or "docker"
    found = subprocess.run(
        [docker, "-H", docker_url, "ps", "-q", "--filter", f"label=potluck.allocation={alloc_id}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    if len(found) != 1:
        raise RuntimeError(f"expected one container for {alloc_id}, found {found}")
    out = subprocess.run(
        [docker, "-H", docker_url, "inspect", "-f", "{{.State.Pid}}", found[0]],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.strip())


# --- the run ---------------------------------------------------------------------------------


async def create_burner(http: aiohttp.ClientSession, api: str, headers: dict[str, str]) -> dict[str, Any]:
    body = {
        "cpus": CORES,
        "memory": "128M",
        "disk": "64M",
        "image": DEFAULT_TAG,
        "command": ["sh", "-c", BURN.format(n=CORES)],
    }
    async with http.post(f"{api}/v1/allocations", json=body, headers=headers) as response:
        created = await response.json()
        if response.status != 201:
            raise RuntimeError(f"POST answered {response.status}: {created}")
    async with http.get(
        f"{api}/v1/allocations/{created['id']}?wait=running&timeout=60", headers=headers
    ) as response:
        state: dict[str, Any] = await response.json()
    if state.get("state") != "running":
        raise RuntimeError(f"the burner is {state.get('state')}, not running")
    return state


def docker_run_burner(docker_url: str, name: str) -> None:
    docker = shutil.which("docker") or "docker"
    run = [docker, "-H", docker_url, "run", "-d", "--name", name, "--network", "none"]
    subprocess.run(
        [*run, "--cpus", str(CORES), DEFAULT_TAG, "sh", "-c", BURN.format(n=CORES)],
        check=True,
        capture_output=True,
    )


def docker_rm(docker_url: str, name: str) -> None:
    docker = shutil.which("docker") or "docker"
    subprocess.run([docker, "-H", docker_url, "rm", "-f", name], check=False, capture_output=True)


async def count_flaps(
    where: tuple[Path, str], full: float, period: float, duration: float, settle: float
) -> tuple[int, int]:
    """Alternate the owner busy/idle every `period` s for `duration` s, then idle for `settle` s;
    count the quota's drops below `full` (throttles) and its returns to `full` (resumes)."""
    throttles = resumes = 0
    lowered = read_quota(where) < full
    load = OwnerLoad()
    started = time.monotonic()
    busy = False
    next_switch = started
    try:
        while time.monotonic() - started < duration + settle:
            now = time.monotonic()
            if now - started < duration and now >= next_switch:
                busy = not busy
                load.start() if busy else load.stop()
                next_switch += period
            elif now - started >= duration and busy:
                load.stop()
                busy = False
            quota = read_quota(where)
            if quota < full and not lowered:
                throttles += 1
                lowered = True
            elif quota >= full and lowered:
                resumes += 1
                lowered = False
            await asyncio.sleep(POLL_S)
    finally:
        load.stop()
    return throttles, resumes


async def measure(args: argparse.Namespace) -> None:
    iterations = calibrate(args.owner_seconds)
    say(f"owner benchmark: {CORES} processes x {iterations} iterations")
    with bench_servers() as servers:
        engine = DockerEngine(servers.workdir / "docker")
        engine.start()
        pool = await LocalPool.create(
            servers.workdir / "pool",
            await servers.fresh_database("member"),
            liveness=(1.0, 5, 60.0),
            change_rate=BENCH_CHANGE_RATE,
        )
        try:
            build_test_image(engine.url)
            pool.start_registry()
            pool.start_allocator()
            host = await pool.enroll("member")
            pool.write_config(
                host,
                engine.url,
                donate={"cpus": CORES, "memory": "1G", "disk": "4G"},
                policy={"resume_after_idle_s": args.resume_after},
            )
            pool.start_hostd(host)
            await pool.wait_api()
            token = await pool.add_user("bench", cpus=1000.0, memory_bytes=1 << 40)
            headers = {"Authorization": f"Bearer {token}"}
            async with aiohttp.ClientSession() as http:
                await wait_active_host(http, pool.api, headers)
                await asyncio.sleep(args.resume_after + 2)  # the owner's idle time starts counting

                idle = [owner_benchmark(iterations) for _ in range(args.reps)]
                say(f"owner alone: {min(idle):.2f} s")

                burner = await create_burner(http, pool.api, headers)
                where = cpu_quota_file(allocation_pid(engine.url, burner["id"]))
                # The donated share, which the burner asked for whole: the quota it has now may be
                # lowered already (the owner benchmark just ran).
                full = float(CORES) - 0.001
                say(f"the pool's quota now: {read_quota(where):.2f} CPUs of {CORES} ({where[0]})")
                pooled: list[float] = []
                reacts: list[float] = []
                resumes: list[float] = []
                for i in range(args.reps):
                    await wait_quota(where, lambda q: q >= full, args.resume_after + 30)
                    pooled.append(owner_benchmark(iterations))
                    idle_since = time.monotonic()
                    back = await wait_quota(where, lambda q: q >= full, args.resume_after + 30)
                    say(f"owner with the pool burning, run {i}: {pooled[-1]:.2f} s")
                    resumes.append(back - idle_since)
                for i in range(args.rounds):
                    await wait_quota(where, lambda q: q >= full, args.resume_after + 30)
                    with owner_load():
                        began = time.monotonic()
                        lowered = await wait_quota(where, lambda q: q < full, 30)
                        reacts.append((lowered - began) * 1000)
                    idle_since = time.monotonic()
                    back = await wait_quota(where, lambda q: q >= full, args.resume_after + 30)
                    resumes.append(back - idle_since)
                    say(
                        f"round {i}: throttled after {reacts[-1]:.0f} ms, back {resumes[-1]:.1f} s after idle"
                    )

                await wait_quota(where, lambda q: q >= full, args.resume_after + 30)
                throttles, restored = await count_flaps(
                    where, full, args.flap_period, args.flap_for, args.resume_after + 5
                )
                say(f"flaps: {throttles} throttles, {restored} resumes")

                async with http.delete(f"{pool.api}/v1/allocations/{burner['id']}", headers=headers):
                    pass
                await asyncio.sleep(2)
                docker_run_burner(engine.url, "plain-burner")
                try:
                    await asyncio.sleep(1)
                    plain = [owner_benchmark(iterations) for _ in range(args.reps)]
                finally:
                    docker_rm(engine.url, "plain-burner")
                say(f"owner with a plain docker run --cpus {CORES} burning: {min(plain):.2f} s")
        finally:
            await pool.close()
            engine.stop()

    alone = statistics.median(idle)
    emit(
        BENCH,
        "owner_slowdown",
        statistics.median(pooled) / alone,
        "x",
        baseline=statistics.median(plain) / alone,
        owner_alone_s=round(alone, 3),
        cores=CORES,
        donated_cpus=CORES,
    )
    for p in (50, 99):
        emit(BENCH, f"react_p{p}", percentile(reacts, p), "ms", rounds=len(reacts))
    emit(
        BENCH,
        "resume_s",
        statistics.median(resumes),
        "s",
        max_s=round(max(resumes), 3),
        resume_after_idle_s=args.resume_after,
        rounds=len(resumes),
    )
    emit(
        BENCH,
        "flaps",
        throttles + restored,
        "transitions",
        throttles=throttles,
        resumes=restored,
        period_s=args.flap_period,
        duration_s=args.flap_for,
    )
    say(
        "targets: owner_slowdown <= 1.10; react_p50 <= 2000 ms; "
        f"resume_s <= {args.resume_after + 2:.0f} s (hysteresis + 2); flaps = 2 (one throttle, one resume)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="ops/bench member", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="owner benchmark runs per condition")
    parser.add_argument("--rounds", type=int, default=5, help="owner load rounds for react/resume")
    parser.add_argument("--owner-seconds", type=float, default=5.0, help="owner benchmark length, idle")
    parser.add_argument("--resume-after", type=float, default=30.0, help="the policy's resume_after_idle_s")
    parser.add_argument("--flap-period", type=float, default=5.0)
    parser.add_argument("--flap-for", type=float, default=60.0)
    parser.add_argument("--quick", action="store_true", help="a smoke run in about a minute")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.rounds, args.owner_seconds = 1, 1, 0.5
        args.resume_after, args.flap_period, args.flap_for = 2.0, 2.0, 6.0
    asyncio.run(measure(args))


if __name__ == "__main__":
    main()
