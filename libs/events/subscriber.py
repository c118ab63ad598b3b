"""Durable JetStream pull consumers that never stop on one bad message.

What happens to a message:

- it cannot be decoded (not JSON, unknown type, fails the schema), or the
  handler raises PoisonMessage / a SchemaError: it is published to
  ``potluck.dlq.<consumer>`` with the reason, then terminated; the consumer
  goes on with the next one;
- the handler hits a transient fault (database or bus away): the message is
  retried in place with backoff, as long as it takes, keeping log order;
- the handler raises anything else: a few retries, then the dead-letter path;
- it succeeds: it is acked, and its log position recorded.

Messages carrying a log position at or below the last applied one are acked
without calling the handler: redeliveries and republished events are
idempotent. Consumers process messages one at a time, in stream order, so the
position check is exact.
"""

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry.trace import SpanKind

from potluck.events import bus
from potluck.events.bus import TRANSIENT_BUS_ERRORS
from potluck.events.errors import PoisonMessage, SchemaError
from potluck.events.schema import Event, EventRegistry, readable_metadata, registry
from potluck.events.tracing import context_from, tracer
from potluck.kernel.key_rates import KeyRates, RatePolicy

log = structlog.get_logger(__name__)

#: Dead letters logged per subject: each is kept in the dead-letter stream all the same, but a
#: sender in a loop (a host's subjects take what JetStream answers to another host's requests,
#: services/registry/nats_auth.py) must not flood the service's log.
DEAD_LETTER_LOG_RATE = RatePolicy(per_s=1.0, burst=20)
#: Of a dead letter's reason, this much goes into its header and the log.
DEAD_LETTER_REASON = 1000

#: While messages flow, how long a fetch waits for its batch to fill.
FLOWING_FETCH_S = 0.02

T = TypeVar("T")

_BUS_AWAY: tuple[type[BaseException], ...] = (*TRANSIENT_BUS_ERRORS, nats.js.errors.ServiceUnavailableError)


def _dependency_away() -> tuple[type[BaseException], ...]:
    """What a handler raises when the bus or the database is away for now.

    The database's errors are asyncpg's classes (and OSError). A process that has not loaded
    asyncpg (hostd, which only talks to the bus) cannot meet them, so they are taken only once
    it is loaded rather than loading it, and the store behind it, into every subscriber's process.
    """
    if "asyncpg" in sys.modules:
        from potluck.events.follower import TRANSIENT_DB_ERRORS

        return (*TRANSIENT_DB_ERRORS, *TRANSIENT_BUS_ERRORS)
    return (OSError, *TRANSIENT_BUS_ERRORS)


@dataclass(frozen=True)
class LoggedEvent:
    """A logged event as it arrives from the bus, typed again."""

    position: int
    event_id: UUID
    stream: str
    version: int
    event: Event
    metadata: Mapping[str, Any]
    subject: str
    trace_carrier: Mapping[str, str] = field(default_factory=dict)


def decoder_for_logged_events(events: EventRegistry = registry) -> Callable[[Msg], LoggedEvent]:
    def decode(msg: Msg) -> LoggedEvent:
        headers = msg.headers or {}
        try:
            position = int(headers[bus.H_POSITION])
            event_id = UUID(headers[bus.H_MSG_ID])
            type_name = headers[bus.H_TYPE]
            schema_version = int(headers.get(bus.H_SCHEMA_VERSION, "1"))
            metadata = readable_metadata(json.loads(headers.get(bus.H_METADATA, "{}")))
        except (KeyError, ValueError) as exc:
            raise PoisonMessage(f"not a logged event: missing or bad header ({exc})") from None
        event = events.decode(type_name, schema_version, msg.data)
        return LoggedEvent(
            position=position,
            event_id=event_id,
            stream=headers.get(bus.H_STREAM, ""),
            version=int(headers.get(bus.H_VERSION, "0")),
            event=event,
            metadata=metadata,
            subject=msg.subject,
            trace_carrier={k: v for k, v in headers.items() if k in ("traceparent", "tracestate")},
        )

    return decode


class PositionTracker(Protocol):
    """Where a consumer remembers the last log position it applied."""

    def last(self) -> int: ...

    def advance(self, position: int) -> None: ...


class MemoryPositions:
    def __init__(self, start: int = 0) -> None:
        self._last = start

    def last(self) -> int:
        return self._last

    def advance(self, position: int) -> None:
        self._last = max(self._last, position)


