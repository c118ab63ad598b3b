"""`ops/bench web [--quick] [--hosts N] [--allocations N] [--renders N]`: the pool page's server-side time.

A log of `--hosts` registered hosts and `--allocations` allocations (most
placed, one in ten waiting in the fair queue) is loaded into a durable
Postgres by `load_pool`, the allocator's engine folds it, and its aiohttp app
(with the web pages) serves the pool page to a signed-in client `--renders`
times in a row over loopback HTTP. Printed, one JSON line each:

    pool_page_ms       p50 of GET / (render and transfer of the whole page), with p99
    pool_page_fold_ms  the engine folding the whole log once at start
"""

import argparse
import asyncio
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import aiohttp
from aiohttp import web

from bench.harness import bench_servers, emit, percentile, say
from potluck.allocator.api import make_app
from potluck.allocator.engine import AllocatorEngine
from potluck.allocator.users import add_user
from potluck.contracts.allocation_events import (
    AllocationPlaced,
    AllocationRequested,
    AllocationSpec,
    CapacityReserved,
    Quota,
    QuotaCharged,
    alloc_stream,
    capacity_stream,
    quota_stream,
    user_stream,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.compatibility import CONTRACT_VERSION
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import HostEnrolled, HostRegistered, host_stream
from potluck.events import Event, EventStore, StreamAppend
from potluck.localstack import free_port

BENCH = "web"
GIB = 1 << 30
ENGINE = EngineFacts(
    version="27.0", cgroup_version="2", storage_driver="overlay2", disk_quota_supported=False
)
USERS = 20


async def load_pool(store: EventStore, hosts: int, allocations: int) -> str:
    """Append a pool of `hosts` hosts and `allocations` allocations of `USERS` users; a token of one."""
    token = ""
    for u in range(USERS):
        added, user_token = add_user(None, f"user{u}", Quota(cpus=10_000))
        await store.append(user_stream(f"user{u}"), added, expected_version=0)
        token = token or user_token
    batch: list[StreamAppend] = []
    for h in range(hosts):
        host_id = f"h-{h:04d}"
        batch.append(
            StreamAppend(
                host_stream(host_id),
                [
                    HostEnrolled(host_id=host_id, name=f"machine-{h}", nkey=f"U{h:055d}"),
                    HostRegistered(
                        contract=CONTRACT_VERSION,
                        host_id=host_id,
                        donated=Capacity(cpus=16, memory_bytes=64 * GIB, disk_bytes=512 * GIB),
                        labels={"room": f"r{h % 7}", "arch": "amd64"},
                        engine=ENGINE,
                        hostd_version="bench",
                    ),
                ],
            )
        )
    await store.append_streams(batch, metadata={"actor": "bench"})
    expires = datetime.now(UTC) + timedelta(days=1)
    for start in range(0, allocations, 100):
        # One append per hundred allocations; a stream appears once in an append.
        streams: dict[str, list[Event]] = {}
        for a in range(start, min(start + 100, allocations)):
            alloc_id, user = f"a-{a:06d}", f"user{a % USERS}"
            spec = AllocationSpec(
                resources=Capacity(cpus=0.5, memory_bytes=GIB // 2, disk_bytes=GIB),
                image="potluck-default:latest",
            )
            streams.setdefault(quota_stream(user), []).append(QuotaCharged(user=user, alloc_id=alloc_id))
            events: list[Event] = [
                AllocationRequested(alloc_id=alloc_id, user=user, spec=spec, lifetime_s=86400)
            ]
            if a % 10 != 9:  # one in ten waits in the fair queue
                host_id = f"h-{a % hosts:04d}"
                events.append(
                    AllocationPlaced(
                        alloc_id=alloc_id, host_id=host_id, user=user, spec=spec, expires_at=expires
                    )
                )
                streams.setdefault(capacity_stream(host_id), []).append(
                    CapacityReserved(host_id=host_id, alloc_id=alloc_id, amount=spec.resources)
                )
            streams[alloc_stream(alloc_id)] = events
        await store.append_streams(
            [StreamAppend(k, v) for k, v in streams.items()], metadata={"actor": "bench"}
        )
    return token


async def run(args: argparse.Namespace) -> None:
    with bench_servers() as servers:
        store = await EventStore.open(await servers.fresh_database("web"), max_size=5)
        try:
            say(f"loading {args.hosts} hosts and {args.allocations} allocations into the log")
            token = await load_pool(store, args.hosts, args.allocations)
            engine = AllocatorEngine(store)
            started = time.perf_counter()
            await engine.catch_up()
            fold_ms = (time.perf_counter() - started) * 1000
            runner = web.AppRunner(make_app(engine))
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            base = f"http://127.0.0.1:{port}"
            try:
                # The Secure session cookie of 127.0.0.1, kept and sent back as a browser does.
                jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[base])
                async with aiohttp.ClientSession(cookie_jar=jar) as http:
                    # A browser's form names its page (Origin): the sign-in refuses one that does not.
                    signin = http.post(f"{base}/web/signin", data={"token": token}, headers={"Origin": base})
                    async with signin as r:
                        assert r.status == 200, await r.text()
                    times = []
                    for _ in range(args.renders):
                        started = time.perf_counter()
                        async with http.get(f"{base}/", allow_redirects=False) as r:
                            body = await r.read()
                            assert r.status == 200, r.status
                        times.append((time.perf_counter() - started) * 1000)
            finally:
                await runner.cleanup()
        finally:
            await store.close()
    load = round(os.getloadavg()[0], 2)
    sizes = {"hosts": args.hosts, "allocations": args.allocations, "load_avg_1m": load}
    emit(
        BENCH,
        "pool_page_ms",
        percentile(times, 50),
        "ms",
        p99_ms=round(percentile(times, 99), 2),
        renders=args.renders,
        page_bytes=len(body),
        **sizes,
    )
    emit(BENCH, "pool_page_fold_ms", fold_ms, "ms", **sizes)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ops/bench web", description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--allocations", type=int, default=2000)
    parser.add_argument("--renders", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="20 hosts, 200 allocations, 5 renders")
    args = parser.parse_args(argv)
    if args.quick:
        args.hosts, args.allocations, args.renders = 20, 200, 5
    return args


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    main()
