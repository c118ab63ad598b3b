"""A whole pool on private Docker engines for a benchmark: the set-up benches share.

``private_pool`` starts one private engine per host (in parallel) with the busybox
test image, a LocalPool (registry and allocator as real processes) on a fresh
database of the bench's servers, one hostd per engine donating `donate`, and a user
whose quota is far above what the pool holds, so the pool, not the quota, bounds
how much runs at once. Everything is stopped on the way out.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.harness import BENCH_CHANGE_RATE, BenchServers, say
from potluck.localpool import EnrolledHost, LocalPool
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import build_test_image

#: A quota no bench reaches: the pool's capacity is what limits it.
UNBOUNDED_QUOTA: dict[str, Any] = {
    "allocations": 100_000,
    "cpus": 100_000.0,
    "memory_bytes": 1 << 50,
    "disk_bytes": 1 << 50,
}
#: Beats every second, lost after a minute: a loaded machine does not lose a bench's hosts.
BENCH_LIVENESS = (1.0, 5, 60.0)


@dataclass
class BenchPool:
    pool: LocalPool
    engines: list[DockerEngine]
    hosts: list[EnrolledHost]
    token: str
    headers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.headers = {"Authorization": f"Bearer {self.token}"}

    @property
    def api(self) -> str:
        return self.pool.api


def _start_engine(engine: DockerEngine) -> None:
    engine.start()
    build_test_image(engine.url)


@contextlib.asynccontextmanager
async def private_pool(
    servers: BenchServers,
    name: str,
    *,
    hosts: int = 1,
    donate: dict[str, Any] | None = None,
    hostd: dict[str, Any] | None = None,
    hostd_each: Sequence[dict[str, Any]] = (),
) -> AsyncIterator[BenchPool]:
    """`hosts` hostds, each on its own private engine, and a user "bench" with no real quota;
    `hostd`: more hostd.toml settings; `hostd_each[i]`: host i's own, on top of those."""
    engines = [DockerEngine(servers.workdir / f"docker{i}") for i in range(hosts)]
    say(f"starting {hosts} private Docker engine(s)")
    pool: LocalPool | None = None
    try:
        await asyncio.gather(*(asyncio.to_thread(_start_engine, e) for e in engines))
        pool = await LocalPool.create(
            servers.workdir / "pool",
            await servers.fresh_database(name),
            liveness=BENCH_LIVENESS,
            change_rate=BENCH_CHANGE_RATE,
        )
        pool.start_registry()
        pool.start_allocator()
        enrolled = []
        for i, engine in enumerate(engines):
            host = await pool.enroll(f"bench-host-{i}")
            donated = donate or {"cpus": 2, "memory": "4G", "disk": "8G"}
            own = hostd_each[i] if i < len(hostd_each) else {}
            pool.write_config(host, engine.url, donate=donated, **{**(hostd or {}), **own})
            pool.start_hostd(host)
            enrolled.append(host)
        await pool.wait_api()
        token = await pool.add_user("bench", **UNBOUNDED_QUOTA)
        yield BenchPool(pool, engines, enrolled, token)
    finally:
        if pool is not None:
            await pool.close()
        for engine in engines:
            with contextlib.suppress(Exception):
                engine.stop()
