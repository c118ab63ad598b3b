"""`ops/bench allocation`: how long from POST /v1/allocations to a running container.

The whole pool runs as real processes (NATS with nkeys, Postgres, registry,
allocator, one hostd on a private Docker engine, with `warm_containers = 1`). The
baseline is a raw `docker run -d` of the same image with the same limits on the same
engine, measured in the same run, interleaved with Potluck's own so that all see the
same machine. Each round places three allocations of the same limits, in turning order:
one with an environment value (which no warm container may take: today's
create-and-start path, what a host with the default `warm_containers = 0` does), one
without (it takes the container hostd started ahead of it and froze, its launcher waiting
to run the command) and one without a command (interactive: it takes the one hostd
started ahead and froze, running hostd's keep-alive).

    post_to_running_p50, _p99                    ms, created on placement (the default)
    post_to_running_warm_p50, _p99               ms, a task's container started ahead unfrozen
    post_to_running_interactive_warm_p50, _p99   ms, an interactive one started ahead unfrozen
    engine_create, _start, _ahead, _take, _readback, _unfreeze   ms (p50), the engine's parts

The engine's parts are timed on the same engine with the driver's own calls, one step at
a time. Today's path: `create` (image check and create), `start` (start and inspect).
A warm container: `ahead` (made, started and frozen ahead, off the placement's path),
`take` (rename and `docker update` of the limits), `readback` (inspect and the limit
check, both paths), `unfreeze` (unpause, the launcher's go, inspect: instead of `start`).
"""

import argparse
import asyncio
import shutil
import subprocess
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from bench.harness import bench_servers, emit, percentile, say, wait_active_host
from bench.pool import private_pool
from potluck.hostd.container_config import ContainerSpec, create_kwargs, limit_mismatches
from potluck.hostd.docker_driver import DockerDriver
from potluck.hostd.launcher import GO_SIGNAL
from potluck.hostd.warm_engine import create_warm
from potluck.hostd.warm_pool import limits_update, warm_key
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG

BENCH = "allocation"


def docker_run_ms(engine: DockerEngine, name: str) -> float:
    docker = shutil.which("docker") or "docker"
    started = time.perf_counter()
    subprocess.run(
        [
            docker,
            "-H",
            engine.url,
            "run",
            "-d",
            "--name",
            name,
            "--init",
            "--network",
            "none",
            "--cpus",
            "0.5",
            "--memory",
            "64m",
            "--memory-swap",
            "64m",
            "--pids-limit",
            "512",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            DEFAULT_TAG,
            "sleep",
            "3600",
        ],
        check=True,
        capture_output=True,
    )
    return (time.perf_counter() - started) * 1000


async def potluck_ms(
    http: aiohttp.ClientSession, api: str, headers: dict[str, str], path: str
) -> tuple[float, str]:
    """`path`: "cold" (an env value: no warm container takes it), "warm" (the same command,
    its launcher started ahead and frozen), "interactive" (no command: started ahead and
    frozen)."""
    body: dict[str, Any] = {
        "cpus": 0.5,
        "memory": "64M",
        "disk": "64M",
        "image": DEFAULT_TAG,
        "command": ["sleep", "3600"],
    }
    if path == "cold":
        body["env"] = {"BENCH": "created-on-placement"}
    elif path == "interactive":
        del body["command"]
    started = time.perf_counter()
    async with http.post(f"{api}/v1/allocations", json=body, headers=headers) as response:
        created = await response.json()
        if response.status != 201:
            raise RuntimeError(f"POST answered {response.status}: {created}")
    async with http.get(
        f"{api}/v1/allocations/{created['id']}?wait=running&timeout=60", headers=headers
    ) as response:
        state = await response.json()
    elapsed = (time.perf_counter() - started) * 1000
    if state.get("state") != "running":
        raise RuntimeError(f"allocation {created['id']} is {state.get('state')}, not running")
    return elapsed, created["id"]


#: Each metric and the path it times.
METRICS = (
    ("post_to_running", "cold"),
    ("post_to_running_warm", "warm"),
    ("post_to_running_interactive_warm", "interactive"),
)
#: The orders of a round's three measurements, taken in turn.
ORDERS = (
    ("cold", "warm", "interactive", "raw"),
    ("warm", "interactive", "raw", "cold"),
    ("interactive", "raw", "cold", "warm"),
    ("raw", "cold", "warm", "interactive"),
)


