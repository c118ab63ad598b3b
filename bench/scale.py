"""How many hosts one pool holds: hollow hosts in steps, on real servers.

`ops/bench scale [--quick] [--steps N,N,...] [--hold S]` starts a durable Postgres, a
nats-server (nkeys, monitoring on loopback), the registry and the allocator (with its relay)
as real processes, then `potluck ops hollow --hosts N` in one child process for each step,
the same hosts carried from step to step (one workdir). At each step, once every host is
active, it holds for `--hold` seconds while a steady stream of allocations is requested and
released through the API, and prints one JSON line per metric:

- hosts_held                 the largest step with no host turned suspect during its hold
- registry_cpu_per_1k_hosts  the registry's CPU (% of one core) per 1,000 hosts, at that step
- nats_msgs_per_s            messages into nats-server per second, at that step
- placement_p99_ms           POST /v1/allocations to its 201 (placed), p99, at that step

and, per step (`step` field), the CPU of the registry, allocator, nats-server and of the
hollow process itself, to see what bounds hosts_held. A step whose hosts do not all join
within `--join-timeout`, or with a suspect, ends the run: larger steps would not hold either.
The hosts beat at the default interval (5 s) and turn suspect after 3 missed, as deployed.
"""

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import BENCH_CHANGE_RATE, BenchServers, bench_servers, emit, percentile, say
from bench.pool import UNBOUNDED_QUOTA
from potluck.localpool import LocalPool
from potluck.localstack import NatsServer, free_port
from potluck.localstack.process import ChildProcess

