"""`ops/bench log_flood`: what a container that floods its stdout costs outside its cgroup.

A container's output is carried by its containerd shim (a pipe it reads) to dockerd, whose
log driver writes it to the member's disk (json-file: every line one JSON object). Neither
process is in the container's cgroup, so the container's CPU quota does not bound them.

One private Docker engine (libs/localstack), the busybox test image, one container at a time
made with hostd's own create arguments (container_config.create_kwargs: 0.5 CPU, the pool's
log rotation), with the log driver varied: `json-file` (hostd's), `local`, `none` (nothing
kept: the baseline). Workloads, each for `--seconds` (20):

    short   `yes`: 2-byte lines, as fast as the container can write
    long    `yes` of a 4000-byte line
    nonl    `cat /dev/zero | tr '\\0' x`: no newline at all (the engine cuts 16 KiB pieces)

Per case, CPU time over the window as % of one core: the container (its cgroup's usage), its
shim (the containerd-shim whose command line names the container's id), dockerd, and
containerd; `outside_pct` = shim + dockerd + containerd, `ratio` = outside / container. The
machine's load average before the run is printed too (other work on the machine shares it).
`log_mb` is what the driver kept on disk, so at most its rotation's 30 MB.

`--cpus` sets the container's cap (0.01, the least Docker keeps, shows that a lower quota does
not slow a container blocked on its log pipe); `--bound` runs hostd's own log bound
(services/hostd/log_cost.py's LogBound, over this one container) during the window, and
`paused_pct` says how much of it the container spent paused. `--quick`: 3 s a case.
"""

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path

import docker

from bench.harness import emit, say
from potluck.hostd.container_config import ContainerSpec, create_kwargs
from potluck.hostd.docker_driver import DockerDriver, create_container
from potluck.hostd.log_cost import LogBound, cpu_s
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG, build_test_image

BENCH = "log_flood"
WORKLOADS = {
    "short": ["yes"],
    "long": ["sh", "-c", "l=$(head -c 4000 /dev/zero | tr '\\0' x); exec yes \"$l\""],
    "nonl": ["sh", "-c", "cat /dev/zero | tr '\\0' x"],
}
DRIVERS = {
    "json-file": {"type": "json-file", "config": {"max-size": "10m", "max-file": "3"}},
    "local": {"type": "local", "config": {"max-size": "10m", "max-file": "3"}},
    "none": {"type": "none", "config": {}},
}


def cpu_time_s(pid: int) -> float:
    """CPU time of one process, its threads included (hostd's own reading, log_cost.cpu_s)."""
    spent = cpu_s(pid)
    if spent is None:
        raise RuntimeError(f"process {pid} ended during the measurement")
    return spent


def pids_named(word: str) -> list[int]:
    """Processes whose command line contains `word`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if word.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def shim_of(container_id: str) -> int:
    shims = [
        p for p in pids_named(container_id) if b"containerd-shim" in Path(f"/proc/{p}/cmdline").read_bytes()
    ]
    if len(shims) != 1:
        raise RuntimeError(f"expected one shim naming {container_id[:12]}, found {shims}")
    return shims[0]


def containerd_of(engine: DockerEngine) -> int:
    """The engine's own containerd (its socket is under the engine's exec-root)."""
    found = [
        p
        for p in pids_named(str(engine.exec_root))
        if Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0].endswith(b"containerd")
    ]
    if len(found) != 1:
        raise RuntimeError(f"expected one containerd under {engine.exec_root}, found {found}")
    return found[0]


def container_usage_ns(client: docker.APIClient, container_id: str) -> int:
    stats = client.stats(container_id, stream=False, one_shot=True)
    return int(stats["cpu_stats"]["cpu_usage"]["total_usage"])


class OneContainer:
    """hostd's log bound (services/hostd/log_cost.py) as hostd runs it, over one container made
    here instead of a pool's: what LogBound asks of ContainerManager, and nothing else."""

    def __init__(self, engine: DockerEngine, container_id: str, cap: float) -> None:
        self.driver = DockerDriver(engine.url, helper=None)
        self.containers = {"flood": container_id}
        self.log_held: set[str] = set()
        self.cap = cap
        self.paused_since: float | None = None
        self.paused_s = 0.0

    def cpu_cap(self, alloc_id: str) -> float | None:
        return self.cap

    def in_session(self, container_id: str) -> bool:
        return False

    async def hold_for_logs(self, alloc_id: str, container_id: str, hold: bool) -> bool:
        if hold == (alloc_id in self.log_held):
            return False
        await asyncio.to_thread(self.driver.pause if hold else self.driver.unpause, container_id)
        if hold:
            self.log_held.add(alloc_id)
            self.paused_since = time.monotonic()
        else:
            self.log_held.discard(alloc_id)
            self.paused_s += time.monotonic() - (self.paused_since or time.monotonic())
        return hold


