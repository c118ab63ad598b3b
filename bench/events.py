"""Throughput and latency of the event log (libs/events) on real servers.

`ops/bench events [--quick] [--only PART ...]` prints one JSON line per metric:

- append_batched (events/s): EventStore.append in batches against a durable
  Postgres (fsync and synchronous_commit on, the defaults).
- replay (events/s): read_all in a loop over a pre-filled log of 1M events into
  a projection that looks only at each event's type and stream (no parse of
  `data`). Extra metrics: replay_parsed (the projection also parses the data
  JSON and sums a field), replay_typed (each event decoded into its pydantic
  class through the registry, as a service's projection does). The baseline is
  the same query loop on the raw asyncpg driver, without building events.
- relay_publish (events/s): an OutboxRelay publishing a pre-filled log to
  JetStream, from its start until its checkpoint reaches the head of the log.
  relay_publish_sync_always: the same with `jetstream { sync_interval: always }`.
- append_to_consumer_p50 / _p99 (ms): single-event appends paced at a steady
  rate, with an event_subscriber in this process and the relay as deployed, a
  `potluck relay` process (`--relay-in-process`: in this process); the time
  from just before the append call to the handler seeing the event.

Progress and a summary against the targets go to stderr.
"""

import argparse
import asyncio
import contextlib
import cProfile
import io
import os
import pstats
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import nats
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from bench.harness import BenchServers, Stopwatch, bench_servers, emit, percentile, say
from potluck.events import (
    Event,
    EventRegistry,
    EventStore,
    LoggedEvent,
    NewEvent,
    OutboxRelay,
    RecordedEvent,
    bus,
    event_subscriber,
)
from potluck.events.store import _COLUMNS as STORE_COLUMNS  # exactly what read_all selects
from potluck.localstack.process import ChildProcess

BENCH = "events"
PARTS = ("append", "replay", "relay", "latency")

#: Targets on a 2-core machine (see bench/README.md); printed, never asserted.
TARGETS: dict[str, tuple[str, float]] = {
    "append_batched": (">=", 50_000),
    "replay": (">=", 200_000),
    "replay_typed": (">=", 250_000),
    "relay_publish": (">=", 20_000),
    "append_to_consumer_p99": ("<=", 50),
}

# Events of a registry of their own, shaped like the allocator's (a few ids and
# numbers, 100-200 bytes of JSON), so the bench never touches services' types.
bench_events = EventRegistry()


@bench_events.register
class BenchAllocationRequested(Event):
    allocation_id: str
    user: str
    cpus: float
    memory_mb: int
    disk_mb: int
    image: str


@bench_events.register
class BenchCapacityReserved(Event):
    routing_field = "host_id"
    allocation_id: str
    host_id: str
    cpus: float
    memory_mb: int


#: What this run measured, for the summary.
RESULTS: dict[str, float] = {}


def record(metric: str, value: float, unit: str, baseline: float | None = None, **extra: Any) -> None:
    # The load average tells a quiet machine from a busy one when comparing runs.
    load = round(os.getloadavg()[0], 2)
    emit(BENCH, metric, value, unit, baseline, **extra, load_avg_1m=load)
    RESULTS[metric] = value


HOSTS = 100
STREAMS = 1000
ACTOR = "user:bench"


def make_event(i: int) -> Event:
    """The i-th event of a synthetic log: one in four reserves capacity on a host."""
    if i % 4 == 0:
        return BenchCapacityReserved(
            allocation_id=str(uuid.uuid4()),
            host_id=f"h{i % HOSTS}",
            cpus=2.0,
            memory_mb=512 + 256 * (i % 8),
        )
    return BenchAllocationRequested(
        allocation_id=str(uuid.uuid4()),
        user=f"user-{i % 50}",
        cpus=2.0,
        memory_mb=512 + 256 * (i % 8),
        disk_mb=10_240,
        image="debian:12-slim",
    )


def metadata() -> dict[str, str]:
    return {"actor": ACTOR, "correlation_id": str(uuid.uuid4())}


