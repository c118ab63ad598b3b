"""Durable subscribers: dead letters, idempotency, NATS restarts, trace context."""

import asyncio
import json
from uuid import uuid4

import nats.errors
from nats.aio.client import Client as NATS
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from potluck.events import (
    DEAD_LETTER_STREAM,
    EventStore,
    LoggedEvent,
    OutboxRelay,
    PoisonMessage,
    event_subscriber,
)
from potluck.events.bus import EVENTS_STREAM, ensure_streams
from potluck.localstack import NatsServer
from tests.fixtures.sample_events import ThingHappened, sample
from tests.helpers import Received, stop, wait_until


def _headers(position: int, type_name: str = "ThingHappened", version: str = "2") -> dict[str, str]:
    return {
        "Nats-Msg-Id": str(uuid4()),
        "Potluck-Position": str(position),
        "Potluck-Type": type_name,
        "Potluck-Schema-Version": version,
        "Potluck-Stream": "thing-p",
    }


async def _dead_letters(nc: NATS, expected: int) -> list[tuple[str, str | None]]:
    js = nc.jetstream()
    info = await js.stream_info(DEAD_LETTER_STREAM)
    assert info.state.messages == expected
    letters = []
    for seq in range(1, expected + 1):
        msg = await js.get_msg(DEAD_LETTER_STREAM, seq=seq)
        assert msg.headers is not None
        letters.append((msg.headers["Potluck-Dead-Letter-Reason"], msg.subject))
    return letters


async def test_poison_messages_are_dead_lettered_and_good_ones_still_applied(nc: NATS) -> None:
    """Invalid JSON, an unknown type, JSON failing the schema, missing headers, and a handler
    that declares a message poison: each lands in the dead-letter subject with its reason,
    and the good messages around them are applied."""
    js = nc.jetstream()
    await ensure_streams(js)
    good = ThingHappened(thing_id="ok", count=1).model_dump_json().encode()
    subject = "potluck.evt.thing.ThingHappened"
    await js.publish(subject, good, headers=_headers(1))
    await js.publish(subject, b"{not json", headers=_headers(2))
    await js.publish("potluck.evt.thing.Nope", b"{}", headers=_headers(3, "Nope"))
    await js.publish(subject, json.dumps({"thing_id": "x", "count": -5}).encode(), headers=_headers(4))
    await js.publish(subject, good, headers={"Nats-Msg-Id": str(uuid4())})
    await js.publish(
        subject,
        ThingHappened(thing_id="refuse", count=1).model_dump_json().encode(),
        headers=_headers(6),
    )
    await js.publish(
        subject,
        ThingHappened(thing_id="ok", count=2).model_dump_json().encode(),
        headers=_headers(7),
    )

    applied: list[LoggedEvent] = []

    async def handle(delivered: LoggedEvent) -> None:
        assert isinstance(delivered.event, ThingHappened)
        if delivered.event.thing_id == "refuse":
            raise PoisonMessage("thing 'refuse' can never be applied")
        applied.append(delivered)

    consumer = event_subscriber(
        nc, durable="poison", subjects=["potluck.evt.>"], handle=handle, events=sample
    )
    task = asyncio.create_task(consumer.run())
    try:
        await wait_until(lambda: consumer.applied + consumer.dead_lettered == 7, 10, "all seven settled")
    finally:
        await stop(task)
    assert [d.position for d in applied] == [1, 7]
    reasons = await _dead_letters(nc, 5)
    assert all(subject == "potluck.dlq.poison" for _, subject in reasons)
    text = [r for r, _ in reasons]
    assert "not JSON" in text[0]
    assert "unknown event type 'Nope'" in text[1]
    assert "count" in text[2]
    assert "missing or bad header" in text[3]
    assert "can never be applied" in text[4]


async def test_a_failing_handler_is_retried_then_dead_lettered(nc: NATS) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    subject = "potluck.evt.thing.ThingHappened"
    for position in (1, 2):
        await js.publish(
            subject,
            ThingHappened(thing_id=str(position), count=0).model_dump_json().encode(),
            headers=_headers(position),
        )
    calls: list[int] = []

    async def handle(delivered: LoggedEvent) -> None:
        calls.append(delivered.position)
        if delivered.position == 1:
            raise RuntimeError("bug in the handler")

    consumer = event_subscriber(
        nc,
        durable="buggy",
        subjects=[subject],
        handle=handle,
        events=sample,
        attempts_before_dead_letter=3,
    )
    task = asyncio.create_task(consumer.run())
    try:
        await wait_until(lambda: consumer.applied == 1, 10, "the second message")
    finally:
        await stop(task)
    assert calls == [1, 1, 1, 2]
    [(reason, _)] = await _dead_letters(nc, 1)
    assert "handler failed 3 times" in reason
    assert "bug in the handler" in reason


async def test_a_message_at_an_applied_position_is_not_applied_again(nc: NATS) -> None:
    """An event republished after JetStream's duplicate window (new Msg-Id, same position)
    is acknowledged without calling the handler."""
    js = nc.jetstream()
    await ensure_streams(js)
    body = ThingHappened(thing_id="a", count=1).model_dump_json().encode()
    for position in (1, 2, 2, 1, 3):
        await js.publish("potluck.evt.thing.ThingHappened", body, headers=_headers(position))
    received = Received()
    consumer = event_subscriber(
        nc, durable="idem", subjects=["potluck.evt.>"], handle=received, events=sample
    )
    task = asyncio.create_task(consumer.run())
    try:
        await wait_until(lambda: consumer.applied + consumer.skipped == 5, 10, "five settled")
    finally:
        await stop(task)
    assert received.positions == [1, 2, 3]
    assert consumer.skipped == 2


