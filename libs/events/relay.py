"""Outbox relay: publishes the log, in order, to JetStream.

- One relay is active at a time: the leader holds a session-level Postgres
  advisory lock on a connection of its own, and writes its checkpoint on that
  same connection, so a relay that lost its connection (and with it the lock)
  cannot move the checkpoint any more.
- Each event goes out with ``Nats-Msg-Id`` = its event id. A relay killed
  between publishing and checkpointing republishes that batch on restart;
  JetStream drops the copies within its duplicate window, and consumers skip
  positions they have already applied for anything older.
- Acks are awaited per batch (every message of the batch is sent before the
  first ack is awaited: batch_publish.py), and only then does the checkpoint move.
"""

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import nats.js.errors
import structlog
from nats.js import JetStreamContext
from opentelemetry.trace import SpanKind

from potluck.events import bus
from potluck.events.batch_publish import BatchAckTimeout, BatchPublisher
from potluck.events.bus import TRANSIENT_BUS_ERRORS
from potluck.events.follower import TRANSIENT_DB_ERRORS, LogFollower
from potluck.events.publishable import why_unpublishable
from potluck.events.schema import RecordedEvent
from potluck.events.store import EventStore
from potluck.events.tracing import context_from, trace_carrier_of, tracer
from potluck.kernel.metrics import PoolMetrics, Sample

log = structlog.get_logger(__name__)


class RelayBehind(Exception):
    """Acks for a batch did not arrive in time; the batch is published again."""


_RETRY_RELAY: tuple[type[BaseException], ...] = (*TRANSIENT_DB_ERRORS, *TRANSIENT_BUS_ERRORS, RelayBehind)


def trace_carrier(record: RecordedEvent) -> dict[str, str]:
    """The trace context the event was appended in; {} without parsing the metadata when it
    carries none (every event, where tracing is off)."""
    if "traceparent" not in record.metadata_json:
        return {}
    return trace_carrier_of(record.metadata)


#: One message as the relay sends it: the event, its subject, data, headers and trace carrier.
_Outgoing = tuple[RecordedEvent, str, bytes, dict[str, str], dict[str, str]]


def relay_headers(record: RecordedEvent, carrier: Mapping[str, str]) -> dict[str, str]:
    return {
        bus.H_MSG_ID: record.event_id_text,
        bus.H_POSITION: str(record.position),
        bus.H_STREAM: record.stream,
        bus.H_VERSION: str(record.version),
        bus.H_TYPE: record.type,
        bus.H_SCHEMA_VERSION: str(record.schema_version),
        bus.H_METADATA: record.metadata_json,
        **carrier,
    }


#: How often a publish is tried again while a stream has no leader.
ELECTION_RETRY_S = 0.2
#: While a stream elects, one retry in this many is logged as a warning (the rest at debug).
_ELECTION_LOG_EVERY = 10


