"""Small waiting and bookkeeping helpers shared by the tests."""

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any
from uuid import UUID

import pytest
import structlog
from structlog.testing import LogCapture

from potluck.contracts.capacity import Capacity
from potluck.contracts.compatibility import CONTRACT_VERSION
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import HostEnrolled, HostRegistered
from potluck.events import EventStore, LoggedEvent
from potluck.kernel.cancellation import cancel_until_done, task_whereabouts


async def answer_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    """The body of an HTTP answer whose `head` (through its blank line) was read from `reader`:
    its Content-Length's bytes, on a connection the server may keep open after it."""
    length = int(head.partition(b"Content-Length: ")[2].partition(b"\r\n")[0])
    return await reader.readexactly(length)


def json_log(source: Path | str, event: str | None = None) -> list[dict[str, Any]]:
    """The JSON lines of a service's log (its file, or text already read), in order, each parsed;
    only those whose `event` is `event` when given. Other lines (a server's own words, a
    traceback's) are passed over."""
    text = source.read_text(errors="replace") if isinstance(source, Path) else source
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return lines if event is None else [line for line in lines if line.get("event") == event]


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def stop(*tasks: "asyncio.Task[None]", within_s: float = 30) -> None:
    """Cancel `tasks` until they have ended (a library's wait_for may swallow one cancellation:
    potluck.kernel.cancellation), their errors taken; fail naming where any still waits after
    `within_s`, rather than hang the test until its timeout with no word of where."""
    stuck = await cancel_until_done(tasks, within_s=within_s)
    assert not stuck, "still running after cancelling: " + ", ".join(map(task_whereabouts, stuck))
    for task in tasks:
        if not task.cancelled():
            task.exception()  # taken, as gather(return_exceptions=True) did


def freeze_process(pid: int, within_s: float = 5.0) -> None:
    """SIGSTOP `pid` and return once every thread of it is stopped: the signal is only queued
    when kill() returns, and a thread running on another core goes on for a moment (a server
    frozen so that a request gets no answer answered it in ~1 run of 10 on two cores)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + within_s
    while True:
        states = []
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/stat") as stat:
                    states.append(stat.read().rsplit(")", 1)[1].split()[0])
            except FileNotFoundError:  # a thread that ended meanwhile
                continue
        if states and all(state in ("T", "t") for state in states):
            return
        assert time.monotonic() < deadline, f"process {pid} not stopped within {within_s} s: {states}"
        time.sleep(0.001)


def capture_module_log(module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> LogCapture:
    """Everything `module.log` logs, at every level, whatever another test left configured
    (structlog's `capture_logs` misses a logger cached under an earlier configuration)."""
    capture = LogCapture()
    logger = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[structlog.processors.add_log_level, capture],
        wrapper_class=structlog.BoundLogger,
        cache_logger_on_first_use=False,
    )
    monkeypatch.setattr(module, "log", logger)
    return capture


class Received:
    """A handler that counts what it was handed, per event id."""

    def __init__(self) -> None:
        self.counts: Counter[UUID] = Counter()
        self.positions: list[int] = []
        self.events: list[LoggedEvent] = []

    async def __call__(self, delivered: LoggedEvent) -> None:
        self.counts[delivered.event_id] += 1
        self.positions.append(delivered.position)
        self.events.append(delivered)


def host_registered(**fields: Any) -> HostRegistered:
    """A synthetic host's registration, on the pool's contract: the event's own default is the
    first contract (what a log from before the number means), whose hosts get no work."""
    return HostRegistered(contract=CONTRACT_VERSION, **fields)


#: A synthetic host's engine: no disk quota, so allocations need only the capacity they ask.
LOGGED_ENGINE = EngineFacts(
    version="test", cgroup_version="2", storage_driver="overlay2", disk_quota_supported=False
)


async def host_in_the_log(
    store: EventStore, host_id: str, donated: Capacity, engine: EngineFacts = LOGGED_ENGINE
) -> None:
    """A host enrolled and registered as the registry records one, and no hostd: what is placed
    on it stays placed (stop the pool's registry first, or it finds the host silent)."""
    events = [
        HostEnrolled(host_id=host_id, name=host_id, nkey="UNUSED"),
        host_registered(host_id=host_id, donated=donated, engine=engine, hostd_version="test"),
    ]
    await store.append(f"host-{host_id}", events, expected_version=0)


async def append_raw_row(store: EventStore, stream: str, type_name: str, data: str, metadata: str) -> int:
    """Log a row as a hand-made INSERT or another writer might, under the store's table lock."""
    async with store.pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE events IN EXCLUSIVE MODE")
        position = await conn.fetchval(
            "INSERT INTO events (event_id, stream, version, type, schema_version, data, metadata) "
            "SELECT gen_random_uuid(), $1::text, coalesce(max(version), 0) + 1, $2, 1, $3::jsonb, "
            "$4::jsonb FROM events WHERE stream = $1::text RETURNING position",
            stream,
            type_name,
            data,
            metadata,
        )
    return int(position)
