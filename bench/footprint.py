"""`ops/bench footprint`: what hostd costs the member's machine that carries it.

hostd runs as on a member's laptop: linked to the pool's SSH gateway, on a
private Docker engine with the busybox test image, telemetry off (no OTEL_*, no
traces file: a member's hostd sends its spans nowhere unless told). The rest of
the pool (Postgres, NATS, registry, allocator, gateway) runs beside it as
real processes, set up as bench/pool.py does but with hostd's default timing
(not the tests' faster heartbeats and disk checks). Two windows of `--seconds` each
(60 s; `--quick`: 10 s) are measured:

1. idle, no allocation;
2. idle with one allocation running and one SSH session open through the
   gateway (an `ssh ... -- cat` that waits on its input), the figures below.

`--no-gateway`: hostd's config has no `[[gateways]]` (a member who reaches no
sessions), so window 2 has the allocation and no session.

Read from /proc for hostd's process and any children it started, sampled
every second:

    hostd_rss_mb    resident memory (VmRSS), the most seen in window 2, MB (MiB)
    hostd_cpu_pct   CPU time (user + system) over window 2, % of one core

with, as extra fields, the same window's PSS and USS (/proc/PID/smaps_rollup:
USS is what hostd alone holds, what stopping it would give back), hostd's main
process alone, and window 1's figures. Targets (issue 20): hostd_rss_mb <= 50,
hostd_cpu_pct <= 0.5.
"""

import argparse
import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import BENCH_CHANGE_RATE, BenchServers, bench_servers, emit, say, wait_active_host
from bench.pool import UNBOUNDED_QUOTA
from potluck.localpool import EnrolledHost, LocalPool
from potluck.localstack import free_port, wait_for_port
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG, build_test_image

BENCH = "footprint"
TARGETS = "hostd_rss_mb <= 50, hostd_cpu_pct <= 0.5"
MB = 1 << 20
_TICKS = os.sysconf("SC_CLK_TCK")
_TELEMETRY = ("POTLUCK_TRACES_FILE", "POTLUCK_METRICS_FILE")


# --- reading /proc -------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """`pid` and every descendant alive now."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{current}/task/{task}/children") as f:
                    todo.extend(int(child) for child in f.read().split())
    return found


def cpu_ticks(pid: int) -> int:
    """User + system CPU time of `pid` so far, in clock ticks (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name (2nd field) may hold spaces; the fields after its ')' do not.
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


@dataclass(frozen=True)
class Memory:
    rss: int
    pss: int
    uss: int

    def __add__(self, other: "Memory") -> "Memory":
        return Memory(self.rss + other.rss, self.pss + other.pss, self.uss + other.uss)


def memory(pid: int) -> Memory:
    """RSS, PSS and USS of `pid` in bytes (zeros once it is gone)."""
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == "kB":
                    values[parts[0].rstrip(":")] = int(parts[1]) * 1024
    except OSError:
        return Memory(0, 0, 0)
    uss = values.get("Private_Clean", 0) + values.get("Private_Dirty", 0)
    return Memory(values.get("Rss", 0), values.get("Pss", 0), uss)


@dataclass(frozen=True)
class Window:
    seconds: float
    cpu_pct: float
    peak: Memory
    main_peak: Memory
    processes: int

    def fields(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}rss_mb": round(self.peak.rss / MB, 1),
            f"{prefix}pss_mb": round(self.peak.pss / MB, 1),
            f"{prefix}uss_mb": round(self.peak.uss / MB, 1),
            f"{prefix}main_rss_mb": round(self.main_peak.rss / MB, 1),
            f"{prefix}cpu_pct": round(self.cpu_pct, 3),
            f"{prefix}processes": self.processes,
        }


async def measure(pid: int, seconds: float) -> Window:
    """hostd's tree over `seconds`: CPU used by the processes alive at both ends, peak memory."""
    start_pids = process_tree(pid)
    start = {p: cpu_ticks(p) for p in start_pids}
    started = time.monotonic()
    peak = main_peak = Memory(0, 0, 0)
    while True:
        pids = process_tree(pid)
        total = Memory(0, 0, 0)
        for p in pids:
            total = total + memory(p)
        if total.rss > peak.rss:
            peak = total
        own = memory(pid)
        if own.rss > main_peak.rss:
            main_peak = own
        left = seconds - (time.monotonic() - started)
        if left <= 0:
            break
        await asyncio.sleep(min(1.0, left))
    elapsed = time.monotonic() - started
    end_pids = process_tree(pid)
    used = sum(cpu_ticks(p) - start.get(p, 0) for p in end_pids)
    if not any(p == pid for p in end_pids):
        raise RuntimeError("hostd exited while it was measured; see its log")
    return Window(elapsed, 100.0 * used / _TICKS / elapsed, peak, main_peak, len(end_pids))


