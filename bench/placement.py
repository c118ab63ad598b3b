"""Placement decisions per second over 10,000 simulated hosts, in process and through the log.

`ops/bench placement [--quick] [--only PART ...]` prints one JSON line per metric:

- placement_in_process (decisions/s): Scheduler.place with best fit over a
  simulated pool, reserving each placement in the Scheduler as it goes and
  releasing the oldest allocations to keep the pool about 70% full (by cpus),
  so decisions are made on a pool that is busy, not empty.
  placement_in_process_spread: the same with the spread strategy. Each record
  also carries `scan_per_s`: the same decisions by `place(...)`, which looks
  at every host (the rule stated plainly), measured on a few hundred.
- placement_through_log (decisions/s): each decision made a fact as the
  allocator makes it under concurrent requests, by the allocator's own code:
  `Outlook.place` on the model's kept placement index, the engine's expected
  versions, one append of AllocationPlaced on `alloc-<id>` and CapacityReserved
  on `capacity-<host_id>`, queued (`append_streams_nowait`) while up to
  `--in-flight` earlier ones still commit; later decisions count the
  reservations in flight (services/allocator/in_flight.py), the store commits
  what is queued in groups, and each append that lands is folded into the
  model by a `Fold`, decoded as the engine's follower decodes it. Durable
  Postgres (fsync on) started for the run. 10,000 hosts are registered in the
  log first (HostEnrolled + HostRegistered, and HostPaused for the 5% not
  schedulable, in big batched appends) and the allocator's model is folded
  from the log; the requests are logged before the clock starts.
  `store_append_per_s` is the same two-stream append with its events built
  beforehand, no placement around it, one at a time: the most one append per
  decision can give when each waits for the one before.
  placement_through_log_one_at_a_time: one decision per append, each append
  awaited (and folded) before the next decision.
  placement_through_log_batched: the same decisions, `--batch` of them
  decided in a row and appended in one transaction (every allocation and
  capacity stream still checked against its expected version): what one
  transaction per 32 decisions gives without the group commit's queue.

The simulated pool: laptops and desktops of 2-16 cpus, 8-64 GiB of memory,
128-1024 GiB of disk; a quarter arm64, 1% with a GPU label, 10% accepting only
some images, 5% suspect, paused or draining (a few change state during the
run). Requests: 0.25-4 cpus, 256 MiB-8 GiB, 1-20 GiB of disk; 10% want arm64,
2% a GPU, most name an image. Everything is seeded: runs are repeatable.

Progress and a summary against the targets go to stderr.
"""