class FilePositions:
    """For consumers without a database (hostd): the position in a small file, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._last = int(path.read_text().strip() or 0)
        except FileNotFoundError:
            self._last = 0

    def last(self) -> int:
        return self._last

    def advance(self, position: int) -> None:
        if position <= self._last:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(str(position))
        tmp.replace(self.path)
        self._last = position


def dead_letter_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """What of a message's own headers its dead letter carries: none of JetStream's.

    A header named `Nats-...` is an order to JetStream when published (the expected stream, last
    sequence or message id, a rollup, a TTL, the message's id for de-duplication), and the
    message's sender chose them all: a host can send a report whose expectations hold in the
    reports stream and fail in the dead-letter stream. Copied onto the dead letter, the
    dead-letter publish was refused, and the error ended the consumer (the allocator's report
    consumer, and the allocator with it) on every redelivery. The rest (trace context, the
    log's own Potluck-* headers) is kept for whoever looks at the dead letter."""
    return {k: v for k, v in (headers or {}).items() if not k.lower().startswith("nats-")}


def _position_of(item: object) -> int | None:
    return item.position if isinstance(item, LoggedEvent) else None


class Subscriber(Generic[T]):
    """One durable pull consumer feeding one handler."""

    def __init__(
        self,
        nc: NATS,
        *,
        durable: str,
        stream: str,
        subjects: list[str],
        decode: Callable[[Msg], T],
        handle: Callable[[T], Awaitable[None]],
        positions: PositionTracker | None = None,
        js: JetStreamContext | None = None,
        batch_size: int = 64,
        fetch_timeout: float = 1.0,
        attempts_before_dead_letter: int = 3,
        max_backoff: float = 5.0,
        create_consumer: bool = True,
        dead_letter_subject: str | None = None,
    ) -> None:
        """`create_consumer=False` binds to a consumer someone else made: hosts may
        read and ack their own consumer but have no right to create one."""
        self.nc = nc
        self.create_consumer = create_consumer
        self.dead_letter_subject = dead_letter_subject or bus.dead_letter_subject(durable)
        self.js = js or nc.jetstream()
        self.durable = durable
        self.stream = stream
        self.subjects = subjects
        self.decode = decode
        self.handle = handle
        self.positions = positions or MemoryPositions()
        self.batch_size = batch_size
        self.fetch_timeout = fetch_timeout
        self.attempts_before_dead_letter = attempts_before_dead_letter
        self.max_backoff = max_backoff
        self.applied = 0
        self.skipped = 0
        self.dead_lettered = 0
        self._dead_letter_logs = KeyRates(DEAD_LETTER_LOG_RATE)
        self._wake = asyncio.Event()
        #: Messages came in the last fetch: ask for a batch next (`_fetch`).
        self._flowing = False

    def consumer_config(self) -> ConsumerConfig:
        one = len(self.subjects) == 1
        return ConsumerConfig(
            durable_name=self.durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=30,
            max_ack_pending=self.batch_size * 4,
            filter_subject=self.subjects[0] if one else None,
            filter_subjects=None if one else self.subjects,
        )

    async def run(self) -> None:
        """Consume until cancelled. Survives NATS restarts (the client reconnects)."""
        backoff = 0.1
        sub: JetStreamContext.PullSubscription | None = None
        try:
            while True:
                try:
                    if sub is None:
                        if self.create_consumer:
                            await self._ensure_consumer()
                        sub = await self.js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
                    msgs = await self._fetch(sub)
                    backoff = 0.1
                except (TimeoutError, nats.errors.TimeoutError):
                    continue  # nothing to fetch within fetch_timeout
                except _BUS_AWAY as exc:
                    log.warning("subscriber.bus_unavailable", consumer=self.durable, error=repr(exc))
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    continue
                except nats.js.errors.NotFoundError:
                    # The consumer (or stream) vanished, e.g. JetStream lost its
                    # state: create it again and carry on from our positions. One that
                    # cannot create its own (a hostd whose host the registry took out
                    # of the pool) asks ever less often until it is made anew.
                    sub = None
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    continue
                for msg in msgs:
                    await self._process(msg)
        finally:
            # A pull subscription left behind holds unprocessed status messages, and the
            # connection's drain at shutdown would wait on them until its own timeout.
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    def wake(self) -> None:
        """Give up the fetch now waiting and ask again: after a reconnect, a long fetch's pull
        request may have died with the old server, and would otherwise be waited out."""
        self._wake.set()

    async def _fetch(self, sub: JetStreamContext.PullSubscription) -> list[Msg]:
        """The next messages. nats-py's fetch of a batch returns once the batch is full or
        its time is up, even after a first message came (nats/js/client.py, `_fetch_n`), so
        an idle consumer that asked for a batch over `fetch_timeout` held a lone event for up
        to the rest of that second (0.2-0.9 s, measured in `ops/bench allocation`). Idle, it
        asks for one message, which comes back at once; while messages flow, for a batch over
        FLOWING_FETCH_S; a fetch that finds nothing in that time makes it idle again."""
        self._wake.clear()
        if self._flowing:
            asked = sub.fetch(self.batch_size, timeout=FLOWING_FETCH_S)
        else:
            asked = sub.fetch(1, timeout=self.fetch_timeout)
        self._flowing = False
        fetch = asyncio.ensure_future(asked)
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({fetch, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            if not fetch.done():
                fetch.cancel()
                # What it would have fetched stays in the subscription's queue for the next fetch.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await fetch
        if fetch.cancelled():
            raise TimeoutError("woken: fetch again")
        msgs = fetch.result()
        self._flowing = bool(msgs)
        return msgs

    async def _ensure_consumer(self) -> None:
        await bus.ensure_streams(self.js)
        await self.js.add_consumer(self.stream, config=self.consumer_config())

    async def _process(self, msg: Msg) -> None:
        try:
            item = self.decode(msg)
        except Exception as exc:
            await self._dead_letter(msg, f"cannot decode: {exc}")
            return
        position = _position_of(item)
        if position is not None and position <= self.positions.last():
            self.skipped += 1
            await msg.ack()
            return
        carrier = item.trace_carrier if isinstance(item, LoggedEvent) else (msg.headers or {})
        attempt = 0
        backoff = 0.1
        while True:
            attempt += 1
            try:
                with tracer().start_as_current_span(
                    f"handle {msg.subject}",
                    context=context_from(carrier),
                    kind=SpanKind.CONSUMER,
                    attributes={
                        "messaging.consumer": self.durable,
                        "potluck.position": position or 0,
                    },
                ):
                    await self.handle(item)
            except (PoisonMessage, SchemaError) as exc:
                await self._dead_letter(msg, f"cannot apply: {exc}")
                return
            except _dependency_away() as exc:
                # A dependency is away: keep the message (and the order) and wait.
                log.warning(
                    "subscriber.transient_failure",
                    consumer=self.durable,
                    subject=msg.subject,
                    error=repr(exc),
                    retry_in=backoff,
                )
                with contextlib.suppress(*TRANSIENT_BUS_ERRORS):
                    await msg.in_progress()
            except Exception as exc:
                if attempt >= self.attempts_before_dead_letter:
                    log.exception(
                        "subscriber.handler_failed",
                        consumer=self.durable,
                        subject=msg.subject,
                        attempts=attempt,
                    )
                    await self._dead_letter(msg, f"handler failed {attempt} times: {exc!r}")
                    return
            else:
                break
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)
        if position is not None:
            self.positions.advance(position)
        self.applied += 1
        await self._settle(msg.ack)

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        own = {
            bus.H_DLQ_REASON: reason[:DEAD_LETTER_REASON],
            bus.H_DLQ_SUBJECT: msg.subject,
            bus.H_DLQ_CONSUMER: self.durable,
        }
        headers = {**dead_letter_headers(msg.headers), **own}
        verdict = self._dead_letter_logs.check(msg.subject, time.monotonic())
        if verdict.allowed:
            log.error(
                "subscriber.dead_letter",
                consumer=self.durable,
                subject=msg.subject,
                reason=reason[:DEAD_LETTER_REASON],
            )
        elif verdict.log:
            log.error(
                "subscriber.dead_letters_logged_sparingly",
                consumer=self.durable,
                subject=msg.subject,
                unlogged_in_a_row=verdict.streak,
                hint=f"each is kept in the dead-letter subject {self.dead_letter_subject}",
            )
        backoff = 0.1
        while True:
            try:
                await self.js.publish(self.dead_letter_subject, msg.data, headers=headers)
                break
            except TRANSIENT_BUS_ERRORS:
                # The dead letter must exist before the original is terminated.
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
            except nats.js.errors.APIError as exc:
                if headers == own:
                    # JetStream refuses even the bare dead letter (the stream's own limits): the
                    # original stays unacknowledged, to come back after ack_wait, and the
                    # consumer goes on with the next message rather than end.
                    log.error(
                        "subscriber.dead_letter_refused",
                        consumer=self.durable,
                        subject=msg.subject,
                        error=str(exc),
                        hint=f"look at the stream behind {self.dead_letter_subject}",
                    )
                    return
                # Something in the sender's own headers: keep the dead letter with ours only.
                log.warning(
                    "subscriber.dead_letter_headers_dropped",
                    consumer=self.durable,
                    subject=msg.subject,
                    error=str(exc),
                )
                headers = own
        self.dead_lettered += 1
        await self._settle(msg.term)

    async def _settle(self, action: Callable[[], Awaitable[None]]) -> None:
        # An ack lost to a NATS restart means one redelivery, which the
        # position check (or the handler's idempotency) absorbs.
        with contextlib.suppress(*TRANSIENT_BUS_ERRORS):
            await action()


def event_subscriber(
    nc: NATS,
    *,
    durable: str,
    subjects: list[str],
    handle: Callable[[LoggedEvent], Awaitable[None]],
    positions: PositionTracker | None = None,
    events: EventRegistry = registry,
    **options: Any,
) -> Subscriber[LoggedEvent]:
    """A subscriber to logged events (potluck.evt.>), decoded into their classes."""
    return Subscriber(
        nc,
        durable=durable,
        stream=bus.EVENTS_STREAM,
        subjects=subjects,
        decode=decoder_for_logged_events(events),
        handle=handle,
        positions=positions,
        **options,
    )