def bounded(engine: DockerEngine, container_id: str, cap: float, seconds: float) -> float:
    """Run hostd's LogBound over the container for `seconds`; the fraction of them it was paused."""
    held = OneContainer(engine, container_id, cap)

    async def run() -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await LogBound(held, engine.url).run()
        if held.log_held:
            await held.hold_for_logs("flood", container_id, False)

    asyncio.run(run())
    held.driver.close()
    return held.paused_s / seconds


def measure(
    engine: DockerEngine,
    client: docker.APIClient,
    workload: str,
    driver: str,
    seconds: float,
    *,
    cpus: float = 0.5,
    bound: bool = False,
) -> dict[str, float]:
    spec = ContainerSpec(
        allocation_id=f"flood-{workload}-{driver.replace('-', '')}",
        host_id="h-bench",
        image=DEFAULT_TAG,
        cpus=cpus,
        memory_bytes=256 << 20,
        disk_bytes=1 << 30,
        pids_limit=64,
        command=WORKLOADS[workload],
    )
    kwargs = create_kwargs(spec, disk_quota=False)
    kwargs["log_config"] = DRIVERS[driver]
    high = docker.DockerClient(base_url=engine.url)
    container = create_container(high, kwargs)
    container_id = str(container.id)
    try:
        container.start()
        time.sleep(2)  # past the start: the steady flood only
        dockerd, containerd, shim = engine.pid, containerd_of(engine), shim_of(container_id)
        if dockerd is None:
            raise RuntimeError("the engine's dockerd is not running")
        pids = {"dockerd": dockerd, "containerd": containerd, "shim": shim}
        before = {name: cpu_time_s(pid) for name, pid in pids.items()}
        usage_before, start = container_usage_ns(client, container_id), time.monotonic()
        paused = bounded(engine, container_id, cpus, seconds) if bound else 0.0
        time.sleep(max(0.0, seconds - (time.monotonic() - start)))
        after = {name: cpu_time_s(pid) for name, pid in pids.items()}
        usage_after, wall = container_usage_ns(client, container_id), time.monotonic() - start
        container.reload()  # LogPath is set by the start
        log_dir = engine.data_root / "containers" / str(container_id)
        log_bytes = sum(p.stat().st_size for p in log_dir.rglob("*") if p.is_file() and "log" in p.name)
    finally:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)
        high.close()
    pct = {name: 100 * (after[name] - before[name]) / wall for name in pids}
    pct["container"] = 100 * (usage_after - usage_before) / 1e9 / wall
    pct["outside"] = pct["shim"] + pct["dockerd"] + pct["containerd"]
    pct["log_mb"] = log_bytes / (1 << 20)
    pct["paused_pct"] = 100 * paused
    return pct


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="3 s a case: a smoke run, figures mean nothing")
    parser.add_argument("--drivers", default=",".join(DRIVERS))
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--cpus", type=float, default=0.5, help="the container's CPU cap")
    parser.add_argument("--bound", action="store_true", help="with hostd's log bound (log_cost.py) running")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 3.0
    say("load average before:", Path("/proc/loadavg").read_text().strip(), "cores:", os.cpu_count())
    with tempfile.TemporaryDirectory(prefix="pl-logflood-") as workdir:
        engine = DockerEngine(Path(workdir) / "engine")
        engine.start()
        try:
            build_test_image(engine.url)
            client = docker.APIClient(base_url=engine.url)
            for workload in args.workloads.split(","):
                for driver in args.drivers.split(","):
                    got = measure(
                        engine, client, workload, driver, args.seconds, cpus=args.cpus, bound=args.bound
                    )
                    say(workload, driver, {k: round(v, 1) for k, v in got.items()})
                    emit(
                        BENCH,
                        f"{workload}_{driver}{'_bound' if args.bound else ''}_outside_pct",
                        got["outside"],
                        "% of a core",
                        baseline=got["container"],
                        container_pct=round(got["container"], 1),
                        shim_pct=round(got["shim"], 1),
                        dockerd_pct=round(got["dockerd"], 1),
                        containerd_pct=round(got["containerd"], 1),
                        log_mb=round(got["log_mb"], 1),
                        paused_pct=round(got["paused_pct"], 1),
                        cpus=args.cpus,
                        seconds=args.seconds,
                        loadavg=Path("/proc/loadavg").read_text().split()[0],
                    )
            client.close()
        finally:
            engine.stop()


if __name__ == "__main__":
    main()