BENCH = "scale"
#: The deployed defaults: a beat every 5 s, suspect after 3 missed, stranded after an hour.
LIVENESS = (5.0, 3, 3600.0)
FULL_STEPS = (500, 1000, 2000, 5000)
QUICK_STEPS = (20, 50)
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of process `pid` so far (0 once it is gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


async def varz(http: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    async with http.get(f"http://127.0.0.1:{port}/varz") as response:
        data: dict[str, Any] = await response.json(content_type=None)
        return data


async def hollow_active(http: aiohttp.ClientSession, api: str, headers: dict[str, str]) -> int:
    async with http.get(f"{api}/v1/pool", headers=headers) as response:
        hosts = (await response.json())["hosts"]
    return sum(h["status"] == "active" for h in hosts)


async def suspects_after(pool: LocalPool, position: int) -> int:
    count = await pool.store.pool.fetchval(
        "SELECT count(*) FROM events WHERE position > $1 AND type = 'HostSuspected'", position
    )
    return int(count or 0)


async def placement_stream(
    http: aiohttp.ClientSession, api: str, headers: dict[str, str], stop: asyncio.Event, gap_s: float
) -> tuple[list[float], int]:
    """Request, then release, one small allocation after another until `stop`; the request
    latencies (ms) and how many failed. Constrained to hollow=true: hollow hosts take no other."""
    body = {
        "cpus": 0.1,
        "memory": "64M",
        "disk": "64M",
        "image": "busybox:latest",
        "command": ["sleep", "60"],
        "constraints": {"hollow": "true"},
    }
    latencies: list[float] = []
    failed = 0
    while not stop.is_set():
        started = time.perf_counter()
        try:
            async with http.post(f"{api}/v1/allocations", json=body, headers=headers) as response:
                created = await response.json()
                ok = response.status == 201
            if ok:
                latencies.append((time.perf_counter() - started) * 1000)
                async with http.delete(f"{api}/v1/allocations/{created['id']}", headers=headers):
                    pass
            else:
                failed += 1
        except (aiohttp.ClientError, TimeoutError):
            failed += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(gap_s):
                await stop.wait()
    return latencies, failed


def start_hollow(pool: LocalPool, count: int, workdir: Path) -> ChildProcess:
    proc = ChildProcess(
        [
            sys.executable,
            "-m",
            "potluck",
            "--log-level",
            "WARNING",
            "ops",
            "hollow",
            "--hosts",
            str(count),
            "--workdir",
            str(workdir),
            "--database-url",
            pool.database_url,
            "--nats-url",
            pool.nats.url,
            "--heartbeat",
            str(LIVENESS[0]),
            "--join-timeout",
            "600",
            "--nats-auth-file",
            str(pool.nats.auth_file),
            "--nats-pid-file",
            str(pool.nats.pid_file),
            "--service-seed-file",
            str(pool.services_seed_file),
        ],
        log_path=pool.workdir / f"hollow-{count}.log",
    )
    proc.start()
    return proc


async def run(servers: BenchServers, args: argparse.Namespace) -> None:
    pool = await LocalPool.create(
        servers.workdir / "pool",
        await servers.fresh_database("scale"),
        liveness=LIVENESS,
        log_level="WARNING",
        change_rate=BENCH_CHANGE_RATE,
    )
    # Monitoring on loopback, for nats_msgs_per_s: the pool's config file, then a restart
    # before any service connects.
    monitor = free_port()
    nats = pool.nats
    assert isinstance(nats, NatsServer), "scale runs on one NATS node"
    assert nats.config is not None
    with nats.config.open("a") as config:
        config.write(f"http: 127.0.0.1:{monitor}\n")
    nats.restart()
    hollow: ChildProcess | None = None
    held = 0
    at_held: dict[str, float] = {}
    try:
        pool.start_registry()
        pool.start_allocator()
        await pool.wait_api()
        token = await pool.add_user("bench", **UNBOUNDED_QUOTA)
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            for step in args.steps:
                if hollow is not None:
                    hollow.stop(timeout=60)
                say(f"step {step}: starting {step} hollow hosts")
                hollow = start_hollow(pool, step, servers.workdir / "hollow")
                joined_at = time.monotonic()
                while (active := await hollow_active(http, pool.api, headers)) < step:
                    if not hollow.running() or time.monotonic() - joined_at > args.join_timeout:
                        say(f"step {step}: only {active} active; {hollow.log_tail(5)}")
                        return
                    await asyncio.sleep(2.0)
                join_s = time.monotonic() - joined_at
                say(f"step {step}: all active after {join_s:.0f}s; holding {args.hold:.0f}s")
                # Hosts of the step before were away while the process restarted: a settle
                # period of two suspect windows lets their recoveries land before counting.
                await asyncio.sleep(LIVENESS[0] * LIVENESS[1] * 2)
                position = await pool.store.head_position()
                pids = {
                    "registry": pool.processes["registry"].pid,
                    "allocator": pool.processes["allocator"].pid,
                    "nats": nats.pid,
                    "hollow": hollow.pid,
                }
                cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
                msgs0 = (await varz(http, monitor))["in_msgs"]
                t0 = time.monotonic()
                stop = asyncio.Event()
                stream = asyncio.create_task(placement_stream(http, pool.api, headers, stop, args.gap))
                await asyncio.sleep(args.hold)
                stop.set()
                latencies, failed = await stream
                elapsed = time.monotonic() - t0
                cpu = {name: 100 * (cpu_seconds(pid) - cpu0[name]) / elapsed for name, pid in pids.items()}
                msgs = ((await varz(http, monitor))["in_msgs"] - msgs0) / elapsed
                suspects = await suspects_after(pool, position)
                p99 = percentile(latencies, 99) if latencies else float("nan")
                detail = {
                    "step": step,
                    "join_s": round(join_s, 1),
                    "hold_s": round(elapsed, 1),
                    "suspects": suspects,
                    "cpu_pct": {k: round(v, 1) for k, v in cpu.items()},
                    "nats_msgs_per_s": round(msgs, 1),
                    "placements": len(latencies),
                    "placements_failed": failed,
                    "placement_p99_ms": round(p99, 1),
                    "load_avg_1m": round(os.getloadavg()[0], 2),
                }
                say(f"step {step}: {json.dumps(detail)}")
                if suspects:
                    break
                held = step
                at_held = {
                    "registry_cpu_per_1k_hosts": cpu["registry"] * 1000 / step,
                    "nats_msgs_per_s": msgs,
                    "placement_p99_ms": p99,
                }
    finally:
        if hollow is not None:
            hollow.stop(timeout=60)
        await pool.close()
        extra = {"hold_s": args.hold, "steps": list(args.steps), "load_avg_1m": round(os.getloadavg()[0], 2)}
        emit(BENCH, "hosts_held", held, "hosts", **extra)
        if at_held:
            emit(
                BENCH, "registry_cpu_per_1k_hosts", at_held["registry_cpu_per_1k_hosts"], "%core", hosts=held
            )
            emit(BENCH, "nats_msgs_per_s", at_held["nats_msgs_per_s"], "msgs/s", hosts=held)
            emit(BENCH, "placement_p99_ms", at_held["placement_p99_ms"], "ms", hosts=held)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ops/bench scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Small steps and a short hold: a smoke test.")
    parser.add_argument("--steps", help="Comma-separated host counts (default 500,1000,2000,5000).")
    parser.add_argument("--hold", type=float, default=None, help="Seconds each step must hold (default 600).")
    parser.add_argument(
        "--join-timeout", type=float, default=900.0, help="Seconds for a step's hosts to join."
    )
    parser.add_argument("--gap", type=float, default=0.2, help="Seconds between placements of the stream.")
    parser.add_argument("--keep", action="store_true", help="Keep the servers' directory (logs).")
    parser.add_argument(
        "--restart",
        action="store_true",
        help="Measure restart_s instead (a 1,000,000-event log, bench/scale_restart.py); the options "
        "after it are that benchmark's (`ops/bench scale_restart --help`).",
    )
    args = parser.parse_args(argv)
    default_steps = QUICK_STEPS if args.quick else FULL_STEPS
    args.steps = [int(s) for s in args.steps.split(",")] if args.steps else list(default_steps)
    if args.hold is None:
        args.hold = 20.0 if args.quick else 600.0
    return args


def main(argv: Sequence[str] | None = None) -> None:
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["--restart"]:
        from bench import scale_restart

        scale_restart.main(given[1:])
        return
    args = parse_args(given)
    started = time.monotonic()
    with bench_servers(keep=args.keep) as servers:
        asyncio.run(run(servers, args))
    say(f"done in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