class OutboxRelay:
    def __init__(
        self,
        store: EventStore,
        js: JetStreamContext,
        *,
        name: str = "main",
        batch_size: int = 500,
        ack_timeout: float = 3.0,
        retry_interval: float = 1.0,
    ) -> None:
        # `ack_timeout`: JetStream acks a batch in tens of milliseconds; a longer wait only
        # delays the republish to a stream's new leader after a NATS node dies (bench
        # nats_cluster: 13 s with 10 s), and a wait cut short republishes only what JetStream
        # drops as duplicates (Nats-Msg-Id).
        self.store = store
        self.js = js
        self.name = name
        self.batch_size = batch_size
        self.ack_timeout = ack_timeout
        self.retry_interval = retry_interval
        self.checkpoint = 0
        self.is_leader = False
        self.published = 0
        self.duplicates = 0
        #: Events never published, for good: see publishable.py.
        self.skipped = 0
        self._skipped_through = 0

    async def run(self) -> None:
        """Relay until cancelled; survives Postgres and NATS going away and coming back."""
        # Streams are ensured at start and again only when a publish found no stream and the
        # stream is really gone (a NATS that came back without its store). A publish also finds
        # none while the stream elects a new leader after a node died; ensuring then would
        # wait out the API timeout on every retry, so that case just retries the publish.
        streams_ready = False
        electing = 0  # retries in a row while a stream has no leader
        while True:
            wait = self.retry_interval
            published = self.published
            try:
                if not streams_ready:
                    await bus.ensure_streams(self.js)
                    streams_ready = True
                await self._lead()
            except _RETRY_RELAY as exc:
                electing_now = False
                if isinstance(exc, nats.js.errors.NoStreamResponseError):
                    streams_ready = await self._streams_still_there()
                    electing_now = streams_ready
                # A stream electing a leader refuses at once and is led again 4-9 s after its
                # leader died (nats-server's raft election timeouts); asked again often, the
                # relay publishes within ELECTION_RETRY_S of the new leader, not within 1 s.
                if self.published != published:
                    electing = 0  # it published since the last retry: this is a new run of them
                electing = electing + 1 if electing_now else 0
                if electing_now:
                    wait = min(self.retry_interval, ELECTION_RETRY_S)
                quiet = electing > 1 and electing % _ELECTION_LOG_EVERY != 0
                log.log(
                    logging.DEBUG if quiet else logging.WARNING,
                    "relay.retrying",
                    relay=self.name,
                    error=repr(exc),
                    checkpoint=self.checkpoint,
                    retry_in=wait,
                    retries_while_electing=electing,
                )
            finally:
                self.is_leader = False
            await asyncio.sleep(wait)

    async def _streams_still_there(self) -> bool:
        """After a publish no stream took: do the streams exist? An unanswered question counts
        as yes (the publish is retried, and asks again if it fails the same way)."""
        try:
            return await bus.streams_exist(self.js)
        except _RETRY_RELAY:
            return True

    async def _lead(self) -> None:
        conn = await asyncpg.connect(self.store.dsn, timeout=10)
        try:
            while not await conn.fetchval(  # noqa: ASYNC110 - a lock has no event to wait on
                "SELECT pg_try_advisory_lock(hashtext('potluck-relay:' || $1::text))", self.name
            ):
                await asyncio.sleep(self.retry_interval)
            self.is_leader = True
            # A checkpoint lost to a database crash only means republishing, which
            # Nats-Msg-Id and the consumers' positions absorb: no fsync to wait for.
            await conn.execute("SET synchronous_commit = off")
            await conn.execute(
                "INSERT INTO relay_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING", self.name
            )
            self.checkpoint = int(
                await conn.fetchval("SELECT position FROM relay_checkpoints WHERE name = $1", self.name)
            )
            log.info("relay.leading", relay=self.name, checkpoint=self.checkpoint)
            follower = LogFollower(self.store, after_position=self.checkpoint, batch_size=self.batch_size)
            # The JetStream context's own connection: nats-py keeps it private, and every
            # caller hands the relay `nc.jetstream()`.
            publisher = BatchPublisher(self.js._nc)
            await publisher.start()
            try:
                async for batch in follower.batches():
                    await self._publish(publisher, batch)
                    await conn.execute(
                        "UPDATE relay_checkpoints SET position = $2, updated_at = now() "
                        "WHERE name = $1 AND position < $2",
                        self.name,
                        batch[-1].position,
                    )
                    self.checkpoint = batch[-1].position
            finally:
                await asyncio.shield(publisher.close())
        finally:
            # Closing the session releases the advisory lock.
            await asyncio.shield(conn.close(timeout=2))

    def _publishable(self, batch: Sequence[RecordedEvent], max_payload: int) -> list[_Outgoing]:
        """The batch's messages, without those no publish could ever carry (publishable.py):
        each of those is logged with its position and skipped, never retried for ever."""
        outgoing: list[_Outgoing] = []
        for record in batch:
            carrier = trace_carrier(record)
            subject = bus.event_subject(record)
            data = record.data_json.encode()
            headers = relay_headers(record, carrier)
            why = why_unpublishable(record, data, headers, max_payload)
            if why is None:
                outgoing.append((record, subject, data, headers, carrier))
                continue
            if record.position <= self._skipped_through:
                continue  # a batch published again: said once
            self._skipped_through = record.position
            self.skipped += 1
            log.error(
                "relay.skipped_unpublishable",
                relay=self.name,
                position=record.position,
                stream=record.stream,
                type=record.type,
                error=why,
                skipped_total=self.skipped,
                hint="the event stays in the log and the services fold it from there; "
                "no hostd is sent it over the bus",
            )
        return outgoing

    async def _publish(self, publisher: BatchPublisher, batch: Sequence[RecordedEvent]) -> None:
        started = time.perf_counter()
        outgoing = self._publishable(batch, publisher.nc.max_payload)
        pending = publisher.begin(len(outgoing))
        for index, (record, subject, data, headers, carrier) in enumerate(outgoing):
            # The producer span joins the trace of the request that appended the event; an
            # event appended outside any trace gets none (it would only be a trace of its own).
            with (
                tracer().start_as_current_span(
                    f"relay {record.type}",
                    context=context_from(carrier),
                    kind=SpanKind.PRODUCER,
                    attributes={"potluck.position": record.position, "messaging.system": "nats"},
                )
                if carrier
                else nullcontext()
            ):
                await publisher.send(pending, index, subject, data, headers)
        try:
            duplicates = await publisher.wait(pending, self.ack_timeout)
        except BatchAckTimeout as exc:
            raise RelayBehind(str(exc)) from None
        self.published += len(outgoing)
        self.duplicates += duplicates
        log.debug(
            "relay.published",
            relay=self.name,
            count=len(batch),
            through=batch[-1].position,
            seconds=round(time.perf_counter() - started, 4),
        )


@dataclass(frozen=True)
class RelayLag:
    name: str
    head: int
    checkpoint: int | None
    updated_at: datetime | None

    @property
    def lag(self) -> int:
        return self.head - (self.checkpoint or 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "head": self.head,
            "checkpoint": self.checkpoint,
            "lag": self.lag,
            "checkpoint_updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


async def relay_lag(store: EventStore, name: str = "main") -> RelayLag:
    """How far the relay named `name` is behind the log (it has never run: checkpoint None)."""
    row = await store.pool.fetchrow(
        "SELECT (SELECT coalesce(max(position), 0) FROM events) AS head, "
        "(SELECT position FROM relay_checkpoints WHERE name = $1) AS checkpoint, "
        "(SELECT updated_at FROM relay_checkpoints WHERE name = $1) AS updated_at",
        name,
    )
    assert row is not None
    checkpoint = row["checkpoint"]
    return RelayLag(
        name, int(row["head"]), int(checkpoint) if checkpoint is not None else None, row["updated_at"]
    )


def watch_relay_lag(metrics: PoolMetrics, store: EventStore, name: str = "main") -> None:
    """Sample the relay's lag (events logged, not yet on the bus) into `potluck.relay.lag`."""

    async def sample() -> Sample:
        lag = await relay_lag(store, name)
        return [("potluck.relay.lag", lag.lag, {"relay": name})]

    metrics.add_async_source(sample)
