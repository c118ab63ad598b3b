"""Event schemas: registry, upcasting, and the errors bad payloads get."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.events import (
    Event,
    EventRegistry,
    MalformedEvent,
    UnknownEventType,
    UnsupportedSchemaVersion,
    event_id_for,
)
from potluck.events.bus import event_subject
from potluck.events.schema import RecordedEvent
from tests.fixtures.sample_events import HostThingHappened, ThingHappened, sample


def test_round_trip_keeps_every_field() -> None:
    event = ThingHappened(thing_id="a", count=3, note="hi")
    assert sample.decode("ThingHappened", 2, event.model_dump_json()) == event


def test_old_schema_version_is_upcast() -> None:
    decoded = sample.decode("ThingHappened", 1, {"thing_id": "a", "n": 7})
    assert decoded == ThingHappened(thing_id="a", count=7)


def test_unknown_type_is_named() -> None:
    with pytest.raises(UnknownEventType) as info:
        sample.decode("NoSuchThing", 1, "{}")
    assert info.value.type_name == "NoSuchThing"
    assert "NoSuchThing" in str(info.value)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"thing_id": "a", "count": -1}), "count"),
        (json.dumps({"thing_id": "a", "count": 1, "extra": True}), "extra"),
        (json.dumps({"count": 1}), "thing_id"),
    ],
)
def test_malformed_payload_says_what_is_wrong(payload: str, fragment: str) -> None:
    with pytest.raises(MalformedEvent) as info:
        sample.decode("ThingHappened", 2, payload)
    assert fragment in str(info.value)


@pytest.mark.parametrize("version", [0, 3, 99])
def test_schema_version_without_a_path_is_refused(version: int) -> None:
    with pytest.raises(UnsupportedSchemaVersion):
        sample.decode("ThingHappened", version, {"thing_id": "a", "count": 1})


def test_a_name_cannot_be_registered_twice() -> None:
    registry = EventRegistry()

    @registry.register
    class Once(Event):
        x: int

    class Impostor(Event):
        type_name = "Once"
        x: int

    with pytest.raises(ValueError, match="already registered"):
        registry.register(Impostor)


def test_events_are_immutable() -> None:
    event = ThingHappened(thing_id="a", count=1)
    with pytest.raises(ValueError, match="frozen"):
        event.count = 2  # type: ignore[misc]


@given(st.text(min_size=1, max_size=40), st.integers(min_value=0, max_value=10))
def test_event_ids_from_messages_are_stable_and_distinct(message_id: str, index: int) -> None:
    first = event_id_for("reports", message_id, index)
    assert first == event_id_for("reports", message_id, index)
    assert first != event_id_for("reports", message_id, index + 1)
    assert first != event_id_for("other", message_id, index)


def _record(stream: str, type_name: str, metadata: dict[str, object]) -> RecordedEvent:
    from datetime import UTC, datetime
    from uuid import uuid4

    return RecordedEvent(1, uuid4(), stream, 1, type_name, 1, "{}", metadata, datetime.now(UTC))


def test_subject_carries_category_type_and_routing_key() -> None:
    assert HostThingHappened(host_id="h1", value=1).routing_key() == "h1"
    assert event_subject(_record("host-h1", "HostThingHappened", {"routing_key": "h1"})) == (
        "potluck.evt.host.HostThingHappened.h1"
    )
    assert event_subject(_record("alloc-9", "ThingHappened", {})) == "potluck.evt.alloc.ThingHappened"
