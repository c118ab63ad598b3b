"""Shared helpers for the benchmarks.

- ``emit`` prints one metric as one JSON object on one line of stdout, in the
  shape DESIGN.md fixes; everything else (progress, summaries) goes to stderr
  through ``say``, so stdout stays machine-readable.
- ``bench_servers`` starts a durable Postgres (fsync on: the defaults a real
  deployment runs with) and a nats-server with JetStream in a temporary
  directory, and stops them afterwards, also on Ctrl-C or SIGTERM. Servers are
  recorded in $POTLUCK_RUN_DIR like the tests' ones, so `ops/bench` reaps any
  left behind.
- ``percentile`` for latency distributions.
"""

import asyncio
import contextlib
import json
import math
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
import asyncpg

from potluck.localstack import NatsServer, PostgresServer
from potluck.logs import configure_logging

_RESERVED = frozenset({"bench", "metric", "value", "unit", "baseline", "ratio"})
#: The allocator's rate of each user's changes (--change-rate, --change-burst) in the benchmarks:
#: they load it as one user "bench" faster than a real user may (scale.py's stream creates and
#: releases 5 a second), and measure the allocator, not its rate.
BENCH_CHANGE_RATE = (1000.0, 10_000)


def _rounded(value: float) -> float:
    """Enough digits to compare runs, not float noise."""
    if value == 0 or not math.isfinite(value):
        return value
    digits = max(0, 4 - math.floor(math.log10(abs(value))))
    return round(value, digits)


def emit(
    bench: str,
    metric: str,
    value: float,
    unit: str,
    baseline: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Print one metric as a JSON line on stdout and return it.

    With a baseline (the same quantity measured without Potluck in the same
    run), ``ratio`` is value / baseline.
    """
    clash = _RESERVED & extra.keys()
    if clash:
        raise ValueError(f"extra fields may not be named {sorted(clash)}")
    record: dict[str, Any] = {
        "bench": bench,
        "metric": metric,
        "value": _rounded(value),
        "unit": unit,
    }
    if baseline is not None:
        record["baseline"] = _rounded(baseline)
        record["ratio"] = round(value / baseline, 3) if baseline else None
    record.update(extra)
    print(json.dumps(record), flush=True)
    return record


async def wait_active_host(
    http: aiohttp.ClientSession, api: str, headers: dict[str, str], timeout_s: float = 60, *, count: int = 1
) -> None:
    """Until the pool's API lists `count` active hosts (the bench's hostds registered)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with http.get(f"{api}/v1/pool", headers=headers) as response:
            if sum(h["status"] == "active" for h in (await response.json())["hosts"]) >= count:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(
        f"fewer than {count} host(s) became active within {timeout_s:.0f} s; see the pool's logs"
    )


def say(*parts: object) -> None:
    """A progress message, on stderr."""
    print("[bench]", *parts, file=sys.stderr, flush=True)


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0 <= p <= 100), linearly interpolated between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0..100, got {p}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``."""

    def __init__(self) -> None:
        self.started = 0.0
        self.seconds = 0.0

    def __enter__(self) -> "Stopwatch":
        self.started = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.perf_counter() - self.started


class BenchServers:
    """The servers of one benchmark run, all on loopback."""

    def __init__(self, workdir: Path, postgres: PostgresServer, nats: NatsServer) -> None:
        self.workdir = workdir
        self.postgres = postgres
        self.nats = nats
        self._extra: list[NatsServer] = []

    @property
    def postgres_url(self) -> str:
        return self.postgres.url

    @property
    def nats_url(self) -> str:
        return self.nats.url

    def start_nats(self, name: str, *, config_text: str | None = None) -> NatsServer:
        """Another nats-server (e.g. with a config file), stopped with the others."""
        workdir = self.workdir / name
        config: Path | None = None
        if config_text is not None:
            workdir.mkdir(parents=True, exist_ok=True)
            config = workdir / "nats.conf"
            config.write_text(config_text)
        server = NatsServer(workdir, config=config)
        self._extra.append(server)
        server.start()
        return server

    async def fresh_database(self, name: str) -> str:
        """URL of a new, empty database `name` on the Postgres server."""
        base = self.postgres_url.rsplit("/", 1)[0]
        admin = await asyncpg.connect(base + "/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        return f"{base}/{name}"

    def stop(self) -> None:
        for server in [*self._extra, self.nats]:
            with contextlib.suppress(Exception):
                server.stop()
        self.postgres.stop()


def _terminate(signum: int, _frame: FrameType | None) -> None:
    # Unwind through the context managers (and so stop the servers) as on Ctrl-C.
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def bench_servers(workdir: Path | None = None, *, keep: bool = False) -> Iterator[BenchServers]:
    """A durable Postgres and a JetStream nats-server in a temporary directory.

    Logs go to stderr (JSON, WARNING and above) so they never mix with the
    metrics on stdout.
    """
    configure_logging("WARNING", json=True)
    previous = signal.signal(signal.SIGTERM, _terminate)
    root = Path(tempfile.mkdtemp(prefix="potluck-bench-", dir=workdir))
    say(f"starting a durable Postgres and a nats-server in {root}")
    postgres = PostgresServer(root / "postgres", durable=True)
    nats = NatsServer(root / "nats")
    servers = BenchServers(root, postgres, nats)
    try:
        postgres.start()
        nats.start()
        yield servers
    finally:
        say("stopping the servers")
        servers.stop()
        signal.signal(signal.SIGTERM, previous)
        if keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
