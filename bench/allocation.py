"""`ops/bench allocation`: how long from POST /v1/allocations to a running container.

The whole pool runs as real processes (NATS with nkeys, Postgres, registry, allocator),
with two hostds, each on a private Docker engine: host 0 with `warm_containers = 1`, host 1
with the default `warm_containers = 0`; each allocation names its host by a label. The
baseline is a raw `docker run -d` of the same image with the same limits on engine 0,
measured in the same run, interleaved with Potluck's own so that all see the same machine.
Each round places four allocations of the same limits, in turning order:

- a task with an environment value, as users' secrets and batch tasks have them, on host 0:
  it takes the container hostd started ahead of it and froze, whose launcher reads the
  value and then runs the command (`post_to_running`);
- the same without the value (`post_to_running_warm`);
- one without a command (interactive: it takes the one hostd started ahead and froze,
  running hostd's keep-alive);
- the first again on host 1, where its container is created and started on placement, as
  on every host with the default settings (`post_to_running_cold`).

    post_to_running_p50, _p99                    ms, a task with an env value, warm host
    post_to_running_warm_p50, _p99               ms, the same task without the value
    post_to_running_interactive_warm_p50, _p99   ms, an interactive one, warm host
    post_to_running_cold_p50, _p99               ms, the first, created on placement
    engine_create, _start, _ahead, _take, _readback, _unfreeze, _attach   ms (p50)

The engine's parts are timed on engine 0 with the driver's own calls, one step at a time.
Created on placement: `create` (image check and create), `start` (start and inspect).
A warm container: `ahead` (made, started and frozen ahead, off the placement's path),
`take` (rename and `docker update` of the limits), `readback` (inspect and the limit
check, both paths), `unfreeze` (unpause, attach to its stdin, the launcher's go, the values
written, inspect: instead of `start`), of which `attach` (the attach alone) is a part.
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
from potluck.hostd.docker_driver import DockerDriver, create_container
from potluck.hostd.launcher import GO_WITH_ENV_SIGNAL, env_payload
from potluck.hostd.no_network import hosts_file_for
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


#: The labels that tell the bench's two hosts apart, which each allocation names.
WARM_HOST, COLD_HOST = {"bench": "warm"}, {"bench": "cold"}
#: The environment value of a task as users send them: a secret, a batch task's index.
ENV = {"BENCH_TOKEN": "s3cret value", "POTLUCK_TASK_INDEX": "7"}


async def potluck_ms(
    http: aiohttp.ClientSession, api: str, headers: dict[str, str], path: str
) -> tuple[float, str]:
    """`path`: "env" (a task with an env value, warm host), "warm" (the same command without
    it), "interactive" (no command, warm host), "cold" (as "env", on the host that keeps
    nothing warm)."""
    body: dict[str, Any] = {
        "cpus": 0.5,
        "memory": "64M",
        "disk": "64M",
        "image": DEFAULT_TAG,
        "command": ["sleep", "3600"],
        "constraints": COLD_HOST if path == "cold" else WARM_HOST,
    }
    if path in ("env", "cold"):
        body["env"] = ENV
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
    ("post_to_running", "env"),
    ("post_to_running_warm", "warm"),
    ("post_to_running_interactive_warm", "interactive"),
    ("post_to_running_cold", "cold"),
)
PATHS = ("env", "warm", "interactive", "cold", "raw")
#: The orders of a round's measurements, taken in turn.
ORDERS = tuple(PATHS[i:] + PATHS[:i] for i in range(len(PATHS)))


def settle(
    driver: DockerDriver, host_id: str, gone: Sequence[str] = (), *, warm: int = 2, timeout: float = 30
) -> None:
    """Until the allocations `gone` have no container and `warm` warm containers (one of each
    shape) wait, frozen: a refill's container is "created" before it is started and frozen,
    and hostd takes it only then (the bench's engines have the helper, see engine_parts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        managed = driver.list_managed(host_id)
        waiting = [c.status for c in managed if not c.allocation_id]
        ready = len(waiting) == warm and set(waiting) <= {"paused"}
        if ready and not any(c.allocation_id in gone for c in managed):
            return
        time.sleep(0.05)
    raise RuntimeError(f"host {host_id} did not settle within {timeout} s")


def engine_parts(engine: DockerEngine, rounds: int) -> dict[str, list[float]]:
    """The engine's steps of both paths, timed one by one with the driver's calls."""
    parts: dict[str, list[float]] = {
        "create": [], "start": [], "ahead": [], "take": [], "attach": [], "readback": [], "unfreeze": [],
    }  # fmt: skip
    # As hostd makes them: containers without a network get its hosts file (no_network.py).
    hosts_file = str(hosts_file_for(engine.url, engine.workdir / "hostd-state"))
    with DockerDriver(engine.url, hosts_file=hosts_file) as driver:
        facts = driver.engine_facts()
        client: Any = driver._api().api
        for i in range(rounds):
            spec = ContainerSpec(
                allocation_id=f"parts-{i}", host_id="bench-parts", image=DEFAULT_TAG, cpus=0.5,
                memory_bytes=64 << 20, disk_bytes=64 << 20, pids_limit=512, command=["sleep", "3600"],
                env=ENV,
            )  # fmt: skip
            # Today's path: created and started on placement.
            watch = time.perf_counter()
            driver._check_image(driver._api(), spec.image)
            kwargs = create_kwargs(
                spec, disk_quota=facts.disk_quota_supported, helper=driver.helper, hosts_file=hosts_file
            )
            container_id = str(create_container(driver._api(), kwargs).id)
            parts["create"].append(time.perf_counter() - watch)
            watch = time.perf_counter()
            client.start(container_id)
            driver.started(driver.inspect(container_id))
            parts["start"].append(time.perf_counter() - watch)
            driver.remove(container_id)
            # A warm container: made ahead (off the placement's path), then taken.
            key = warm_key(spec, env_at_take=True)
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
                helper=driver.helper, hosts_file=hosts_file,
            )  # fmt: skip
            parts["readback"].append(time.perf_counter() - watch)
            if mismatches:
                raise RuntimeError(f"the read-back found {mismatches}")
            if not made.started:
                raise RuntimeError("warm containers were only created ahead: is the helper missing?")
            watch = time.perf_counter()
            driver.unpause(made.container_id)
            attaching = time.perf_counter()
            stdin = driver.attach_stdin(made.container_id)
            parts["attach"].append(time.perf_counter() - attaching)
            driver.signal(made.container_id, GO_WITH_ENV_SIGNAL)
            stdin.write_all(env_payload(spec.env))
            stdin.close()
            driver.inspect(made.container_id)
            parts["unfreeze"].append(time.perf_counter() - watch)
            driver.remove(made.container_id)
    return {name: [v * 1000 for v in values[2:]] for name, values in parts.items()}


