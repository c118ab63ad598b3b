"""Group commit: appends that arrive while one is committing share the next transaction.

Appends are serialised by the table lock anyway (see store.py), so concurrent
appends from one process only ever waited for each other; each paid for its
own BEGIN, LOCK, version check, INSERT, NOTIFY and COMMIT, with the lock held
across all of those round trips. Here one task commits at a time and takes
every append queued meanwhile into its transaction, so under load the cost of
a transaction (and of its fsync) is shared by many appends, and at low load an
append still goes out at once.

Every append keeps its own outcome: its expected versions are checked against
the log as extended by the appends before it in the same group, and one that
conflicts is refused alone. An event id that is already logged is only found by
the INSERT, which aborts the whole transaction; the group is then committed
again one append per transaction, so that only the offending append fails.
"""

import asyncio
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any
from uuid import UUID

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from potluck.events.errors import WrongExpectedVersion
from potluck.events.ids import random_ids
from potluck.events.schema import JsonDict, RecordedEvent
from potluck.events.tracing import tracer

#: Bounds one group's transaction (the table lock is held for all of it).
MAX_GROUP_EVENTS = 5000


@dataclass(frozen=True)
class EncodedEvent:
    """One event ready for the INSERT; encoded before the lock is taken."""

    #: None: a random one is drawn when the rows are built (log_rows).
    event_id: UUID | None
    type: str
    schema_version: int
    data_json: str
    metadata: JsonDict
    metadata_json: str


@dataclass(frozen=True)
class EncodedStream:
    stream: str
    events: Sequence[EncodedEvent]
    expected_version: int | None


@dataclass
class PendingAppend:
    """One caller's append_streams call, waiting for its group's transaction."""

    streams: Sequence[EncodedStream]
    done: "asyncio.Future[list[RecordedEvent]]"
    #: The append's span; its group's commit is traced as the child of the first append's.
    span: trace.Span = field(default_factory=trace.get_current_span)
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = sum(len(s.events) for s in self.streams)


#: Commits a list of appends in one transaction; resolves each append's future.
CommitGroup = Callable[[list[PendingAppend]], Coroutine[Any, Any, None]]


class GroupCommitter:
    """Queues appends and commits them, a group per transaction, from one task."""

    def __init__(self, commit: CommitGroup) -> None:
        self._commit = commit
        self._queue: list[PendingAppend] = []
        self._worker: asyncio.Task[None] | None = None

    def enqueue(self, streams: Sequence[EncodedStream]) -> "asyncio.Future[list[RecordedEvent]]":
        """Queue an append now and return its outcome to await.

        Appends queued one after the other commit in that order, in one group or
        in successive ones, so a caller may queue an append whose expected
        versions count on the appends it queued before. Cancelling the returned
        future does not withdraw the append (it commits or fails with its group,
        as a COMMIT already sent would); it only stops the wait.
        """
        span = tracer().start_span(
            "events append",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system": "postgresql",
                "potluck.streams": [s.stream for s in streams],
                "potluck.events": sum(len(s.events) for s in streams),
            },
        )
        done: asyncio.Future[list[RecordedEvent]] = asyncio.get_running_loop().create_future()
        done.add_done_callback(partial(_finish, span))
        self._queue.append(PendingAppend(streams, done, span))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain(), name="potluck-group-commit")
        return done

    async def submit(self, streams: Sequence[EncodedStream]) -> list[RecordedEvent]:
        """Queue an append and wait for its outcome (a cancelled caller only stops waiting)."""
        return await asyncio.shield(self.enqueue(streams))

    async def close(self) -> None:
        """Wait for the appends already queued."""
        if self._worker is not None and not self._worker.done():
            await asyncio.wait([self._worker])

    async def _drain(self) -> None:
        while self._queue:
            group = self._take_group()
            try:
                await self._traced(group)
            except asyncio.CancelledError:
                for pending in [*group, *self._queue]:
                    pending.done.cancel()
                self._queue.clear()
                raise
            except Exception as exc:
                # The group's transaction failed as a whole: every append in it did.
                for pending in group:
                    if not pending.done.done():
                        pending.done.set_exception(exc)

    async def _traced(self, group: list[PendingAppend]) -> None:
        links = [Link(p.span.get_span_context()) for p in group[1:]]
        with tracer().start_as_current_span(
            "events commit",
            context=trace.set_span_in_context(group[0].span),
            kind=SpanKind.INTERNAL,
            links=links,
            attributes={"potluck.appends": len(group)},
        ):
            await self._commit(group)

    def _take_group(self) -> list[PendingAppend]:
        size = 0
        taken = 0
        for pending in self._queue:
            if taken and size + pending.size > MAX_GROUP_EVENTS:
                break
            size += pending.size
            taken += 1
        group, self._queue = self._queue[:taken], self._queue[taken:]
        return group


