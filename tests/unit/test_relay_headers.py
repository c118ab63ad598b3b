"""What the relay puts on each message: the event's identity, its metadata, its trace context."""

import json
from datetime import UTC, datetime
from uuid import uuid4

from potluck.events import bus
from potluck.events.relay import relay_headers, trace_carrier
from potluck.events.schema import RecordedEvent

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def recorded(metadata: dict[str, object]) -> RecordedEvent:
    return RecordedEvent(
        7, uuid4(), "thing-1", 3, "ThingHappened", 2, '{"a": 1}', metadata, datetime.now(UTC)
    )


def test_an_event_appended_in_a_trace_carries_that_trace_onto_the_bus() -> None:
    event = recorded({"actor": "u", "traceparent": TRACEPARENT, "tracestate": "k=v"})
    carrier = trace_carrier(event)
    assert carrier == {"traceparent": TRACEPARENT, "tracestate": "k=v"}
    headers = relay_headers(event, carrier)
    assert headers[bus.H_MSG_ID] == str(event.event_id)
    assert (headers[bus.H_POSITION], headers[bus.H_STREAM], headers[bus.H_VERSION]) == ("7", "thing-1", "3")
    assert (headers[bus.H_TYPE], headers[bus.H_SCHEMA_VERSION]) == ("ThingHappened", "2")
    assert json.loads(headers[bus.H_METADATA]) == event.metadata
    assert headers["traceparent"] == TRACEPARENT


def test_an_event_appended_outside_any_trace_has_no_trace_headers() -> None:
    # Also when another field merely mentions the word: only the metadata's own keys count.
    event = recorded({"actor": "u", "note": "traceparent"})
    assert trace_carrier(event) == {}
    headers = relay_headers(event, {})
    assert "traceparent" not in headers
    assert json.loads(headers[bus.H_METADATA]) == event.metadata
