"""`ops/bench images`: how long from POST /v1/allocations to running when the host must pull.

The whole pool runs as real processes (NATS with nkeys, Postgres, registry,
allocator, the pool's image registry on loopback, one hostd on a private
Docker engine). A user pushes a small image into the pool registry. Each round
measures Potluck and, interleaved on the same engine and from the same
registry, what a person would do by hand:

    cold_start   ms: POST to running on a host that lacks the image (hostd pulls it),
                 against `docker pull` + `docker run -d` of it (ratio; target <= 1.2)
    warm_start   ms: POST to running on a host that has it, against `docker run -d`

The image (the busybox test image plus a layer of random bytes, 50 MB by
default) and every layer of it are removed from the engine before each cold
round, so each cold round pulls in full on both sides.
"""

import argparse
import asyncio
import contextlib
import io
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import docker

from bench.harness import BENCH_CHANGE_RATE, bench_servers, emit, percentile, say, wait_active_host
from potluck.localpool import LocalPool
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG, build_test_image

BENCH = "images"
LIMITS = ["--cpus", "0.5", "--memory", "64m", "--memory-swap", "64m", "--pids-limit", "512"]


def _docker(engine: DockerEngine, config: Path, *args: str) -> None:
    tool = shutil.which("docker") or "docker"
    subprocess.run([tool, "--config", str(config), "-H", engine.url, *args], check=True, capture_output=True)


def _forget(engine: DockerEngine, image: str, timeout: float = 60.0) -> None:
    """The image and its layers gone from the engine, once no container uses it.

    hostd removes a released allocation's container itself: this removes what is
    left and tolerates a removal already in progress.
    """
    client = docker.DockerClient(base_url=engine.url)
    deadline = time.monotonic() + timeout
    try:
        # ignore_removed: the SDK inspects each container it lists, and hostd may remove one
        # in between (a NotFound that ended a bench run).
        using: dict[str, str | list[str] | bool] = {"ancestor": image}
        while containers := client.containers.list(all=True, filters=using, ignore_removed=True):
            if time.monotonic() > deadline:
                raise RuntimeError(f"containers of {image} still on the engine after {timeout:.0f}s")
            for container in containers:
                with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                    container.remove(force=True)
            time.sleep(0.1)
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(image, force=True)
        client.images.prune(filters={"dangling": False})
    finally:
        client.close()


def _build(engine: DockerEngine, image: str, blob_mb: int) -> None:
    """The test image plus a layer of `blob_mb` MB of random bytes: a pull that moves data."""
    dockerfile = f"FROM {DEFAULT_TAG}\nRUN head -c {blob_mb * 1_000_000} /dev/urandom > /blob\n"
    client = docker.DockerClient(base_url=engine.url)
    try:
        client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=image, rm=True, network_mode="none")
    finally:
        client.close()


def _push(engine: DockerEngine, config: Path, image: str, registry: str, token: str) -> None:
    """As a user would: `docker login` with the Potluck token, push."""
    login = subprocess.run(
        [shutil.which("docker") or "docker", "--config", str(config), "-H", engine.url, "login",
         "-u", "bench", "--password-stdin", registry],
        input=token, text=True, capture_output=True, check=False,
    )  # fmt: skip
    if login.returncode != 0:
        raise RuntimeError(f"docker login to the pool registry failed: {login.stderr}")
    _docker(engine, config, "push", image)


def by_hand_ms(engine: DockerEngine, config: Path, image: str, name: str, *, pull: bool) -> float:
    started = time.perf_counter()
    if pull:
        _docker(engine, config, "pull", "-q", image)
    _docker(
        engine, config, "run", "-d", "--name", name, "--init", "--network", "none", *LIMITS,
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges", image, "sleep", "3600",
    )  # fmt: skip
    elapsed = (time.perf_counter() - started) * 1000
    _docker(engine, config, "rm", "-f", name)
    return elapsed


