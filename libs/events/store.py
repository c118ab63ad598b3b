"""The Postgres event store: append with expected versions, read, follow.

Positions follow commit order. Every append takes ``LOCK TABLE events IN
EXCLUSIVE MODE`` inside its transaction (the eventsourcing library's choice),
so a position is drawn only by the one writer that will commit next; a reader
that has seen position N can never later find a committed event below N.
The cost is that appends are serialised, which suits a log written by a few
decision-making services; batches keep the throughput, and appends made
concurrently in one process share a transaction (group_commit.py; figures in
bench/README.md).
We preferred this to Marten-style gap detection on the read side because it
keeps every reader trivial: ``position > last_seen`` is always correct.
Rolled-back appends still burn sequence values, so positions have holes that
will never fill; readers must not wait for them.

Old events may have been moved to `events_archive` (archive.py, migration 0005): reads
go through the view `all_events` (both tables, in one statement, so one snapshot: a move
commits both halves at once and a reader sees an event in one table or the other, never in
none or both). Appends and the version checks need only `events`: the archiver leaves
every stream's latest event there.
"""

import asyncio
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from importlib import resources
from operator import itemgetter
from typing import Any, cast
from uuid import UUID, uuid4

import asyncpg
from asyncpg.pgproto.pgproto import UUID as RowUUID
from opentelemetry.trace import SpanKind

from potluck.events.errors import DuplicateEvent
from potluck.events.group_commit import (
    COPY_COLUMNS,
    EncodedEvent,
    EncodedStream,
    GroupCommitter,
    PendingAppend,
    check_versions,
    log_rows,
)
from potluck.events.schema import Event, EventRegistry, JsonDict, RecordedEvent, readable_metadata, registry
from potluck.events.tracing import current_trace_carrier, tracer

#: Where appends notify: the trigger of migration 0002 names it too.
NOTIFY_CHANNEL = "potluck_events"
_MIGRATION_LOCK = 0x706F746C75636B  # "potluck": one migrator at a time

#: Pass as expected_version to append whatever the stream's version is.
ANY_VERSION: None = None
#: Expected version of a stream that must not exist yet.
NO_STREAM = 0
#: The last position the log's column (a bigint) can hold: a reader asking past it asks for
#: everything there is, not for an error from the driver.
LAST_POSITION = 2**63 - 1


@dataclass(frozen=True)
class NewEvent:
    """An event to append, with its id (derive it from a message id for idempotency)."""

    event: Event
    event_id: UUID = field(default_factory=uuid4)
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamAppend:
    stream: str
    events: Sequence[Event | NewEvent]
    expected_version: int | None = ANY_VERSION


#: What reads select: RecordedEvent's fields, in the order of its constructor (and of
#: `RecordedEvent.__match_args__`), which `_LoggedRow` below relies on.
#: The id comes as text and the time as microseconds since the epoch (exact: extract gives
#: a numeric): asyncpg builds a UUID and a datetime per row otherwise, which made reading a
#: row about a third slower (bench/README.md, "replay"); `_LoggedRow` builds them on first use.
_COLUMNS = (
    "position, event_id::text, stream, version, type, schema_version, data::text, metadata::text, "
    "(extract(epoch FROM recorded_at) * 1000000)::int8"
)

# Appends COPY their rows (a multi-row insert: one WAL record per heap page instead of
# one per row, no arrays for the server to unnest), with what the INSERT's defaults and
# RETURNING gave before drawn here first, in one round trip:
# - the positions, a block of the sequence taken under the table lock (taken before this):
#   every appender holds that lock while it draws, so the block is contiguous, above every
#   committed position, and positions still follow commit order. A rolled-back append
#   burns its block, as it burned its nextval()s;
# - the time, clock_timestamp() as the column's default gives, once for the append.
# Events that come without an id get a random one in Python (group_commit.log_rows): 500
# gen_random_uuid() cost 1.5 ms here, random_ids(500) 0.1 ms.
# Followers are woken by the NOTIFY of a statement-level trigger (migration 0002), which
# COPY fires too.
_DRAW = """
SELECT setval('events_position_seq', nextval('events_position_seq') + $1::int - 1) - $1::int + 1,
       clock_timestamp()
"""

# One backward index probe of (stream, version) per stream. `max(version) ... WHERE
# stream = ANY(...) GROUP BY stream` reads every event of those streams instead, so
# appends slowed down as their streams grew.
_STREAM_VERSIONS = """
SELECT s.stream, (SELECT max(version) FROM events WHERE stream = s.stream)
FROM unnest($1::text[]) AS s(stream)
"""

