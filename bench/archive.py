"""Archiving old events (potluck.events.archive) on a real, durable Postgres.

`ops/bench archive [--events N] [--batch-size B] [--rest R]` prints one JSON line per metric:

- read_all_hot (events/s): read_all (through the view `all_events`) over a log of N events,
  all hot; baseline: the same query on `events` alone, the read path before archiving.
- archive (events/s): events moved by `archive` (batches of B, one transaction each, resting
  R times as long as a batch took after each: `--rest`) from
  the whole log, each stream's latest event left hot.
- append_during_archive_p99 (ms): single-event appends paced at 100/s while the archive
  runs; baseline: the same appends with no archive running. A batch's DELETE and the
  append's table lock exclude each other, so this is what an archive costs the writers.
- read_all_archived (events/s): read_all over the same log once archived; baseline:
  read_all_hot.

The log is bench/events.py's synthetic one (1,000 allocation streams), loaded in SQL.
"""

import argparse
import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any

from bench.events import BenchCapacityReserved, bulk_load, open_store, raw_pass
from bench.harness import BenchServers, Stopwatch, bench_servers, emit, percentile, say
from potluck.events import EventStore
from potluck.events.archive import archive, plan_archive

BENCH = "archive"


def record(metric: str, value: float, unit: str, baseline: float | None = None, **extra: Any) -> None:
    emit(BENCH, metric, value, unit, baseline, **extra, load_avg_1m=round(os.getloadavg()[0], 2))


async def read_pass(store: EventStore, batch: int) -> tuple[int, float]:
    after, n = 0, 0
    with Stopwatch() as sw:
        while events := await store.read_all(after, batch):
            n += len(events)
            after = events[-1].position
    return n, sw.seconds


async def paced_appends(store: EventStore, stop: asyncio.Event, rate: float = 100.0) -> list[float]:
    """Latencies (ms) of one-event appends every 1/rate s until `stop` is set."""
    latencies: list[float] = []
    i = 0
    while not stop.is_set():
        started = time.perf_counter()
        await store.append(
            f"host-bench-{i % 10}",
            [BenchCapacityReserved(allocation_id=f"a{i}", host_id=f"h{i % 10}", cpus=1.0, memory_mb=64)],
        )
        latencies.append((time.perf_counter() - started) * 1000)
        i += 1
        await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - started)))
    return latencies


async def run(servers: BenchServers, args: argparse.Namespace) -> None:
    url = await servers.fresh_database("bench_archive")
    store = await open_store(url, max_size=4)
    try:
        await bulk_load(url, args.events)
        await raw_pass(store, args.read_batch)  # warms the buffers
        total, raw_seconds = await raw_pass(store, args.read_batch)
        n, hot_seconds = await read_pass(store, args.read_batch)
        assert n == total == args.events, (n, total)
        hot_rate = n / hot_seconds
        record("read_all_hot", hot_rate, "events/s", baseline=total / raw_seconds, events=n)

        stop = asyncio.Event()
        quiet = asyncio.create_task(paced_appends(store, stop))
        await asyncio.sleep(3)
        stop.set()
        alone = await quiet

        # A log made for the benchmark: no bus will redeliver into it.
        plan = await plan_archive(store, keep_recent=0, before=await store.head_position() + 1)
        say(f"archiving {plan.movable:,} of {args.events:,} events in batches of {args.batch_size}")
        stop = asyncio.Event()
        during = asyncio.create_task(paced_appends(store, stop))
        with Stopwatch() as sw:
            result = await archive(store, plan, batch_size=args.batch_size, rest=args.rest)
        stop.set()
        busy = await during
        record(
            "archive",
            result.moved / sw.seconds,
            "events/s",
            moved=result.moved,
            batches=result.batches,
            batch_size=args.batch_size,
            rest=args.rest,
            seconds=round(sw.seconds, 2),
        )
        record(
            "append_during_archive_p99",
            percentile(busy, 99),
            "ms",
            baseline=percentile(alone, 99),
            p50_ms=round(percentile(busy, 50), 2),
            appends=len(busy),
            batch_size=args.batch_size,
            rest=args.rest,
        )

        await store.pool.execute("VACUUM (ANALYZE) events")
        await store.pool.execute("VACUUM (ANALYZE) events_archive")
        await read_pass(store, args.read_batch)
        n, archived_seconds = await read_pass(store, args.read_batch)
        assert n == args.events + len(alone) + len(busy), n
        record("read_all_archived", n / archived_seconds, "events/s", baseline=hot_rate, events=n)
    finally:
        await store.close()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ops/bench archive", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the log")
    parser.add_argument("--batch-size", type=int, default=500, help="events moved per transaction")
    parser.add_argument("--rest", type=float, default=1.0, help="rest after a batch, times its duration")
    parser.add_argument("--read-batch", type=int, default=10_000, help="limit of each read_all")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with bench_servers() as servers:
        asyncio.run(run(servers, args))


if __name__ == "__main__":
    main()