# Rows exactly like those EventStore.append writes for make_event(g) (same
# columns, same JSON shapes, metadata with actor, correlation id and the
# routing key), generated inside Postgres: loading 1M events through append
# would take most of a minute and measure nothing new.
_BULK_LOAD = """
INSERT INTO events (event_id, stream, version, type, schema_version, data, metadata)
SELECT gen_random_uuid(),
       'allocation-' || (g % $3),
       g / $3 + 1,
       CASE WHEN g % 4 = 0 THEN 'BenchCapacityReserved' ELSE 'BenchAllocationRequested' END,
       1,
       CASE WHEN g % 4 = 0
            THEN jsonb_build_object('allocation_id', gen_random_uuid()::text, 'host_id', 'h' || (g % $4),
                                    'cpus', 2.0, 'memory_mb', 512 + 256 * (g % 8))
            ELSE jsonb_build_object('allocation_id', gen_random_uuid()::text, 'user', 'user-' || (g % 50),
                                    'cpus', 2.0, 'memory_mb', 512 + 256 * (g % 8), 'disk_mb', 10240,
                                    'image', 'debian:12-slim')
       END,
       jsonb_build_object('actor', 'user:bench', 'correlation_id', gen_random_uuid()::text)
         || CASE WHEN g % 4 = 0 THEN jsonb_build_object('routing_key', 'h' || (g % $4))
                 ELSE '{}'::jsonb END
FROM generate_series($1::bigint, $2::bigint - 1) AS g
ORDER BY g
"""


async def bulk_load(url: str, total: int, *, chunk: int = 250_000) -> None:
    """Fill a fresh, migrated log with `total` events, then vacuum it as autovacuum would.

    The secondary indexes and unique constraints are dropped for the load and
    built again from their own definitions afterwards (several times faster
    than maintaining them row by row), so the table ends up as the migration
    made it.
    """
    conn = await asyncpg.connect(url)
    try:
        with Stopwatch() as sw:
            constraints = await conn.fetch(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'events'::regclass AND contype = 'u'"
            )
            indexes = await conn.fetch(
                "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
                "WHERE i.indrelid = 'events'::regclass AND NOT i.indisprimary AND NOT EXISTS "
                "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"
            )
            async with conn.transaction():
                for name, _ in constraints:
                    await conn.execute(f'ALTER TABLE events DROP CONSTRAINT "{name}"')
                for name, _ in indexes:
                    await conn.execute(f"DROP INDEX {name}")
                for start in range(0, total, chunk):
                    await conn.execute(_BULK_LOAD, start, min(start + chunk, total), STREAMS, HOSTS)
                await conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
                for name, definition in constraints:
                    await conn.execute(f'ALTER TABLE events ADD CONSTRAINT "{name}" {definition}')
                for _, definition in indexes:
                    await conn.execute(definition)
            await conn.execute("VACUUM (ANALYZE) events")
        say(f"loaded {total:,} events in {sw.seconds:.1f}s (SQL, then VACUUM ANALYZE)")
    finally:
        await conn.close()


async def open_store(url: str, **options: Any) -> EventStore:
    return await EventStore.open(url, events=bench_events, **options)


# --- append ---------------------------------------------------------------


