"""`ops/bench allocation`: how long from POST /v1/allocations to a running container.

The whole pool runs as real processes (NATS with nkeys, Postgres, registry,
allocator, one hostd on a private Docker engine). The baseline is a raw
`docker run -d` of the same image with the same limits on the same engine,
measured in the same run, interleaved with Potluck's own so that both see the
same machine.

    post_to_running_p50, post_to_running_p99   ms, with baseline and ratio
"""

import argparse
import asyncio
import shutil
import subprocess
import time
from typing import Any

import aiohttp

from bench.harness import bench_servers, emit, percentile, say, wait_active_host
from bench.pool import private_pool
from potluck.hostd.docker_driver import DockerDriver
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


async def potluck_ms(http: aiohttp.ClientSession, api: str, headers: dict[str, str]) -> tuple[float, str]:
    body: dict[str, Any] = {
        "cpus": 0.5,
        "memory": "64M",
        "disk": "64M",
        "image": DEFAULT_TAG,
        "command": ["sleep", "3600"],
    }
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


async def measure(rounds: int) -> None:
    with bench_servers() as servers:
        async with private_pool(servers, BENCH) as bench, aiohttp.ClientSession() as http:
            engine = bench.engines[0]
            potluck: list[float] = []
            raw: list[float] = []
            say("waiting for the host to register")
            await wait_active_host(http, bench.api, bench.headers)
            driver = DockerDriver(engine.url)
            for i in range(rounds + 2):
                ms, alloc_id = await potluck_ms(http, bench.api, bench.headers)
                baseline = await asyncio.to_thread(docker_run_ms, engine, f"raw-{i}")
                if i >= 2:  # the first rounds warm caches on both sides
                    potluck.append(ms)
                    raw.append(baseline)
                async with http.delete(f"{bench.api}/v1/allocations/{alloc_id}", headers=bench.headers):
                    pass
                await asyncio.to_thread(driver.remove, f"raw-{i}")
                say(f"round {i}: potluck {ms:.1f} ms, docker run {baseline:.1f} ms")
            driver.close()
    for p in (50, 99):
        emit(
            BENCH,
            f"post_to_running_p{p}",
            percentile(potluck, p),
            "ms",
            baseline=percentile(raw, p),
            rounds=len(potluck),
        )
    say("target: post_to_running_p50 ratio <= 1.5")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="ops/bench allocation", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=30, help="measured rounds (default 30)")
    parser.add_argument("--quick", action="store_true", help="a few rounds, for a smoke test")
    args = parser.parse_args()
    asyncio.run(measure(3 if args.quick else args.rounds))


if __name__ == "__main__":
    main()