async def measure(rounds: int) -> None:
    with bench_servers() as servers:
        async with (
            private_pool(
                servers,
                BENCH,
                hosts=2,
                hostd_each=[
                    {"warm_containers": 1, "labels": WARM_HOST},
                    {"warm_containers": 0, "labels": COLD_HOST},
                ],
            ) as bench,
            aiohttp.ClientSession() as http,
        ):
            engine = bench.engines[0]
            measured: dict[str, list[float]] = {path: [] for path in PATHS}
            say("waiting for the hosts to register")
            await wait_active_host(http, bench.api, bench.headers, count=2)
            warm_host, cold_host = (host.host_id for host in bench.hosts)
            drivers = [DockerDriver(e.url) for e in bench.engines]

            async def settled(gone: Sequence[str] = ()) -> None:
                await asyncio.to_thread(settle, drivers[0], warm_host, gone)
                await asyncio.to_thread(settle, drivers[1], cold_host, gone, warm=0)

            # The first of each warm shape, so that hostd keeps one ahead from now on.
            firsts = [
                (await potluck_ms(http, bench.api, bench.headers, p))[1] for p in ("warm", "interactive")
            ]
            for first in firsts:
                async with http.delete(f"{bench.api}/v1/allocations/{first}", headers=bench.headers):
                    pass
            await settled(firsts)
            for i in range(rounds + 2):
                # Each round in another order, and each path alone on settled hosts (the last
                # round's containers gone, the warm containers made again): none pays for another.
                times: dict[str, float] = {}
                made: list[str] = []
                for path in ORDERS[i % len(ORDERS)]:
                    if path == "raw":
                        times[path] = await asyncio.to_thread(docker_run_ms, engine, f"raw-{i}")
                    else:
                        times[path], alloc_id = await potluck_ms(http, bench.api, bench.headers, path)
                        made.append(alloc_id)
                    await settled()
                if i >= 2:  # the first rounds warm caches on both sides
                    for path, values in measured.items():
                        values.append(times[path])
                for alloc_id in made:
                    async with http.delete(f"{bench.api}/v1/allocations/{alloc_id}", headers=bench.headers):
                        pass
                await asyncio.to_thread(drivers[0].remove, f"raw-{i}")
                await settled(made)
                say(f"round {i}: " + ", ".join(f"{path} {times[path]:.1f} ms" for path in PATHS))
            for driver in drivers:
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