async def potluck_ms(http: aiohttp.ClientSession, api: str, headers: dict[str, str], image: str) -> float:
    body: dict[str, Any] = {
        "cpus": 0.5,
        "memory": "64M",
        "disk": "64M",
        "image": image,
        "command": ["sleep", "3600"],
    }
    started = time.perf_counter()
    async with http.post(f"{api}/v1/allocations", json=body, headers=headers) as response:
        created = await response.json()
        if response.status not in (201, 202):
            raise RuntimeError(f"POST answered {response.status}: {created}")
    state: dict[str, Any] = created
    while state.get("state") not in ("running", "failed", "exited", "refused"):
        async with http.get(
            f"{api}/v1/allocations/{created['id']}?wait=running&timeout=60", headers=headers
        ) as response:
            state = await response.json()
    elapsed = (time.perf_counter() - started) * 1000
    if state.get("state") != "running":
        raise RuntimeError(f"allocation {created['id']} is {state.get('state')}: {state.get('reason')}")
    async with http.delete(f"{api}/v1/allocations/{created['id']}", headers=headers):
        pass
    return elapsed


async def measure(rounds: int, blob_mb: int) -> None:
    cold: list[float] = []
    cold_raw: list[float] = []
    warm: list[float] = []
    warm_raw: list[float] = []
    with bench_servers() as servers, tempfile.TemporaryDirectory() as docker_config:
        config = Path(docker_config)
        engine = DockerEngine(servers.workdir / "docker")
        engine.start()
        pool = await LocalPool.create(
            servers.workdir / "pool",
            await servers.fresh_database("images"),
            liveness=(1.0, 5, 60.0),
            change_rate=BENCH_CHANGE_RATE,
        )
        try:
            build_test_image(engine.url)
            pool.start_registry()
            pool.start_allocator()
            await pool.wait_api()
            registry = await asyncio.to_thread(pool.start_image_registry)
            token = await pool.add_user("bench", allocations=1000, cpus=1000.0, memory_bytes=1 << 50)
            image = f"{registry.address}/bench/sim:1"
            say(f"pushing {image} into the pool registry")
            await asyncio.to_thread(_build, engine, image, blob_mb)
            await asyncio.to_thread(_push, engine, config, image, registry.address, token)
            # From here the engine holds no layer of the image unless a pull brought it.
            await asyncio.to_thread(_forget, engine, DEFAULT_TAG)
            host = await pool.enroll("bench-host")
            pool.write_config(
                host, engine.url, donate={"cpus": 2, "memory": "4G", "disk": "8G"}, allowed_images=[]
            )
            pool.start_hostd(host)
            headers = {"Authorization": f"Bearer {token}"}
            async with aiohttp.ClientSession() as http:
                await wait_active_host(http, pool.api, headers)
                for i in range(rounds + 1):
                    await asyncio.to_thread(_forget, engine, image)
                    ms = await potluck_ms(http, pool.api, headers, image)
                    warm_ms = await potluck_ms(http, pool.api, headers, image)
                    await asyncio.to_thread(_forget, engine, image)
                    raw = await asyncio.to_thread(by_hand_ms, engine, config, image, f"raw-{i}", pull=True)
                    raw_warm = await asyncio.to_thread(
                        by_hand_ms, engine, config, image, f"raw-w{i}", pull=False
                    )
                    if i >= 1:  # the first round warms caches on both sides
                        cold.append(ms)
                        cold_raw.append(raw)
                        warm.append(warm_ms)
                        warm_raw.append(raw_warm)
                    say(
                        f"round {i}: cold {ms:.0f} ms (by hand {raw:.0f}),",
                        f"warm {warm_ms:.0f} ms ({raw_warm:.0f})",
                    )
        finally:
            await pool.close()
            engine.stop()
    emit(BENCH, "cold_start", percentile(cold, 50), "ms", baseline=percentile(cold_raw, 50), rounds=len(cold))
    emit(BENCH, "warm_start", percentile(warm, 50), "ms", baseline=percentile(warm_raw, 50), rounds=len(warm))
    say("target: cold_start ratio <= 1.2")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="ops/bench images", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=10, help="measured rounds (default 10)")
    parser.add_argument("--blob-mb", type=int, default=50, help="random data in the image, MB (default 50)")
    parser.add_argument(
        "--quick", action="store_true", help="one measured round of a small image, for a smoke test"
    )
    args = parser.parse_args()
    asyncio.run(measure(1 if args.quick else args.rounds, 2 if args.quick else args.blob_mb))


if __name__ == "__main__":
    main()
