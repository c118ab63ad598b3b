"""`ops/bench scale_restart [--events N] [--quick]`: how long a restarted allocator and registry
take to answer over a long log, with and without a checkpoint (potluck.events.checkpoints).

A log of `--events` events (default 1,000,000) is loaded into a durable Postgres, in the
mix a pool's log has: 1,000 hosts enrolled and registered, some suspected and recovered,
20 users, and allocations requested, placed, running and released (nine in ten; the rest
still run), each with its quota charge and its capacity reserved and freed. Then real
`potluck registry` and `potluck allocator` processes start over it; once both have
checkpointed they are killed with SIGKILL and started again, twice: once as they are
(resuming from their checkpoints), once after the checkpoints are deleted (a fold from
zero, as before checkpoints). Each start is timed from the process's start to the answer of
its first request: for the allocator, a user's GET /v1/allocations (200); for the
registry, its `registry.loaded` log line (it subscribes right after). Printed, one JSON
line each:

    restart_s             the allocator's restart from its checkpoint (registry_s alongside)
    restart_s_from_zero   the same after its checkpoint was deleted (the baseline)
    restart_speedup       from_zero / restart_s
"""

import argparse
import asyncio
import json
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import aiohttp

from bench.harness import BENCH_CHANGE_RATE, BenchServers, bench_servers, emit, say
from potluck.allocator.users import add_user
from potluck.contracts.allocation_events import (
    AllocationPlaced,
    AllocationReleased,
    AllocationRequested,
    AllocationRunning,
    AllocationSpec,
    CapacityFreed,
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
from potluck.contracts.host_events import (
    HostEnrolled,
    HostRecovered,
    HostRegistered,
    HostSuspected,
    host_stream,
)
from potluck.events import Event, EventStore, StreamAppend
from potluck.localpool import LocalPool
from potluck.localstack.process import ChildProcess

BENCH = "scale"
GIB = 1 << 30
ENGINE = EngineFacts(
    version="27.0", cgroup_version="2", storage_driver="overlay2", disk_quota_supported=False
)
USERS = 20
HOSTS = 1000
#: Allocations per append while loading.
PER_APPEND = 500


def _allocation(a: int, expires: datetime, streams: dict[str, list[Event]]) -> None:
    """The events of allocation number `a`, added to the streams of one append."""
    alloc_id, user = f"a-{a:07d}", f"user{a % USERS}"
    host_id = f"h-{a % HOSTS:04d}"
    spec = AllocationSpec(
        resources=Capacity(cpus=0.25, memory_bytes=GIB // 4, disk_bytes=GIB), image="potluck-default:latest"
    )
    streams.setdefault(quota_stream(user), []).append(QuotaCharged(user=user, alloc_id=alloc_id))
    events: list[Event] = [
        AllocationRequested(alloc_id=alloc_id, user=user, spec=spec, lifetime_s=30 * 86400),
        AllocationPlaced(alloc_id=alloc_id, host_id=host_id, user=user, spec=spec, expires_at=expires),
        AllocationRunning(alloc_id=alloc_id, host_id=host_id, container_id=f"c{a:063d}"),
    ]
    capacity = streams.setdefault(capacity_stream(host_id), [])
    capacity.append(CapacityReserved(host_id=host_id, alloc_id=alloc_id, amount=spec.resources))
    if a % 10 != 9:  # one in ten still runs
        events.append(AllocationReleased(alloc_id=alloc_id, host_id=host_id, by=f"user:{user}"))
        capacity.append(CapacityFreed(host_id=host_id, alloc_id=alloc_id, amount=spec.resources))
    streams[alloc_stream(alloc_id)] = events


async def load_log(store: EventStore, events: int) -> str:
    """Append about `events` events of a pool's mix; a user's token."""
    token = ""
    for u in range(USERS):
        added, user_token = add_user(
            None, f"user{u}", Quota(cpus=1e6, memory_bytes=1 << 60, disk_bytes=1 << 60)
        )
        await store.append(user_stream(f"user{u}"), added, expected_version=0)
        token = token or user_token
    hosts = [
        StreamAppend(
            host_stream(f"h-{h:04d}"),
            [
                HostEnrolled(host_id=f"h-{h:04d}", name=f"machine-{h}", nkey=f"U{h:055d}"),
                HostRegistered(
                    contract=CONTRACT_VERSION,
                    host_id=f"h-{h:04d}",
                    donated=Capacity(cpus=64, memory_bytes=256 * GIB, disk_bytes=4096 * GIB),
                    labels={"room": f"r{h % 7}", "arch": "amd64"},
                    engine=ENGINE,
                    hostd_version="bench",
                ),
            ],
        )
        for h in range(HOSTS)
    ]
    await store.append_streams(hosts, metadata={"actor": "bench"})
    expires = datetime.now(UTC) + timedelta(days=30)
    a = 0
    started = time.monotonic()
    while (head := await store.head_position()) < events:
        streams: dict[str, list[Event]] = {}
        for _ in range(PER_APPEND):
            _allocation(a, expires, streams)
            a += 1
        # Now and then a host misses beats and comes back: the registry's share of the log.
        h = f"h-{(a // PER_APPEND) % HOSTS:04d}"
        streams[host_stream(h)] = [
            HostSuspected(host_id=h, silent_for_s=30.0),
            HostRecovered(host_id=h, was="unreachable"),
        ]
        await store.append_streams(
            [StreamAppend(k, v) for k, v in streams.items()], metadata={"actor": "bench"}
        )
        if (a // PER_APPEND) % 40 == 0:
            say(f"loaded {head} events ({head / (time.monotonic() - started):.0f}/s)")
    say(f"loaded {head} events: {a} allocations, {HOSTS} hosts")
    return token


async def answered(api: str, token: str, proc: ChildProcess, timeout: float) -> None:
    """Until a user's GET /v1/allocations is answered 200."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        while True:
            try:
                async with http.get(
                    f"{api}/v1/allocations", headers={"Authorization": f"Bearer {token}"}
                ) as r:
                    if r.status == 200:
                        await r.read()
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline or not proc.running():
                raise TimeoutError(f"the allocator at {api} did not answer: {proc.log_tail(5)}")
            await asyncio.sleep(0.05)


async def logged(proc: ChildProcess, since: int, line: str, timeout: float) -> None:
    """Until the process's log, past byte `since`, holds `line`."""
    deadline = time.monotonic() + timeout
    while True:
        with proc.log_path.open("rb") as f:
            f.seek(since)
            if line.encode() in f.read():
                return
        if time.monotonic() > deadline or not proc.running():
            raise TimeoutError(f"{proc.log_path.name} never logged {line}: {proc.log_tail(5)}")
        await asyncio.sleep(0.05)


async def checkpointed(store: EventStore, position: int, timeout: float) -> dict[str, int]:
    """Until both services keep a checkpoint at `position` or later; their positions."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await store.pool.fetch("SELECT reader, max(position) FROM checkpoints GROUP BY reader")
        kept = {r[0]: r[1] for r in rows}
        if all(kept.get(reader, 0) >= position for reader in ("allocator", "registry")):
            return kept
        if time.monotonic() > deadline:
            raise TimeoutError(f"no checkpoints at {position} within {timeout:.0f}s: {kept}")
        await asyncio.sleep(0.5)


async def start_timed(pool: LocalPool, token: str, timeout: float) -> dict[str, float]:
    """Start both services (again, once started); seconds until each answers."""
    logs = [pool.workdir / f"{name}.log" for name in ("registry", "allocator")]
    since = [p.stat().st_size if p.exists() else 0 for p in logs]
    started = time.monotonic()
    if "allocator" in pool.processes:
        pool.processes["registry"].start()
        pool.processes["allocator"].start()
    else:
        pool.start_registry()
        pool.start_allocator()
    registry, allocator = pool.processes["registry"], pool.processes["allocator"]
    registry_s: float | None = None

    async def registry_loaded() -> None:
        nonlocal registry_s
        await logged(registry, since[0], "registry.loaded", timeout)
        registry_s = time.monotonic() - started

    waiting = asyncio.create_task(registry_loaded())
    await answered(pool.api, token, allocator, timeout)
    allocator_s = time.monotonic() - started
    await waiting
    assert registry_s is not None
    for proc, offset in ((registry, since[0]), (allocator, since[1])):
        with proc.log_path.open("rb") as f:
            f.seek(offset)
            for raw in f.read().splitlines():
                if b'"allocator.loaded"' in raw or b'"registry.loaded"' in raw:
                    line = json.loads(raw)
                    say(f"  {line.get('event')}: resumed_from={line.get('resumed_from')}")
                if b'"checkpoint.loaded"' in raw:
                    line = json.loads(raw)
                    say(f"  {line['reader']}: read {line['bytes']} B checkpoint in {line['load_ms']} ms")
    return {"allocator_s": allocator_s, "registry_s": registry_s}


def checkpoint_lines(pool: LocalPool) -> dict[str, dict[str, float]]:
    """Per service, its last `checkpoint.saved` log line: size, encoding pause, whole write."""
    saved = {}
    for name in ("allocator", "registry"):
        for raw in (pool.workdir / f"{name}.log").read_bytes().splitlines():
            if b'"checkpoint.saved"' in raw:
                line = json.loads(raw)
                saved[name] = {k: line[k] for k in ("position", "bytes", "pause_ms", "encode_ms", "total_ms")}
    return saved


def kill(pool: LocalPool) -> None:
    for name in ("allocator", "registry"):
        pool.processes[name].kill()


async def run(servers: BenchServers, args: argparse.Namespace) -> None:
    if args.events < 200_000:
        # A short log would not reach the default 100,000 events between checkpoints.
        os.environ.setdefault("POTLUCK_CHECKPOINT_EVERY_EVENTS", str(args.events // 4))
    pool = await LocalPool.create(
        servers.workdir / "pool",
        await servers.fresh_database("restart"),
        log_level="INFO",
        change_rate=BENCH_CHANGE_RATE,
    )
    try:
        say(f"loading a log of {args.events} events")
        token = await load_log(pool.store, args.events)
        head = await pool.store.head_position()
        # Registered hosts stay online without beats only as long as the liveness allows:
        # a day's grace, so that no host turns suspect (and no event is appended) meanwhile.
        pool.liveness = (3600.0, 24, 2 * 86400.0)
        first = await start_timed(pool, token, args.timeout)
        say(f"first start (from zero): {first}")
        kept = await checkpointed(pool.store, head, args.timeout)
        say(f"checkpoints kept: {kept}")
        saved = checkpoint_lines(pool)
        say(f"checkpoints taken: {saved}")
        kill(pool)
        resumed = await start_timed(pool, token, args.timeout)
        say(f"restart from checkpoints: {resumed}")
        kill(pool)
        await pool.store.pool.execute("DELETE FROM checkpoints")
        zero = await start_timed(pool, token, args.timeout)
        say(f"restart without checkpoints: {zero}")
    finally:
        await pool.close()
    load = round(os.getloadavg()[0], 2)
    detail = {"events": head, "load_avg_1m": load}
    emit(
        BENCH,
        "restart_s",
        resumed["allocator_s"],
        "s",
        registry_s=round(resumed["registry_s"], 2),
        checkpoint_bytes=saved["allocator"]["bytes"],
        checkpoint_pause_ms=saved["allocator"]["pause_ms"],
        checkpoint_encode_ms=saved["allocator"]["encode_ms"],
        checkpoint_total_ms=saved["allocator"]["total_ms"],
        **detail,
    )
    emit(
        BENCH,
        "restart_s_from_zero",
        zero["allocator_s"],
        "s",
        registry_s=round(zero["registry_s"], 2),
        **detail,
    )
    emit(BENCH, "restart_speedup", zero["allocator_s"] / resumed["allocator_s"], "x", **detail)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ops/bench scale_restart", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="Events in the log (default 1,000,000)."
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="Seconds a start may take.")
    parser.add_argument("--quick", action="store_true", help="A log of 50,000 events: a smoke test.")
    args = parser.parse_args(argv)
    if args.quick:
        args.events = 50_000
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with bench_servers() as servers:
        asyncio.run(run(servers, args))


if __name__ == "__main__":
    main()