_DUPLICATE_KEY = re.compile(r"\(event_id\)=\(([0-9a-f-]{36})\)")


_METADATA = RecordedEvent.__match_args__.index("metadata")
_EVENT_ID = RecordedEvent.__match_args__.index("event_id")
_RECORDED_AT = RecordedEvent.__match_args__.index("recorded_at")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _LoggedRow(RecordedEvent, asyncpg.Record):
    """An event read from the log: the asyncpg row of `_COLUMNS`, asked for with
    ``record_class=`` so that reading builds no Python object per row.

    The fields are properties reading the row's columns (set up below);
    `metadata`, `event_id` and `recorded_at` are built from their columns on first use,
    `data` as in RecordedEvent.
    """

    # asyncpg refuses a record class with its own __init__ (it never calls one).
    __init__ = asyncpg.Record.__init__

    @cached_property
    def metadata(self) -> JsonDict:  # type: ignore[override]
        return readable_metadata(json.loads(self[_METADATA]))

    @property
    def metadata_json(self) -> str:
        # The column's text as it is (the relay copies it into a header), unless readers take
        # it for none: then as they read it.
        text = cast(str, self[_METADATA])
        return text if text.startswith("{") else "{}"

    @cached_property
    def event_id(self) -> UUID:  # type: ignore[override]
        # asyncpg's own UUID, as a uuid column gives, parsed in C.
        return RowUUID(self[_EVENT_ID])

    @property
    def event_id_text(self) -> str:
        return cast(str, self[_EVENT_ID])

    @cached_property
    def recorded_at(self) -> datetime:  # type: ignore[override]
        # Exact, as asyncpg's own decoder: integer microseconds added to the epoch.
        return _EPOCH + timedelta(microseconds=self[_RECORDED_AT])

    # Rows would otherwise order like tuples (asyncpg.Record's); RecordedEvents do not order.
    def __lt__(self, other: object) -> bool:
        return NotImplemented

    def __le__(self, other: object) -> bool:
        return NotImplemented

    def __gt__(self, other: object) -> bool:
        return NotImplemented

    def __ge__(self, other: object) -> bool:
        return NotImplemented


