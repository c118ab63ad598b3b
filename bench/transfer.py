"""`ops/bench transfer`: files into and out of an allocation through the gateway, against `docker cp`.

The whole pool runs as real processes (NATS, Postgres, registry, allocator,
the SSH gateway, one hostd on a private Docker engine), with one interactive
allocation of the default image. A file of `--size-mb` random bytes goes up
and comes down with OpenSSH's `scp` (SFTP mode: the image's sftp-server),
`rsync -e ssh` (up) and `potluck cp`, each through the gateway and hostd; the
baseline is `docker cp` of the same file to and from the same container in the
same run, interleaved, so that both see the same machine. Every figure is the
median of `--runs` runs.

    scp_up, scp_down, rsync_up, cp_up, cp_down    MB/s, with baseline (docker cp) and ratio

Target (issue 17): scp ratio >= 0.5 both ways.
"""

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from bench.harness import BENCH_CHANGE_RATE, bench_servers, emit, say
from potluck.localpool import LocalPool
from potluck.localstack import free_port, wait_for_port
from potluck.localstack.default_image import ensure_default_image
from potluck.localstack.docker_engine import DockerEngine
from potluck.user.client import Login

BENCH = "transfer"
MB = 1 << 20
TARGETS = "scp_up and scp_down ratio >= 0.5 (of docker cp's rate)"


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}, **(extra or {})}


def _timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env or _env(), check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... exited {done.returncode}: {done.stderr[-500:]}")
    return seconds


class Setup:
    def __init__(self, workdir: Path, engine: DockerEngine, port: int, key: Path, alloc_id: str) -> None:
        self.workdir, self.engine, self.port, self.key, self.alloc_id = workdir, engine, port, key, alloc_id
        self.docker = shutil.which("docker") or "docker"
        self.container = f"potluck-{alloc_id}"

    def options(self) -> list[str]:
        return [
            "-F", "/dev/null", "-i", str(self.key), "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
        ]  # fmt: skip

    def scp(self, src: str, dst: str) -> list[str]:
        return ["scp", "-q", "-P", str(self.port), *self.options(), src, dst]

    def rsync(self, src: str, dst: str) -> list[str]:
        shell = " ".join(["ssh", "-p", str(self.port), *self.options()])
        return ["rsync", "-a", "--whole-file", "-e", shell, src, dst]

    def remote(self, path: str) -> str:
        return f"{self.alloc_id}@127.0.0.1:{path}"

    def docker_cp(self, src: str, dst: str) -> list[str]:
        return [self.docker, "-H", self.engine.url, "cp", src, dst]

    def clean(self) -> None:
        """Remove what the last runs left in the container (its disk is bounded)."""
        argv = [self.docker, "-H", self.engine.url, "exec", self.container, "rm", "-rf", "/root/t"]
        subprocess.run(argv, check=True, capture_output=True)


def measure(setup: Setup, data: Path, runs: int, env: dict[str, str]) -> None:
    size_mb = data.stat().st_size / MB
    down = setup.workdir / "down"
    python = [sys.executable, "-m", "potluck", "cp", "-i", str(setup.key)]
    ours: dict[str, Callable[[], list[str]]] = {
        "scp_up": lambda: setup.scp(str(data), setup.remote("/root/t")),
        "scp_down": lambda: setup.scp(setup.remote("/root/t"), str(down)),
        "rsync_up": lambda: setup.rsync(str(data), setup.remote("/root/t")),
        "cp_up": lambda: [*python, str(data), f"{setup.alloc_id}:/root/t"],
        "cp_down": lambda: [*python, f"{setup.alloc_id}:/root/t", str(down)],
    }
    for metric, argv in ours.items():
        upload = metric.endswith("_up")
        rates: dict[str, list[float]] = {"potluck": [], "docker cp": []}
        for i in range(runs):
            setup.clean()
            down.unlink(missing_ok=True)
            if not upload:  # the file to fetch, put there by docker cp (not timed)
                _timed(setup.docker_cp(str(data), f"{setup.container}:/root/t"))
            seconds = _timed(argv(), env)
            rates["potluck"].append(size_mb / seconds)
            setup.clean()
            down.unlink(missing_ok=True)
            if upload:
                baseline = _timed(setup.docker_cp(str(data), f"{setup.container}:/root/t"))
            else:
                _timed(setup.docker_cp(str(data), f"{setup.container}:/root/t"))
                baseline = _timed(setup.docker_cp(f"{setup.container}:/root/t", str(down)))
            rates["docker cp"].append(size_mb / baseline)
            ours_rate, theirs = rates["potluck"][-1], rates["docker cp"][-1]
            say(f"{metric} run {i}: {ours_rate:.0f} MB/s, docker cp {theirs:.0f} MB/s")
        value, base = statistics.median(rates["potluck"]), statistics.median(rates["docker cp"])
        emit(BENCH, metric, value, "MB/s", base, size_mb=round(size_mb), runs=runs)
    setup.clean()
    down.unlink(missing_ok=True)