async def test_consumer_and_relay_survive_a_nats_restart(
    store: EventStore, nats_server: NatsServer, nc: NATS
) -> None:
    """NATS restarts under a running relay and consumer: every event arrives once."""
    received = Received()
    relay = OutboxRelay(store, nc.jetstream(), retry_interval=0.2, ack_timeout=2)
    consumer = event_subscriber(
        nc,
        durable="restart",
        subjects=["potluck.evt.>"],
        handle=received,
        events=sample,
        fetch_timeout=0.5,
    )
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(consumer.run())]
    try:
        first = await store.append("thing-1", [ThingHappened(thing_id="a", count=i) for i in range(200)])
        await wait_until(lambda: len(received.counts) == 200, 20, "the first 200")

        await asyncio.to_thread(nats_server.restart)
        second = await store.append("thing-2", [ThingHappened(thing_id="b", count=i) for i in range(200)])
        await wait_until(lambda: len(received.counts) == 400, 60, "the 200 appended after the restart")
    finally:
        await stop(*tasks)
    assert set(received.counts) == {r.event_id for r in first + second}
    assert max(received.counts.values()) == 1


async def test_the_span_around_an_append_is_the_parent_of_the_consumers_span(
    store: EventStore, nc: NATS, spans: InMemorySpanExporter
) -> None:
    received = Received()
    relay = OutboxRelay(store, nc.jetstream())
    consumer = event_subscriber(
        nc, durable="traced", subjects=["potluck.evt.>"], handle=received, events=sample
    )
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(consumer.run())]
    try:
        with trace.get_tracer("test").start_as_current_span("user request") as request:
            await store.append("thing-t", [ThingHappened(thing_id="t", count=1)])
        await wait_until(lambda: len(received.counts) == 1, 10, "the traced event")
        await wait_until(
            lambda: any(s.name.startswith("handle") for s in spans.get_finished_spans()),
            5,
            "the consumer span to end",
        )
    finally:
        await stop(*tasks)
    finished = spans.get_finished_spans()
    handled = next(s for s in finished if s.name.startswith("handle"))
    relayed = next(s for s in finished if s.name.startswith("relay"))
    context = request.get_span_context()
    assert handled.context is not None
    assert handled.parent is not None
    assert handled.context.trace_id == context.trace_id
    assert handled.parent.span_id == context.span_id
    assert relayed.parent is not None
    assert relayed.parent.span_id == context.span_id
    assert handled.kind == trace.SpanKind.CONSUMER
    assert relayed.kind == trace.SpanKind.PRODUCER


async def test_a_long_poll_consumer_gets_events_at_once_and_after_a_restart_when_woken(
    nats_server: NatsServer, nc: NATS
) -> None:
    """hostd's way of following its events: one event a fetch and a fetch that waits 120 s.
    Tried: an event published while the consumer idles in its fetch, then NATS restarted,
    the consumer woken (as hostd does on reconnect), and another event published.
    Holds: each is handled well before the fetch would have expired (20 s of 120), once."""
    js = nc.jetstream()
    await ensure_streams(js)
    received = Received()
    consumer = event_subscriber(
        nc,
        durable="longpoll",
        subjects=["potluck.evt.>"],
        handle=received,
        events=sample,
        batch_size=1,
        fetch_timeout=120.0,
    )
    task = asyncio.create_task(consumer.run())
    body = ThingHappened(thing_id="a", count=1).model_dump_json().encode()
    try:
        await asyncio.sleep(1.0)  # the consumer is now waiting in its long fetch
        await js.publish("potluck.evt.thing.ThingHappened", body, headers=_headers(1))
        await wait_until(lambda: received.positions == [1], 20, "the event published while idle")

        await asyncio.to_thread(nats_server.restart)
        await wait_until(lambda: nc.is_connected, 30, "the client reconnected")
        consumer.wake()
        for _ in range(60):  # JetStream takes a moment to serve again after the restart
            try:
                await js.publish("potluck.evt.thing.ThingHappened", body, headers=_headers(2))
                break
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                await asyncio.sleep(0.5)
        await wait_until(lambda: received.positions == [1, 2], 20, "the event published after the restart")
    finally:
        await stop(task)
    assert consumer.applied == 2


async def test_a_consumer_that_cannot_make_its_own_waits_for_it_to_be_made_anew(nc: NATS) -> None:
    """hostd's way (`create_consumer=False`) when the registry removed its consumer (its host
    deregistered): the subscriber keeps asking, backing off, and once the consumer is made again
    it carries on, applying what was published meanwhile, each event once."""
    js = nc.jetstream()
    await ensure_streams(js)
    received = Received()
    consumer = event_subscriber(
        nc,
        durable="made-by-another",
        subjects=["potluck.evt.>"],
        handle=received,
        events=sample,
        batch_size=1,
        fetch_timeout=0.5,
        create_consumer=False,
        max_backoff=0.5,
    )
    await js.add_consumer(EVENTS_STREAM, config=consumer.consumer_config())
    task = asyncio.create_task(consumer.run())
    body = ThingHappened(thing_id="a", count=1).model_dump_json().encode()
    try:
        await js.publish("potluck.evt.thing.ThingHappened", body, headers=_headers(1))
        await wait_until(lambda: received.positions == [1], 20, "the first event")
        await js.delete_consumer(EVENTS_STREAM, "made-by-another")
        await js.publish("potluck.evt.thing.ThingHappened", body, headers=_headers(2))
        await asyncio.sleep(1.5)  # several binds refused meanwhile
        assert received.positions == [1]
        assert not task.done()
        await js.add_consumer(EVENTS_STREAM, config=consumer.consumer_config())
        await wait_until(lambda: received.positions == [1, 2], 20, "the event published meanwhile")
    finally:
        await stop(task)
    assert consumer.applied == 2