def check_versions(
    group: Sequence[PendingAppend], current: Mapping[str, int]
) -> tuple[list[tuple[PendingAppend, list[int]]], list[tuple[PendingAppend, WrongExpectedVersion]]]:
    """Which appends of the group may go in, in order, and which conflict.

    Each append is checked against `current` as extended by the accepted
    appends before it. Returns the accepted appends with the version of each
    of their streams before them, and the refused ones with their error, which
    the caller hands out only once the group has committed: a conflict that
    an append earlier in a group which then failed caused is no conflict.
    """
    versions = dict(current)
    accepted: list[tuple[PendingAppend, list[int]]] = []
    refused: list[tuple[PendingAppend, WrongExpectedVersion]] = []
    for pending in group:
        conflict = next(
            (
                WrongExpectedVersion(s.stream, s.expected_version, versions.get(s.stream, 0))
                for s in pending.streams
                if s.expected_version is not None and s.expected_version != versions.get(s.stream, 0)
            ),
            None,
        )
        if conflict is not None:
            refused.append((pending, conflict))
            continue
        bases = [versions.get(s.stream, 0) for s in pending.streams]
        for s, base in zip(pending.streams, bases, strict=True):
            versions[s.stream] = base + len(s.events)
        accepted.append((pending, bases))
    return accepted, refused


#: The columns `log_rows` fills, in its rows' order: COPY names them.
COPY_COLUMNS = (
    "position",
    "event_id",
    "stream",
    "version",
    "type",
    "schema_version",
    "data",
    "metadata",
    "recorded_at",
)


def log_rows(
    accepted: Sequence[tuple[PendingAppend, list[int]]], first: int, recorded_at: datetime
) -> tuple[list[tuple[Any, ...]], list[list[RecordedEvent]]]:
    """The rows to COPY (`COPY_COLUMNS`), in the order the events are to be logged, and each
    accepted append's recorded events.

    The i-th event of the group takes position `first + i`; an event that came without an
    id gets a random one.
    """
    ids = iter(random_ids(sum(e.event_id is None for p, _ in accepted for s in p.streams for e in s.events)))
    position = first - 1
    rows: list[tuple[Any, ...]] = []
    results: list[list[RecordedEvent]] = []
    for pending, bases in accepted:
        recorded: list[RecordedEvent] = []
        for s, base in zip(pending.streams, bases, strict=True):
            for i, e in enumerate(s.events, start=1):
                position += 1
                event_id = next(ids) if e.event_id is None else e.event_id
                version = base + i
                rows.append(
                    (
                        position,
                        event_id,
                        s.stream,
                        version,
                        e.type,
                        e.schema_version,
                        e.data_json,
                        e.metadata_json,
                        recorded_at,
                    )
                )
                recorded.append(
                    RecordedEvent(
                        position=position,
                        event_id=event_id,
                        stream=s.stream,
                        version=version,
                        type=e.type,
                        schema_version=e.schema_version,
                        data_json=e.data_json,
                        metadata=e.metadata,
                        recorded_at=recorded_at,
                    )
                )
        results.append(recorded)
    return rows, results


def _finish(span: trace.Span, done: "asyncio.Future[list[RecordedEvent]]") -> None:
    # Retrieving the exception also keeps an outcome nobody awaits any more (a
    # cancelled caller) from being reported as an error never retrieved.
    error = None if done.cancelled() else done.exception()
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end()