async def run(size_mb: int, runs: int) -> None:
    with bench_servers() as servers:
        workdir = servers.workdir
        engine = DockerEngine(workdir / "docker")
        engine.start()
        pool = await LocalPool.create(
            workdir / "pool", await servers.fresh_database("transfer"), change_rate=BENCH_CHANGE_RATE
        )
        try:
            say("the default image (built from apt's sources the first time: minutes)")
            image = await asyncio.to_thread(ensure_default_image, engine.url, say)
            ssh_port, tunnel_port = free_port(), free_port()
            client_key = pool.gateway_client_key()
            pool.start_registry()
            pool.start_allocator()
            pool.start_gateway(listen=f"127.0.0.1:{ssh_port}", tunnel_listen=f"127.0.0.1:{tunnel_port}")
            host = await pool.enroll("bench-host")
            disk_gb = max(4, 3 * size_mb // 1024 + 2)
            pool.write_config(
                host,
                engine.url,
                allowed_images=[image],
                donate={"cpus": 2, "memory": "4G", "disk": f"{disk_gb + 2}G"},
                gateways=[{"address": f"127.0.0.1:{tunnel_port}", "client_key": client_key}],
            )
            pool.start_hostd(host)
            await pool.wait_api()
            await asyncio.to_thread(wait_for_port, ssh_port, what="the SSH gateway", timeout=30)
            token = await pool.add_user("bench")
            key = workdir / "user"
            keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)]
            await asyncio.to_thread(subprocess.run, keygen, check=True)
            headers = {"Authorization": f"Bearer {token}"}
            body = {
                "cpus": 1, "memory": "512M", "disk": f"{disk_gb}G", "image": image, "command": None,
                "ssh_keys": [Path(f"{key}.pub").read_text().strip()],
            }  # fmt: skip
            async with aiohttp.ClientSession() as http:
                # Placed at once, or waiting for the host that has not registered yet (202).
                async with http.post(f"{pool.api}/v1/allocations", json=body, headers=headers) as r:
                    created = await r.json()
                    if r.status not in (201, 202):
                        raise RuntimeError(f"the allocation was refused ({r.status}): {created}")
                url = f"{pool.api}/v1/allocations/{created['id']}?wait=running&timeout=60"
                async with http.get(url, headers=headers) as r:
                    running = await r.json()
            if running.get("state") != "running":
                raise RuntimeError(f"the allocation is {running.get('state')}, not running:\n{pool.logs()}")
            config = workdir / "client.toml"
            Login(pool.api, token, f"127.0.0.1:{ssh_port}").save(config)
            setup = Setup(workdir, engine, ssh_port, key, created["id"])
            for _ in range(100):  # until the gateway reaches it
                probe = ["ssh", "-p", str(ssh_port), *setup.options(), f"{setup.alloc_id}@127.0.0.1", "true"]
                done = await asyncio.to_thread(
                    subprocess.run, probe, env=_env(), capture_output=True, check=False
                )
                if done.returncode == 0:
                    break
                await asyncio.sleep(0.2)
            data = workdir / "data.bin"
            with data.open("wb") as f:
                for _ in range(size_mb):
                    f.write(os.urandom(MB))
            await asyncio.to_thread(measure, setup, data, runs, _env({"POTLUCK_CONFIG": str(config)}))
        finally:
            await pool.close()
            engine.stop()
    say(f"targets: {TARGETS}")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="ops/bench transfer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=1024, help="the file's size in MiB (default 1024)")
    parser.add_argument("--runs", type=int, default=3, help="runs per metric; the median counts (default 3)")
    parser.add_argument(
        "--quick", action="store_true", help="32 MiB, one run: a smoke test (figures mean little)"
    )
    args = parser.parse_args()
    size_mb, runs = (32, 1) if args.quick else (args.size_mb, args.runs)
    asyncio.run(run(size_mb, runs))


if __name__ == "__main__":
    main()