# --- the pool ------------------------------------------------------------------------------------


@dataclass
class Laptop:
    pool: LocalPool
    host: EnrolledHost
    ssh_port: int
    key: Path
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def ssh(self, alloc_id: str, *command: str) -> list[str]:
        return [
            "ssh", "-F", "/dev/null", "-p", str(self.ssh_port), "-i", str(self.key),
            "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
            f"{alloc_id}@127.0.0.1", "--", *command,
        ]  # fmt: skip


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}


@contextlib.asynccontextmanager
async def laptop_pool(servers: BenchServers, *, linked: bool = True) -> AsyncIterator[Laptop]:
    """bench/pool.py's pool with the SSH gateway, and one hostd linked to it unless not `linked`."""
    for name in _TELEMETRY:
        os.environ.pop(name, None)
    if any(name.startswith("OTEL_") for name in os.environ):
        say("note: OTEL_* is set here and reaches hostd; the figures include its telemetry")
    engine = DockerEngine(servers.workdir / "docker")
    pool: LocalPool | None = None
    say("starting a private Docker engine")
    try:
        await asyncio.to_thread(engine.start)
        await asyncio.to_thread(build_test_image, engine.url)
        # hostd's own timing (a beat every 5 s, usage every 30 s, disk every 10 s), not the tests'
        # faster one: that is what a laptop runs, and what it pays for in CPU.
        pool = await LocalPool.create(
            servers.workdir / "pool", await servers.fresh_database(BENCH), change_rate=BENCH_CHANGE_RATE
        )
        ssh_port, tunnel_port = free_port(), free_port()
        client_key = pool.gateway_client_key()
        pool.start_registry()
        pool.start_allocator()
        pool.start_gateway(listen=f"127.0.0.1:{ssh_port}", tunnel_listen=f"127.0.0.1:{tunnel_port}")
        host = await pool.enroll("laptop")
        pool.write_config(
            host,
            engine.url,
            allowed_images=[DEFAULT_TAG],
            donate={"cpus": 1, "memory": "1G", "disk": "2G"},
            gateways=[{"address": f"127.0.0.1:{tunnel_port}", "client_key": client_key}] if linked else [],
            timing={},
        )
        pool.start_hostd(host)
        await pool.wait_api()
        await asyncio.to_thread(wait_for_port, ssh_port, what="the SSH gateway", timeout=60)
        token = await pool.add_user("bench", **UNBOUNDED_QUOTA)
        key = servers.workdir / "user"
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)]
        await asyncio.to_thread(subprocess.run, keygen, check=True)
        yield Laptop(pool, host, ssh_port, key, token)
    finally:
        if pool is not None:
            await pool.close()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(engine.stop)


async def allocate(laptop: Laptop, http: aiohttp.ClientSession) -> str:
    """One small allocation of the test image, running; its id."""
    body = {
        "cpus": 0.5, "memory": "64M", "disk": "64M", "image": DEFAULT_TAG, "command": ["sleep", "86400"],
        "ssh_keys": [Path(f"{laptop.key}.pub").read_text().strip()],
    }  # fmt: skip
    api = laptop.pool.api
    async with http.post(f"{api}/v1/allocations", json=body, headers=laptop.headers) as response:
        created = await response.json()
        if response.status != 201:
            raise RuntimeError(f"the allocation was refused ({response.status}): {created}")
    url = f"{api}/v1/allocations/{created['id']}?wait=running&timeout=60"
    async with http.get(url, headers=laptop.headers) as response:
        running = await response.json()
    if running.get("state") != "running":
        raise RuntimeError(f"the allocation is {running.get('state')}, not running:\n{laptop.pool.logs()}")
    return str(created["id"])