import argparse
import asyncio
import gc
import os
import random
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.harness import BenchServers, Stopwatch, bench_servers, emit, say
from potluck.allocator.capacity import (
    CapacityLedger,
    Placement,
    allocation_placed,
    placement_appends,
    placement_request,
)
from potluck.allocator.decisions import Outlook, placement
from potluck.allocator.in_flight import InFlight, InFlightRequests
from potluck.allocator.model import AllocatorModel
from potluck.allocator.scheduler import (
    HostSnapshot,
    Impossible,
    Placed,
    PlacementRequest,
    Scheduler,
    Strategy,
    Wait,
    place,
)
from potluck.contracts.allocation_events import (
    AllocationPlaced,
    AllocationRequested,
    AllocationSpec,
    CapacityReserved,
    alloc_stream,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.compatibility import CONTRACT_VERSION
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import HostEnrolled, HostPaused, HostRegistered, host_stream
from potluck.events import NO_STREAM, Event, EventStore, Fold, RecordedEvent, StreamAppend, registry

BENCH = "placement"
PARTS = ("in_process", "through_log")
TARGETS: dict[str, tuple[str, float]] = {
    "placement_in_process": (">=", 40_000),  # issue 20
    "placement_through_log": (">=", 8_000),
}
RESULTS: dict[str, float] = {}

MIB = 1 << 20
GIB = 1 << 30
ENGINE = EngineFacts(
    version="27.0", cgroup_version="2", storage_driver="overlay2", disk_quota_supported=False
)
IMAGES = ("debian:12", "ubuntu:24.04", "python:3.12", "potluck-test:1")


def record(metric: str, value: float, unit: str, **extra: Any) -> None:
    emit(BENCH, metric, value, unit, **extra, load_avg_1m=round(os.getloadavg()[0], 2))
    RESULTS[metric] = value


# --- the simulated pool ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SimHost:
    host_id: str
    donated: Capacity
    labels: dict[str, str]
    allowed_images: tuple[str, ...]
    schedulable: bool


def simulated_hosts(n: int, seed: int = 1) -> list[SimHost]:
    rnd = random.Random(seed)
    hosts = []
    for i in range(n):
        labels = {"arch": "arm64" if rnd.random() < 0.25 else "amd64", "os": "linux"}
        if rnd.random() < 0.01:
            labels["gpu"] = "yes"
        hosts.append(
            SimHost(
                host_id=f"host-{i:05d}",
                donated=Capacity(
                    cpus=rnd.choice([2, 4, 4, 8, 8, 12, 16]),
                    memory_bytes=rnd.choice([8, 16, 16, 32, 64]) * GIB,
                    disk_bytes=rnd.choice([128, 256, 512, 1024]) * GIB,
                ),
                labels=labels,
                allowed_images=("debian:*", "ubuntu:*") if rnd.random() < 0.1 else (),
                schedulable=rnd.random() >= 0.05,
            )
        )
    return hosts


def simulated_requests(n: int, seed: int = 2) -> list[AllocationRequested]:
    rnd = random.Random(seed)
    requests = []
    for i in range(n):
        constraints: dict[str, str] = {}
        roll = rnd.random()
        if roll < 0.10:
            constraints = {"arch": "arm64"}
        elif roll < 0.12:
            constraints = {"gpu": "yes"}
        resources = Capacity(
            cpus=rnd.choice([0.25, 0.5, 1, 1, 2, 2, 4]),
            memory_bytes=rnd.choice([256 * MIB, 512 * MIB, GIB, 2 * GIB, 4 * GIB, 8 * GIB]),
            disk_bytes=rnd.choice([1, 5, 10, 20]) * GIB,
        )
        requests.append(
            AllocationRequested(
                alloc_id=f"bench-{i:07d}",
                user=f"user-{i % 20}",
                spec=AllocationSpec(resources=resources, image=rnd.choice(IMAGES)),
                lifetime_s=3600,
                constraints=constraints,
            )
        )
    return requests


def snapshots_of(hosts: Sequence[SimHost]) -> list[HostSnapshot]:
    return [
        HostSnapshot(
            host_id=h.host_id,
            donated=h.donated,
            labels=h.labels,
            schedulable=h.schedulable,
            allowed_images=h.allowed_images,
        )
        for h in hosts
    ]


# --- in process -----------------------------------------------------------------------------------


@dataclass
class Tally:
    placed: int = 0
    waited: int = 0
    impossible: int = 0

    def count(self, decision: object) -> None:
        if isinstance(decision, Placed):
            self.placed += 1
        elif isinstance(decision, Wait):
            self.waited += 1
        elif isinstance(decision, Impossible):
            self.impossible += 1

    def as_dict(self) -> dict[str, int]:
        return {"placed": self.placed, "waited": self.waited, "impossible": self.impossible}


def run_in_process(
    hosts: Sequence[SimHost], requests: Sequence[PlacementRequest], strategy: Strategy, fill: float
) -> tuple[float, Tally, float]:
    """Seconds for every decision (with its upkeep), the tally, and the Scheduler's build time."""
    with Stopwatch() as build:
        scheduler = Scheduler(snapshots_of(hosts))
    capacity = sum(h.donated.cpus for h in hosts if h.schedulable)
    live: deque[tuple[str, Capacity]] = deque()
    reserved = 0.0
    tally = Tally()
    churn = random.Random(3)
    with Stopwatch() as sw:
        for n, request in enumerate(requests):
            decision = scheduler.place(request, strategy)
            tally.count(decision)
            if isinstance(decision, Placed):
                scheduler.reserve(decision.host_id, request.resources)
                live.append((decision.host_id, request.resources))
                reserved += request.resources.cpus
                while reserved > fill * capacity:
                    host_id, amount = live.popleft()
                    scheduler.release(host_id, amount)
                    reserved -= amount.cpus
            if n % 1000 == 999:  # liveness churn: a host goes suspect, another comes back
                host = hosts[churn.randrange(len(hosts))].host_id
                scheduler.set_schedulable(host, not scheduler.snapshot(host).schedulable)
    return sw.seconds, tally, build.seconds


def scan_rate(hosts: Sequence[SimHost], requests: Sequence[PlacementRequest], strategy: Strategy) -> float:
    """Decisions/s of `place(...)` over every snapshot (no index), on an empty pool."""
    snapshots = snapshots_of(hosts)
    with Stopwatch() as sw:
        for request in requests:
            place(snapshots, request, strategy)
    return len(requests) / sw.seconds


def bench_in_process(args: argparse.Namespace) -> None:
    hosts = simulated_hosts(args.hosts)
    requests = [placement_request(r) for r in simulated_requests(args.decisions)]
    runs: list[tuple[Strategy, str]] = [
        ("best_fit", "placement_in_process"),
        ("spread", "placement_in_process_spread"),
    ]
    for strategy, metric in runs:
        say(f"in process: {len(requests):,} {strategy} decisions over {len(hosts):,} hosts")
        seconds, tally, build = run_in_process(hosts, requests, strategy, args.fill)
        scan = scan_rate(hosts, requests[: args.scan_decisions], strategy)
        record(
            metric,
            len(requests) / seconds,
            "decisions/s",
            strategy=strategy,
            hosts=len(hosts),
            decisions=len(requests),
            seconds=round(seconds, 3),
            pool_fill_cpus=args.fill,
            scheduler_build_s=round(build, 3),
            scan_per_s=round(scan, 1),
            **tally.as_dict(),
        )


# --- through the log ------------------------------------------------------------------------------


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def load_hosts(store: EventStore, hosts: Sequence[SimHost], per_append: int = 500) -> None:
    """Enrol and register every host: one stream each, `per_append` streams per transaction."""
    for batch in chunks(hosts, per_append):
        appends = []
        for h in batch:
            events: list[Event] = [
                HostEnrolled(host_id=h.host_id, name=h.host_id, nkey="U" + h.host_id),
                HostRegistered(
                    contract=CONTRACT_VERSION,
                    host_id=h.host_id,
                    donated=h.donated,
                    labels=h.labels,
                    allowed_images=list(h.allowed_images),
                    engine=ENGINE,
                    hostd_version="bench",
                ),
            ]
            if not h.schedulable:
                events.append(HostPaused(host_id=h.host_id, by="member"))
            appends.append(StreamAppend(host_stream(h.host_id), events, NO_STREAM))
        await store.append_streams(appends, metadata={"actor": "operator"})


async def load_requests(store: EventStore, requests: Sequence[AllocationRequested]) -> None:
    for batch in chunks(requests, 500):
        await store.append_streams(
            [StreamAppend(alloc_stream(r.alloc_id), [r], NO_STREAM) for r in batch],
            metadata={"actor": "user:bench"},
        )


class Allocator:
    """What an allocator replica holds and does to place (services/allocator/engine.py): its model
    folded from the log, the requests it has in flight, and each decision made by `Outlook.place`
    on the model's placement index (placement_index.py), with the expected versions the engine
    gives its appends. Quotas and HTTP are left out: placement is measured."""

    def __init__(self, store: EventStore, strategy: Strategy = "best_fit") -> None:
        self.store = store
        self.strategy: Strategy = strategy
        self.model = AllocatorModel()
        self.fold = Fold(self.model, reader="bench")
        self.in_flight = InFlightRequests()

    @property
    def ledger(self) -> CapacityLedger:
        return self.model.ledger

    def land(self, alloc_ids: Sequence[str], recorded: Sequence[RecordedEvent]) -> None:
        """What was just appended, folded as the engine's follower folds it; no longer in flight."""
        self.fold.apply_all(recorded)
        for alloc_id in alloc_ids:
            self.in_flight.settle(alloc_id)

    def decide(self, requested: AllocationRequested, now: datetime) -> tuple[object, list[StreamAppend]]:
        """A decision, and for a placement its two-stream append, counted in flight from now on."""
        outlook = Outlook(self.model, self.in_flight)
        decision = outlook.place(requested, self.strategy)
        if not isinstance(decision, Placed):
            return decision, []
        host_id = decision.host_id
        appends = placement(
            requested,
            host_id,
            now=now,
            alloc_version=1,
            capacity_version=outlook.capacity_version(host_id),
        )
        self.in_flight.add(InFlight(requested.alloc_id, requested.user, requested.spec.resources, host_id))
        return decision, appends

    async def place_one(self, requested: AllocationRequested, now: datetime) -> object:
        decision, appends = self.decide(requested, now)
        if appends:
            try:
                recorded = await self.store.append_streams(appends, metadata={"actor": "allocator"})
            except BaseException:
                self.in_flight.settle(requested.alloc_id)
                raise
            self.land([requested.alloc_id], recorded)
        return decision

    async def place_pipelined(
        self, requests: Sequence[AllocationRequested], now: datetime, tally: Tally, window: int
    ) -> None:
        """As the allocator serves concurrent requests: each decision is its own two-stream
        append, queued at once (`append_streams_nowait`) while up to `window` earlier ones are
        still committing; the decisions made meanwhile count them in flight (in_flight.py), and
        the store commits what is queued in groups."""
        flying: deque[tuple[asyncio.Future[list[RecordedEvent]], str]] = deque()

        async def land_oldest() -> None:
            outcome, alloc_id = flying.popleft()
            try:
                recorded = await outcome
            except BaseException:
                self.in_flight.settle(alloc_id)
                raise
            self.land([alloc_id], recorded)

        for requested in requests:
            decision, appends = self.decide(requested, now)
            tally.count(decision)
            if appends:
                outcome = self.store.append_streams_nowait(appends, metadata={"actor": "allocator"})
                flying.append((outcome, requested.alloc_id))
            while len(flying) >= window:
                await land_oldest()
        while flying:
            await land_oldest()

    async def place_batch(self, batch: Sequence[AllocationRequested], now: datetime, tally: Tally) -> None:
        placements = []
        for requested in batch:
            decision, appends = self.decide(requested, now)
            tally.count(decision)
            if appends:
                placed = appends[0].events[-1]
                assert isinstance(placed, AllocationPlaced)
                placements.append(Placement(placed, 1))
        # One transaction: each capacity stream expects the ledger's version, whatever it holds.
        appends = placement_appends(placements, self.ledger)
        alloc_ids = [p.placed.alloc_id for p in placements]
        try:
            recorded = await self.store.append_streams(appends, metadata={"actor": "allocator"})
        except BaseException:
            for alloc_id in alloc_ids:
                self.in_flight.settle(alloc_id)
            raise
        self.land(alloc_ids, recorded)


async def store_append_rate(
    store: EventStore, requests: Sequence[AllocationRequested], host_id: str, now: datetime
) -> float:
    """Two-stream appends/s of the same events, built beforehand, with no placement around them.

    They go to streams of their own, so the placements measured after see an
    untouched pool. This is the ceiling one append per decision can reach.
    """
    appends = [
        [
            StreamAppend(f"ceiling-{r.alloc_id}", [allocation_placed(r, host_id, now)], NO_STREAM),
            StreamAppend(
                f"ceiling-capacity-{r.alloc_id}",
                [CapacityReserved(host_id=host_id, alloc_id=r.alloc_id, amount=r.spec.resources)],
                NO_STREAM,
            ),
        ]
        for r in requests
    ]
    with Stopwatch() as sw:
        for append in appends:
            await store.append_streams(append, metadata={"actor": "allocator"})
    return len(appends) / sw.seconds


async def check_log(store: EventStore, hosts: Sequence[SimHost], placed: int) -> None:
    """From the log alone: as many reservations as placements, and no host over its donation."""
    ledger = CapacityLedger()
    count = 0
    after = 0
    while records := await store.read_all(after, 10_000):
        for r in records:
            if r.category == "capacity":
                ledger.apply(registry.decode_record(r), version=r.version)
                count += 1
        after = records[-1].position
    assert count == placed, (count, placed)
    for h in hosts:
        assert ledger.reserved(h.host_id).fits_in(h.donated), h.host_id


async def bench_through_log(servers: BenchServers, args: argparse.Namespace) -> None:
    hosts = simulated_hosts(args.hosts)
    single = simulated_requests(args.log_decisions, seed=5)
    batched = [
        r.model_copy(update={"alloc_id": f"batched-{i:07d}"})
        for i, r in enumerate(simulated_requests(args.log_batched_decisions, seed=6))
    ]
    pipelined = [
        r.model_copy(update={"alloc_id": f"piped-{i:07d}"})
        for i, r in enumerate(simulated_requests(args.log_pipelined_decisions, seed=7))
    ]
    url = await servers.fresh_database("bench_placement")
    store = await EventStore.open(url, min_size=2, max_size=4)
    try:
        with Stopwatch() as sw:
            await load_hosts(store, hosts)
        say(f"registered {len(hosts):,} hosts in the log in {sw.seconds:.1f}s")
        warm = [r.model_copy(update={"alloc_id": f"warm-{i}"}) for i, r in enumerate(single[:8])]
        await load_requests(store, warm + single + batched + pipelined)
        allocator = Allocator(store)
        with Stopwatch() as sw:
            await allocator.fold.catch_up(store)
            gc.freeze()  # as the allocator's process does once caught up (AllocatorEngine.freeze_loaded)
            allocator.model.placement.current(
                allocator.model.hosts, allocator.ledger, allocator.model.host_images, allocator.in_flight
            )
        rebuild_s = sw.seconds
        say(f"folded the allocator's model from the log and built its placement index in {rebuild_s:.1f}s")
        now = datetime.now(UTC)

        # Warm up: every pooled connection prepares the append's statements.
        placed = 0
        for r in warm:
            placed += isinstance(await allocator.place_one(r, now), Placed)

        ceiling = await store_append_rate(store, single[: max(1, len(single) // 3)], hosts[0].host_id, now)
        say(f"the store alone: {ceiling:,.0f} two-stream appends/s (prebuilt events, no placement)")

        say(
            f"through the log: {len(pipelined):,} decisions, one two-stream append each, "
            f"up to {args.in_flight} in flight, durable Postgres"
        )
        tally = Tally()
        with Stopwatch() as sw:
            await allocator.place_pipelined(pipelined, now, tally, args.in_flight)
        transactions = await store.pool.fetchval(
            "SELECT count(DISTINCT xmin::text) FROM events "
            "WHERE type = 'CapacityReserved' AND data->>'alloc_id' LIKE 'piped-%'"
        )
        record(
            "placement_through_log",
            len(pipelined) / sw.seconds,
            "decisions/s",
            strategy=allocator.strategy,
            hosts=len(hosts),
            decisions=len(pipelined),
            decisions_per_append=1,
            in_flight=args.in_flight,
            transactions=transactions,
            seconds=round(sw.seconds, 3),
            store_append_per_s=round(ceiling, 1),
            rebuild_from_log_s=round(rebuild_s, 3),
            **tally.as_dict(),
        )
        placed += tally.placed

        say(f"through the log: {len(single):,} decisions, one two-stream append each, one at a time")
        tally = Tally()
        with Stopwatch() as sw:
            for requested in single:
                tally.count(await allocator.place_one(requested, now))
        record(
            "placement_through_log_one_at_a_time",
            len(single) / sw.seconds,
            "decisions/s",
            strategy=allocator.strategy,
            hosts=len(hosts),
            decisions=len(single),
            decisions_per_append=1,
            in_flight=1,
            seconds=round(sw.seconds, 3),
            **tally.as_dict(),
        )
        placed += tally.placed

        say(f"through the log: {len(batched):,} decisions, {args.batch} per append")
        tally = Tally()
        with Stopwatch() as sw:
            for batch in chunks(batched, args.batch):
                await allocator.place_batch(batch, now, tally)
        record(
            "placement_through_log_batched",
            len(batched) / sw.seconds,
            "decisions/s",
            strategy=allocator.strategy,
            hosts=len(hosts),
            decisions=len(batched),
            decisions_per_append=args.batch,
            seconds=round(sw.seconds, 3),
            **tally.as_dict(),
        )
        placed += tally.placed
        await check_log(store, hosts, placed)
        say(f"checked the log: {placed:,} placements, each with its reservation; no host over-committed")
    finally:
        await store.close()


# --- main -------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ops/bench placement",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in seconds")
    parser.add_argument("--only", action="append", choices=PARTS, help="run only this part (repeatable)")
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--decisions", type=int, default=100_000, help="in-process decisions per strategy")
    parser.add_argument(
        "--fill", type=float, default=0.7, help="in process: keep this share of cpus reserved"
    )
    parser.add_argument("--scan-decisions", type=int, default=200, help="decisions for scan_per_s")
    parser.add_argument(
        "--log-pipelined-decisions", type=int, default=10_000, help="one append per decision, pipelined"
    )
    parser.add_argument(
        "--in-flight", type=int, default=64, help="appends queued while earlier ones commit (pipelined run)"
    )
    parser.add_argument(
        "--log-decisions", type=int, default=3_000, help="one append per decision, one at a time"
    )
    parser.add_argument("--log-batched-decisions", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=32, help="decisions per append in the batched run")
    args = parser.parse_args(argv)
    if args.quick:
        args.decisions = min(args.decisions, 5_000)
        args.scan_decisions = min(args.scan_decisions, 20)
        args.log_decisions = min(args.log_decisions, 200)
        args.log_pipelined_decisions = min(args.log_pipelined_decisions, 640)
        args.log_batched_decisions = min(args.log_batched_decisions, 640)
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
        say(f"  {metric:<24} {value:>12,.1f}   target {op} {target:,}   {'met' if met else 'MISSED'}")
    for metric, value in results.items():
        if metric not in TARGETS:
            say(f"  {metric:<24} {value:>12,.1f}   (no target)")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    parts = args.only or PARTS
    started = time.monotonic()
    if "in_process" in parts:
        bench_in_process(args)
    if "through_log" in parts:
        with bench_servers() as servers:
            asyncio.run(bench_through_log(servers, args))
    summary(RESULTS, args.quick)
    say(f"done in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