# Each other field is its column of _COLUMNS, read by a C getter.
for _index, _name in enumerate(RecordedEvent.__match_args__):
    if _index not in (_METADATA, _EVENT_ID, _RECORDED_AT):
        setattr(_LoggedRow, _name, property(itemgetter(_index)))


Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's reset query on release (RESET ALL, UNLISTEN, advisory unlock...), a
    round trip per append and read: the pool's users leave no session state behind (the
    follower and the relay hold connections of their own). asyncpg still rolls back an
    open transaction first."""


class EventStore:
    """Append-only log of domain events in one Postgres table."""

    def __init__(self, pool: asyncpg.Pool, dsn: str, *, events: EventRegistry = registry) -> None:
        self.pool = pool
        self.dsn = dsn
        self.registry = events
        self._committer = GroupCommitter(self._commit_group)

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        events: EventRegistry = registry,
        migrate: bool = True,
        connect_timeout: float = 60.0,
    ) -> "EventStore":
        """`connect_timeout`: seconds a new connection may take (a Postgres that accepts and never
        answers, a stopped one, holds the caller that long); an operator's command waits less."""
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            command_timeout=60,
            timeout=connect_timeout,
            reset=_keep_session,
        )
        store = cls(pool, dsn, events=events)
        if migrate:
            await store.migrate()
        return store

    async def close(self) -> None:
        await self._committer.close()
        await self.pool.close()

    async def migrate(self) -> list[str]:
        """Apply the versioned SQL in migrations/ that this database has not seen. Returns what ran."""
        scripts = sorted(
            (
                p
                for p in resources.files("potluck.events").joinpath("migrations").iterdir()
                if p.name.endswith(".sql")
            ),
            key=lambda p: p.name,
        )
        applied: list[str] = []
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in await conn.fetch("SELECT name FROM schema_migrations")}
            for script in scripts:
                if script.name in done:
                    continue
                await conn.execute(script.read_text())
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", script.name)
                applied.append(script.name)
        return applied

    async def append(
        self,
        stream: str,
        events: Sequence[Event | NewEvent],
        *,
        expected_version: int | None = ANY_VERSION,
        metadata: Mapping[str, Any] | None = None,
        connection: Connection | None = None,
    ) -> list[RecordedEvent]:
        return await self.append_streams(
            [StreamAppend(stream, events, expected_version)],
            metadata=metadata,
            connection=connection,
        )

    async def append_streams(
        self,
        appends: Sequence[StreamAppend],
        *,
        metadata: Mapping[str, Any] | None = None,
        connection: Connection | None = None,
    ) -> list[RecordedEvent]:
        """Append to several streams atomically, each checked against its expected version.

        Raises WrongExpectedVersion (naming the stream, expected and actual
        version) or DuplicateEvent; in either case nothing of the batch is
        written. `connection` enlists the append in the caller's transaction
        (as a savepoint), e.g. to record a consumer position with it.
        """
        if connection is None:
            return await asyncio.shield(self.append_streams_nowait(appends, metadata=metadata))
        _check_streams_once(appends)
        pending = PendingAppend(
            _encode(appends, _common(metadata)), asyncio.get_running_loop().create_future()
        )
        await self._commit(connection, [pending])
        return pending.done.result()

    def append_streams_nowait(
        self, appends: Sequence[StreamAppend], *, metadata: Mapping[str, Any] | None = None
    ) -> "asyncio.Future[list[RecordedEvent]]":
        """Queue an atomic multi-stream append now; await the returned future for its outcome.

        What `append_streams` does, in two steps: appends queued one after the
        other commit in that order (often in one transaction), so a caller can
        queue an append whose expected versions count on those it queued
        before, without waiting for them. Cancelling the future only stops the
        wait; the append still commits or fails.
        """
        _check_streams_once(appends)
        return self._committer.enqueue(_encode(appends, _common(metadata)))

    async def _commit_group(self, group: list[PendingAppend]) -> None:
        async with self.pool.acquire() as conn:
            try:
                await self._commit(conn, group)
            except DuplicateEvent:
                if len(group) == 1:
                    raise
                # Only the INSERT knows which append it was: one transaction each.
                for pending in group:
                    try:
                        await self._commit(conn, [pending])
                    except DuplicateEvent as exc:
                        pending.done.set_exception(exc)

    async def _commit(self, conn: Connection, group: list[PendingAppend]) -> None:
        """Append the group in one transaction (a savepoint inside the caller's), then hand
        each append its outcome."""
        recorded: list[list[RecordedEvent]] = []
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE events IN EXCLUSIVE MODE")
                rows = await conn.fetch(
                    _STREAM_VERSIONS, list({s.stream for pending in group for s in pending.streams})
                )
                accepted, refused = check_versions(group, {r[0]: r[1] or 0 for r in rows})
                count = sum(pending.size for pending, _ in accepted)
                if count:
                    drawn = await conn.fetchrow(_DRAW, count)
                    assert drawn is not None  # one row, always
                    copied, recorded = log_rows(accepted, drawn[0], drawn[1])
                    # asyncpg's OpenTelemetry instrumentation traces statements, not COPY: this
                    # span keeps the append's write in its trace, as the INSERT's span did.
                    with tracer().start_as_current_span(
                        "COPY", kind=SpanKind.CLIENT, attributes=_copy_span_attributes(len(copied))
                    ):
                        await conn.copy_records_to_table("events", records=copied, columns=COPY_COLUMNS)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "events_stream_version_key":
                # Cannot happen under the table lock unless someone bypassed it.
                raise
            ids = [UUID(m) for m in _DUPLICATE_KEY.findall(getattr(exc, "detail", "") or "")]
            raise DuplicateEvent(ids) from None
        for (pending, _), events in zip(accepted, recorded, strict=True):
            if not pending.done.done():
                pending.done.set_result(events)
        for pending, conflict in refused:
            if not pending.done.done():
                pending.done.set_exception(conflict)

    async def read_stream(self, stream: str, *, after_version: int = 0) -> list[RecordedEvent]:
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM all_events WHERE stream = $1 AND version > $2 ORDER BY version",
            stream,
            after_version,
            record_class=_LoggedRow,
        )
        return cast(list[RecordedEvent], rows)

    async def read_category(self, category: str) -> list[RecordedEvent]:
        """Every event of the streams named `category-...`, in log order: for a category of few,
        short streams (users), read whole; the log's others are not looked at one by one."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM all_events WHERE starts_with(stream, $1) ORDER BY position",
            f"{category}-",
            record_class=_LoggedRow,
        )
        return cast(list[RecordedEvent], rows)

    async def read_all(
        self, after_position: int = 0, limit: int = 1000, *, until_position: int | None = None
    ) -> list[RecordedEvent]:
        """Up to `limit` events after `after_position` (and at most `until_position`), in log order."""
        if after_position >= LAST_POSITION:
            return []
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM all_events WHERE position > $1 AND position <= $2 "
            "ORDER BY position LIMIT $3",
            after_position,
            LAST_POSITION if until_position is None else min(until_position, LAST_POSITION),
            limit,
            record_class=_LoggedRow,
        )
        return cast(list[RecordedEvent], rows)

    async def read_at(self, positions: Collection[int]) -> list[RecordedEvent]:
        """The events at `positions` that the log holds (archived ones too), in log order."""
        if not positions:
            return []
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM all_events WHERE position = ANY($1::int8[]) ORDER BY position",
            list(positions),
            record_class=_LoggedRow,
        )
        return cast(list[RecordedEvent], rows)

    async def stream_version(self, stream: str) -> int:
        # A stream's latest event is never archived.
        version = await self.pool.fetchval("SELECT max(version) FROM events WHERE stream = $1", stream)
        return int(version or 0)

    async def head_position(self) -> int:
        # The log's last event is its stream's latest, never archived.
        head = await self.pool.fetchval("SELECT max(position) FROM events")
        return int(head or 0)

    async def log_clock(self) -> datetime:
        """The log's clock: what `recorded_at` of an append made now would say. Deadlines counted
        from an event's `recorded_at` are compared with this, not with this machine's clock."""
        now = await self.pool.fetchval("SELECT clock_timestamp()")
        return cast(datetime, now)

    async def contains(self, event_id: UUID) -> bool:
        return bool(
            await self.pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM events WHERE event_id = $1) "
                "OR EXISTS (SELECT 1 FROM events_archive WHERE event_id = $1)",
                event_id,
            )
        )


_COPY_STATEMENT = f"COPY events ({', '.join(COPY_COLUMNS)}) FROM STDIN (FORMAT binary)"


def _copy_span_attributes(rows: int) -> dict[str, str | int]:
    # Both names of the statement attribute: the instrumentation's older and newer conventions.
    return {
        "db.system": "postgresql",
        "db.statement": _COPY_STATEMENT,
        "db.query.text": _COPY_STATEMENT,
        "db.operation.name": "COPY",
        "db.collection.name": "events",
        "potluck.rows": rows,
    }


def _check_streams_once(appends: Sequence[StreamAppend]) -> None:
    streams = [a.stream for a in appends]
    if len(set(streams)) != len(streams):
        raise ValueError("each stream may appear once in an append; merge its events")


def _common(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Metadata every event of an append carries: the caller's trace context and `metadata`."""
    return {**current_trace_carrier(), **(metadata or {})}