async def open_session(laptop: Laptop, alloc_id: str) -> asyncio.subprocess.Process:
    """An SSH session through the gateway that stays open (a `cat` waiting on its input)."""
    deadline = time.monotonic() + 60
    while True:  # until the gateway reaches the allocation
        probe = await asyncio.create_subprocess_exec(
            *laptop.ssh(alloc_id, "true"), env=_env(), stderr=asyncio.subprocess.PIPE
        )
        _, err = await probe.communicate()
        if probe.returncode == 0:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"ssh never reached {alloc_id}: {err.decode()[-300:]}")
        await asyncio.sleep(0.5)
    session = await asyncio.create_subprocess_exec(
        *laptop.ssh(alloc_id, "cat"),
        env=_env(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await echo(session, b"open\n")
    return session


async def echo(session: asyncio.subprocess.Process, line: bytes) -> None:
    """`line` through the session and back: proof that it is open end to end."""
    assert session.stdin is not None
    assert session.stdout is not None
    session.stdin.write(line)
    await session.stdin.drain()
    async with asyncio.timeout(30):
        back = await session.stdout.readline()
    if back != line:
        raise RuntimeError(f"the SSH session answered {back!r} to {line!r}")


def _report(window: Window, what: str) -> None:
    say(
        f"{what}: RSS {window.peak.rss / MB:.1f} MB (PSS {window.peak.pss / MB:.1f}, "
        f"USS {window.peak.uss / MB:.1f}; main process {window.main_peak.rss / MB:.1f}), "
        f"CPU {window.cpu_pct:.2f}% of one core over {window.seconds:.0f} s, {window.processes} process(es)"
    )


async def run(seconds: float, *, linked: bool = True) -> None:
    with bench_servers() as servers:
        async with laptop_pool(servers, linked=linked) as laptop, aiohttp.ClientSession() as http:
            await wait_active_host(http, laptop.pool.api, laptop.headers)
            assert laptop.host.process is not None
            assert laptop.host.process.pid is not None
            pid = laptop.host.process.pid
            # Start-up is not what a laptop carries all day: let it settle first.
            await asyncio.sleep(min(10.0, seconds / 2))
            say(f"window 1: hostd (pid {pid}) idle, no allocation, {seconds:.0f} s")
            empty = await measure(pid, seconds)
            _report(empty, "idle")
            alloc_id = await allocate(laptop, http)
            if not linked:
                await asyncio.sleep(min(10.0, seconds / 2))
                say(f"window 2: one allocation ({alloc_id}), no gateway, {seconds:.0f} s")
                busy = await measure(pid, seconds)
                _report(busy, "with an allocation")
            else:
                session = await open_session(laptop, alloc_id)
                try:
                    await asyncio.sleep(min(10.0, seconds / 2))
                    say(f"window 2: one allocation ({alloc_id}) and one SSH session open, {seconds:.0f} s")
                    busy = await measure(pid, seconds)
                    _report(busy, "with an allocation and a session")
                    await echo(session, b"still open\n")
                finally:
                    if session.returncode is None:
                        session.kill()
                    await session.wait()
    load = os.getloadavg()
    extra: dict[str, Any] = {
        **busy.fields("window_"),
        **empty.fields("idle_"),
        "seconds": round(seconds),
        "gateway": linked,
        "loadavg": [round(x, 2) for x in load],
    }
    emit(BENCH, "hostd_rss_mb", busy.peak.rss / MB, "MB", **extra)
    emit(BENCH, "hostd_cpu_pct", busy.cpu_pct, "%", **extra)
    say(f"targets: {TARGETS}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ops/bench footprint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each window (default 60)")
    parser.add_argument("--quick", action="store_true", help="10 s windows: a smoke test")
    parser.add_argument(
        "--no-gateway", action="store_true", help="hostd without [[gateways]]: window 2 has no SSH session"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.seconds <= 0:
        raise SystemExit("--seconds must be positive")
    asyncio.run(run(10.0 if args.quick else args.seconds, linked=not args.no_gateway))


if __name__ == "__main__":
    main()