async def bench_append(servers: BenchServers, args: argparse.Namespace) -> None:
    url = await servers.fresh_database("bench_append")
    writers = args.append_writers
    store = await open_store(url, min_size=writers, max_size=writers)
    batch = args.append_batch
    batches = max(1, args.append_events // batch)
    streams = 16
    # Events are built before the clock starts: this measures the store.
    work = [
        (f"allocation-{b % streams}", [make_event(b * batch + i) for i in range(batch)])
        for b in range(batches)
    ]
    total = batches * batch
    queue = iter(work)

    async def writer() -> None:
        for stream, events in queue:
            await store.append(stream, events, metadata=metadata())

    try:
        say(
            f"append: {total:,} events, {batch} per append, {streams} streams, "
            f"{writers} writer(s), durable Postgres"
        )
        # Warm up: each pooled connection prepares the append's statements.
        await asyncio.gather(*(store.append(f"warm-up-{w}", [make_event(w)]) for w in range(writers)))
        with Stopwatch() as sw, CpuTime() as cpu:
            await asyncio.gather(*(writer() for _ in range(writers)))
        assert await store.pool.fetchval("SELECT count(*) FROM events") == total + writers
        if args.profile:
            again = [(f"profiled-{stream}", events) for stream, events in work[: max(1, batches // 4)]]
            with profiled(f"{len(again) * batch:,} more events appended the same way"):
                for stream, events in again:
                    await store.append(stream, events, metadata=metadata())
    finally:
        await store.close()
    record(
        "append_batched",
        total / sw.seconds,
        "events/s",
        batch_size=batch,
        events=total,
        streams=streams,
        writers=writers,
        seconds=round(sw.seconds, 3),
        cpu_seconds=round(cpu.seconds, 3),
    )


# --- replay ---------------------------------------------------------------


@dataclass
class Projection:
    """A trivial read model: events per type and each stream's version."""

    counts: Counter[str]
    versions: dict[str, int]
    memory_mb: int = 0
    #: CPU time of this process during the pass (not counted by the projection itself).
    cpu_seconds: float = 0.0


def type_only(p: Projection, e: RecordedEvent) -> None:
    # Does NOT parse `data`: replays that route on the type pay no JSON cost
    # (RecordedEvent.data is parsed lazily, on first use).
    p.counts[e.type] += 1
    p.versions[e.stream] = e.version


def parsed(p: Projection, e: RecordedEvent) -> None:
    # Parses each event's data JSON (json.loads through RecordedEvent.data).
    type_only(p, e)
    p.memory_mb += e.data["memory_mb"]


def typed(p: Projection, e: RecordedEvent) -> None:
    # Decodes each event into its pydantic class (upcasting if needed), as services do.
    type_only(p, e)
    event = bench_events.decode_record(e)
    assert isinstance(event, BenchAllocationRequested | BenchCapacityReserved)
    p.memory_mb += event.memory_mb


async def replay_pass(
    store: EventStore, batch: int, project: Callable[[Projection, RecordedEvent], None]
) -> tuple[Projection, float]:
    p = Projection(Counter(), {})
    after = 0
    with Stopwatch() as sw, CpuTime() as cpu:
        while events := await store.read_all(after, batch):
            for e in events:
                project(p, e)
            after = events[-1].position
    p.cpu_seconds = cpu.seconds
    return p, sw.seconds


class CpuTime:
    """``with CpuTime() as cpu: ...`` then ``cpu.seconds``: this process's CPU time (all
    threads), which a busy machine inflates far less than the wall time."""

    def __init__(self) -> None:
        self.started = 0.0
        self.seconds = 0.0

    def __enter__(self) -> "CpuTime":
        self.started = time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.process_time() - self.started


async def raw_pass(store: EventStore, batch: int) -> tuple[int, float]:
    """The query read_all sends, on the bare driver, building no events: the baseline."""
    sql = (
        f"SELECT {STORE_COLUMNS} FROM events WHERE position > $1 AND position <= $2 "
        "ORDER BY position LIMIT $3"
    )
    after, n = 0, 0
    with Stopwatch() as sw:
        while rows := await store.pool.fetch(sql, after, 2**63 - 1, batch):
            n += len(rows)
            after = rows[-1][0]
    return n, sw.seconds


async def bench_replay(servers: BenchServers, args: argparse.Namespace) -> None:
    url = await servers.fresh_database("bench_replay")
    store = await open_store(url, max_size=2)
    total, batch = args.replay_events, args.replay_batch
    try:
        await bulk_load(url, total)
        await raw_pass(store, batch)  # warms Postgres' buffers and the page cache
        raw_count, raw_seconds = await raw_pass(store, batch)
        assert raw_count == total, (raw_count, total)
        raw_rate = total / raw_seconds
        say(f"replay baseline (asyncpg fetch only): {raw_rate:,.0f} events/s")

        for metric, project in (
            ("replay", type_only),
            ("replay_parsed", parsed),
            ("replay_typed", typed),
        ):
            projection, seconds = await replay_pass(store, batch, project)
            assert sum(projection.counts.values()) == total
            assert len(projection.versions) == min(STREAMS, total)
            record(
                metric,
                total / seconds,
                "events/s",
                baseline=raw_rate,
                batch_size=batch,
                events=total,
                seconds=round(seconds, 3),
                cpu_seconds=round(projection.cpu_seconds, 3),
                projection={
                    "replay": "type and stream only, data not parsed",
                    "replay_parsed": "data JSON parsed, one field summed",
                    "replay_typed": "each event decoded into its pydantic class",
                }[metric],
            )
        if args.profile:
            await profile_replay(store, batch)
    finally:
        await store.close()


@contextlib.contextmanager
def profiled(what: str) -> Iterator[None]:
    """cProfile the block; the top of the profile, by own time, goes to stderr.

    Time the process spends waiting for its servers shows as `poll` of `select.epoll`.
    """
    profiler = cProfile.Profile()
    with Stopwatch() as sw:
        profiler.enable()
        try:
            yield
        finally:
            profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime")
    stats.print_stats(25)
    say(f"profile of {what} ({sw.seconds:.1f}s under cProfile), by own time:")
    print(out.getvalue(), file=sys.stderr)


async def profile_replay(store: EventStore, batch: int) -> None:
    """cProfile one type-only and one typed replay pass."""
    for name, project in (("type-only", type_only), ("typed", typed)):
        with profiled(f"one {name} replay pass"):
            await replay_pass(store, batch, project)


# --- relay ----------------------------------------------------------------


async def connect_nats(url: str, name: str) -> NATS:
    return await nats.connect(url, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.2)


async def reset_streams(nc: NATS) -> None:
    js = nc.jetstream()
    for spec in bus.STREAMS:
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(spec.name)


async def stop(*tasks: "asyncio.Task[None]") -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    watch: Sequence["asyncio.Task[None]"] = (),
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for task in watch:
            if task.done():
                task.result()  # raises what ended it
                raise RuntimeError(f"{task.get_name()} stopped while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


async def relay_run(
    db_url: str, nats_url: str, total: int, batch: int, *, profile: bool = False
) -> tuple[float, float, int]:
    """Seconds (wall, and CPU of this process) for a fresh relay to publish a pre-filled log
    of `total` events (`profile`: under cProfile, the load excluded)."""
    store = await open_store(db_url, max_size=4)
    await bulk_load(db_url, total)
    nc = await connect_nats(nats_url, "bench-relay")
    try:
        await reset_streams(nc)
        head = await store.head_position()
        relay = OutboxRelay(store, nc.jetstream(), name="bench", batch_size=batch)
        with (
            profiled(f"a relay publishing {total:,} events") if profile else contextlib.nullcontext(),
            Stopwatch() as sw,
            CpuTime() as cpu,
        ):
            task = asyncio.create_task(relay.run(), name="relay")
            try:
                await wait_for(lambda: relay.checkpoint >= head, max(60.0, total / 500), "the relay", [task])
            finally:
                await stop(task)
        info = await nc.jetstream().stream_info(bus.EVENTS_STREAM)
        assert info.state.messages == total, (info.state.messages, total)
        return sw.seconds, cpu.seconds, relay.duplicates
    finally:
        await nc.close()
        await store.close()


async def bench_relay(servers: BenchServers, args: argparse.Namespace) -> None:
    total, batch = args.relay_events, args.relay_batch
    say(f"relay: {total:,} events, batch {batch}, JetStream default sync interval")
    seconds, cpu_seconds, duplicates = await relay_run(
        await servers.fresh_database("bench_relay"), servers.nats_url, total, batch
    )
    record(
        "relay_publish",
        total / seconds,
        "events/s",
        batch_size=batch,
        events=total,
        seconds=round(seconds, 3),
        cpu_seconds=round(cpu_seconds, 3),
        duplicates=duplicates,
        jetstream_sync="default",
    )
    if args.profile:
        await relay_run(
            await servers.fresh_database("bench_relay_profiled"),
            servers.nats_url,
            total // 4,
            batch,
            profile=True,
        )
    if args.sync_always_events > 0:
        total = args.sync_always_events
        say(f"relay: {total:,} events, batch {batch}, JetStream sync_interval: always")
        server = servers.start_nats(
            "nats-sync-always", config_text="jetstream {\n  sync_interval: always\n}\n"
        )
        try:
            seconds, _, duplicates = await relay_run(
                await servers.fresh_database("bench_relay_sync"), server.url, total, batch
            )
        finally:
            server.stop()
        record(
            "relay_publish_sync_always",
            total / seconds,
            "events/s",
            batch_size=batch,
            events=total,
            seconds=round(seconds, 3),
            duplicates=duplicates,
            jetstream_sync="always",
        )


# --- append to consumer -----------------------------------------------------


async def bench_latency(servers: BenchServers, args: argparse.Namespace) -> None:
    url = await servers.fresh_database("bench_latency")
    pool_size = 10
    store = await open_store(url, min_size=pool_size, max_size=pool_size)
    consumer_nc = await connect_nats(servers.nats_url, "bench-consumer")
    await reset_streams(consumer_nc)
    sent: dict[uuid.UUID, float] = {}
    seen: dict[uuid.UUID, float] = {}
    append_calls: list[float] = []

    async def handle(delivered: LoggedEvent) -> None:
        seen[delivered.event_id] = time.monotonic()

    consumer = event_subscriber(
        consumer_nc,
        durable="bench-latency",
        subjects=["potluck.evt.>"],
        handle=handle,
        events=bench_events,
    )
    tasks = [asyncio.create_task(consumer.run(), name="consumer")]
    relay_process: ChildProcess | None = None
    relay_nc: NATS | None = None
    relay_store: EventStore | None = None
    if args.relay_in_process:
        # The relay has a pool of its own, as in a process of its own: appends
        # queued for the table lock never hold up its reads.
        relay_store = await open_store(url, max_size=2, migrate=False)
        relay_nc = await connect_nats(servers.nats_url, "bench-relay")
        relay = OutboxRelay(relay_store, relay_nc.jetstream(), name="bench")
        tasks.append(asyncio.create_task(relay.run(), name="relay"))
    else:
        # As deployed: `potluck relay`, a process of its own, on the other core.
        relay_process = ChildProcess(
            [sys.executable, "-m", "potluck", "relay", "--database-url", url, "--nats-url", servers.nats_url],
            log_path=servers.workdir / "bench-relay.log",
        )
        relay_process.start()

    async def append_one(i: int) -> None:
        new = NewEvent(make_event(4 * i), metadata=metadata())  # a routed BenchCapacityReserved
        started = time.monotonic()
        sent[new.event_id] = started
        await store.append(f"host-{i % HOSTS}", [new])
        append_calls.append(time.monotonic() - started)

    try:
        # Warm up before the clock runs: the relay leads, the consumer exists,
        # and every pooled connection has prepared the append's statements
        # (asyncpg's first use of a statement on a connection costs ~50 ms).
        warm_up = 5 * pool_size
        await asyncio.gather(*(append_one(-1 - i) for i in range(warm_up)))
        await wait_for(lambda: len(seen) == warm_up, 30, "the warm-up events", tasks)
        sent.clear()
        seen.clear()
        append_calls.clear()

        rate, total = args.latency_rate, int(args.latency_rate * args.latency_seconds)
        say(f"append-to-consumer: {total:,} single-event appends at {rate:,}/s with a relay and a consumer")
        appends: list[asyncio.Task[None]] = []
        late = 0.0
        started = time.monotonic()
        for i in range(total):
            # Open loop: each append starts on schedule, however long the previous one takes.
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late = max(late, -delay)
            appends.append(asyncio.create_task(append_one(i)))
        await asyncio.gather(*appends)
        elapsed = time.monotonic() - started
        await wait_for(lambda: len(seen) >= total, 60, "every event at the consumer", tasks)
    finally:
        await stop(*tasks)
        if relay_process is not None:
            relay_process.stop()
        if relay_nc is not None:
            await relay_nc.close()
        if relay_store is not None:
            await relay_store.close()
        await consumer_nc.close()
        await store.close()
    latencies = [(seen[k] - sent[k]) * 1000 for k in sent]
    calls = [c * 1000 for c in append_calls]
    common = {
        "events": total,
        "rate_per_s": rate,
        "achieved_rate_per_s": round(total / elapsed, 1),
        "max_schedule_lag_ms": round(late * 1000, 3),
        "relay": "in process" if args.relay_in_process else "potluck relay process",
    }
    record("append_to_consumer_p50", percentile(latencies, 50), "ms", **common)
    record(
        "append_to_consumer_p99",
        percentile(latencies, 99),
        "ms",
        max_ms=round(max(latencies), 3),
        append_call_p50_ms=round(percentile(calls, 50), 3),
        append_call_p99_ms=round(percentile(calls, 99), 3),
        **common,
    )


# --- main -------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ops/bench events",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes: a smoke run of every part in seconds (figures mean little)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=PARTS,
        help="run only this part (repeatable); default: all",
    )
    parser.add_argument("--append-events", type=int, default=200_000)
    parser.add_argument("--append-batch", type=int, default=500, help="events per append call")
    parser.add_argument("--append-writers", type=int, default=1, help="concurrent appending tasks")
    parser.add_argument("--replay-events", type=int, default=1_000_000)
    parser.add_argument("--replay-batch", type=int, default=10_000, help="limit of each read_all")
    parser.add_argument("--relay-events", type=int, default=100_000)
    parser.add_argument("--relay-batch", type=int, default=500, help="the relay's batch size")
    parser.add_argument(
        "--sync-always-events",
        type=int,
        default=20_000,
        help="events for relay_publish_sync_always (0: skip it)",
    )
    parser.add_argument("--latency-rate", type=int, default=1000, help="appends per second")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument(
        "--relay-in-process",
        action="store_true",
        help="append-to-consumer: run the relay in the benchmark's process, not as `potluck relay`",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after each part's measurement, cProfile a further run of it (stderr): appends, "
        "a type-only and a typed replay pass, a relay over a quarter of the events",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.append_events = min(args.append_events, 5_000)
        args.replay_events = min(args.replay_events, 50_000)
        args.relay_events = min(args.relay_events, 5_000)
        args.sync_always_events = min(args.sync_always_events, 1_000)
        args.latency_seconds = min(args.latency_seconds, 1.0)
    return args


def summary(results: dict[str, float], quick: bool) -> None:
    say(
        "summary against the targets (2-core machine; see bench/README.md)"
        + (" - quick run, figures are not representative" if quick else "")
    )
    for metric, (op, target) in TARGETS.items():
        value = results.get(metric)
        if value is None:
            continue
        met = value >= target if op == ">=" else value <= target
        say(f"  {metric:<24} {value:>14,.1f}   target {op} {target:,}   {'met' if met else 'MISSED'}")


async def run(servers: BenchServers, args: argparse.Namespace) -> None:
    parts = args.only or PARTS
    steps = {
        "append": bench_append,
        "replay": bench_replay,
        "relay": bench_relay,
        "latency": bench_latency,
    }
    for part in PARTS:
        if part in parts:
            await steps[part](servers, args)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with bench_servers() as servers:
        asyncio.run(run(servers, args))
    summary(RESULTS, args.quick)


if __name__ == "__main__":
    main()