def _encode(appends: Sequence[StreamAppend], common: Mapping[str, Any]) -> list[EncodedStream]:
    """Serialise the events outside the transaction, so the table lock waits on no JSON.

    Events of one append mostly share their metadata (the common part and the
    routing key), so it is built and serialised once per distinct value, and
    the recorded events share its dict. Bare events get a random id when their
    rows are built (group_commit.log_rows).
    """
    shared: dict[str | None, tuple[JsonDict, str]] = {}

    def metadata_of(key: str | None, own: Mapping[str, Any]) -> tuple[JsonDict, str]:
        if not own and key in shared:
            return shared[key]
        meta = dict(common)
        meta.update(own)
        if key is not None:
            meta["routing_key"] = key
        encoded = (meta, json.dumps(meta))
        if not own:
            shared[key] = encoded
        return encoded

    streams: list[EncodedStream] = []
    for a in appends:
        events: list[EncodedEvent] = []
        for item in a.events:
            event, event_id, own = (
                (item.event, item.event_id, item.metadata) if isinstance(item, NewEvent) else (item, None, {})
            )
            meta, meta_json = metadata_of(event.routing_key(), own)
            events.append(
                EncodedEvent(
                    event_id=event_id,
                    type=type(event).type_name,
                    schema_version=event.schema_version,
                    data_json=event.model_dump_json(),
                    metadata=meta,
                    metadata_json=meta_json,
                )
            )
        streams.append(EncodedStream(a.stream, events, a.expected_version))
    return streams