def settle(driver: DockerDriver, host_id: str, gone: Sequence[str] = (), timeout: float = 30) -> None:
    """Until the allocations `gone` have no container and a warm container of each shape waits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        managed = driver.list_managed(host_id)
        waiting = [c.status for c in managed if not c.allocation_id]
        ready = len(waiting) == 2 and set(waiting) <= {"created", "paused"}
        if ready and not any(c.allocation_id in gone for c in managed):
            return
        time.sleep(0.05)
    raise RuntimeError(f"host {host_id} did not settle within {timeout} s")


def engine_parts(engine: DockerEngine, rounds: int) -> dict[str, list[float]]:
    """The engine's steps of both paths, timed one by one with the driver's calls."""
    parts: dict[str, list[float]] = {
        "create": [], "start": [], "ahead": [], "take": [], "readback": [], "unfreeze": [],
    }  # fmt: skip
    with DockerDriver(engine.url) as driver:
        facts = driver.engine_facts()
        client: Any = driver._api().api
        for i in range(rounds):
            spec = ContainerSpec(
                allocation_id=f"parts-{i}", host_id="bench-parts", image=DEFAULT_TAG, cpus=0.5,
                memory_bytes=64 << 20, disk_bytes=64 << 20, pids_limit=512, command=["sleep", "3600"],
            )  # fmt: skip
            # Today's path: created and started on placement.
            watch = time.perf_counter()
            driver._check_image(driver._api(), spec.image)
            kwargs = create_kwargs(spec, disk_quota=facts.disk_quota_supported, helper=driver.helper)
            container_id = str(driver._api().containers.create(**kwargs).id)
            parts["create"].append(time.perf_counter() - watch)
            watch = time.perf_counter()
            client.start(container_id)
            driver.inspect(container_id)
            parts["start"].append(time.perf_counter() - watch)
            driver.remove(container_id)
            # A warm container: made ahead (off the placement's path), then taken.
            key = warm_key(spec)
            assert key is not None
            watch = time.perf_counter()
            made = create_warm(driver, "bench-parts", key)
            parts["ahead"].append(time.perf_counter() - watch)
            watch = time.perf_counter()
            client.rename(made.container_id, spec.container_name)
            response = client._post_json(
                client._url("/containers/{0}/update", made.container_id), data=limits_update(spec)
            )
            client._raise_for_status(response)
            parts["take"].append(time.perf_counter() - watch)
            watch = time.perf_counter()
            mismatches = limit_mismatches(
                spec, driver.inspect(made.container_id), disk_quota=facts.disk_quota_supported,
                helper=driver.helper,
            )  # fmt: skip
            parts["readback"].append(time.perf_counter() - watch)
            if mismatches:
                raise RuntimeError(f"the read-back found {mismatches}")
            watch = time.perf_counter()
            if made.started:
                driver.unpause(made.container_id)
                driver.signal(made.container_id, GO_SIGNAL)
            else:
                client.start(made.container_id)
            driver.inspect(made.container_id)
            parts["unfreeze"].append(time.perf_counter() - watch)
            driver.remove(made.container_id)
    return {name: [v * 1000 for v in values[2:]] for name, values in parts.items()}


async def measure(rounds: int) -> None:
    with bench_servers() as servers:
        async with (
            private_pool(servers, BENCH, hostd={"warm_containers": 1}) as bench,
            aiohttp.ClientSession() as http,
        ):
            engine = bench.engines[0]
            measured: dict[str, list[float]] = {"cold": [], "warm": [], "interactive": [], "raw": []}
            say("waiting for the host to register")
            await wait_active_host(http, bench.api, bench.headers)
            driver = DockerDriver(engine.url)
            # The first of each warm shape, so that hostd keeps one ahead from now on.
            firsts = [
                (await potluck_ms(http, bench.api, bench.headers, p))[1] for p in ("warm", "interactive")
            ]
            for first in firsts:
                async with http.delete(f"{bench.api}/v1/allocations/{first}", headers=bench.headers):
                    pass
            await asyncio.to_thread(settle, driver, bench.hosts[0].host_id, firsts)
            for i in range(rounds + 2):
                # Each round in another order, and each path alone on a settled host (the last
                # round's containers gone, the warm container made again): none pays for another.
                times: dict[str, float] = {}
                made: list[str] = []
                for path in ORDERS[i % len(ORDERS)]:
                    if path == "raw":
                        times[path] = await asyncio.to_thread(docker_run_ms, engine, f"raw-{i}")
                    else:
                        times[path], alloc_id = await potluck_ms(http, bench.api, bench.headers, path)
                        made.append(alloc_id)
                    await asyncio.to_thread(settle, driver, bench.hosts[0].host_id)
                if i >= 2:  # the first rounds warm caches on both sides
                    for path, values in measured.items():
                        values.append(times[path])
                for alloc_id in made:
                    async with http.delete(f"{bench.api}/v1/allocations/{alloc_id}", headers=bench.headers):
                        pass
                await asyncio.to_thread(driver.remove, f"raw-{i}")
                await asyncio.to_thread(settle, driver, bench.hosts[0].host_id, made)
                say(
                    f"round {i}: potluck {times['cold']:.1f} ms, warm {times['warm']:.1f} ms, "
                    f"interactive {times['interactive']:.1f} ms, docker run {times['raw']:.1f} ms"
                )
            driver.close()
            say("timing the engine's parts")
            parts = await asyncio.to_thread(engine_parts, engine, rounds + 2)
    for p in (50, 99):
        for name, path in METRICS:
            values, raw = measured[path], measured["raw"]
            emit(
                BENCH,
                f"{name}_p{p}",
                percentile(values, p),
                "ms",
                baseline=percentile(raw, p),
                rounds=len(values),
            )
    for name, values in parts.items():
        emit(BENCH, f"engine_{name}", percentile(values, 50), "ms", rounds=len(values))
    say("target (issue 20): post_to_running_p50 ratio <= 0.7")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="ops/bench allocation", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=30, help="measured rounds (default 30)")
    parser.add_argument("--quick", action="store_true", help="one measured round: a smoke test")
    args = parser.parse_args()
    asyncio.run(measure(1 if args.quick else args.rounds))


if __name__ == "__main__":
    main()
