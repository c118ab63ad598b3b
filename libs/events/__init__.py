"""The event-log library every Potluck service uses.

Typed, versioned event schemas (schema), the Postgres event store (store) and
its follower (follower), one way to fold the log into a read model
(projection) and to decide and append under optimistic concurrency (decide),
the outbox relay to JetStream (relay), durable
subscribers with dead letters (subscriber), subjects and streams (bus),
answering requests only into the requester's inbox (replies), and
trace-context propagation (tracing). Nothing service-specific lives here.

The names below are loaded from their module on first use (PEP 562): a process that only
talks to the bus (hostd) then never loads the store's asyncpg, the relay or the follower, which
would stay resident for its whole life (issue 20). tests/unit/test_events_surface.py holds the
table and the imports for type checkers equal.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from potluck.events.bus import DEAD_LETTER_STREAM, EVENTS_STREAM, REPORTS_STREAM, ensure_streams
    from potluck.events.decide import DEFAULT_RETRY, Contended, RetryPolicy, decide_and_append
    from potluck.events.errors import (
        DuplicateEvent,
        EventsError,
        MalformedEvent,
        PoisonMessage,
        SchemaError,
        StoreError,
        UnknownEventType,
        UnsupportedSchemaVersion,
        WrongExpectedVersion,
    )
    from potluck.events.follower import TRANSIENT_DB_ERRORS, LogFollower, database_away
    from potluck.events.ids import event_id_for
    from potluck.events.projection import (
        Fold,
        Projection,
        SkippedEvent,
        SkippedEvents,
        VersionedProjection,
        decode_or_skip,
    )
    from potluck.events.relay import OutboxRelay
    from potluck.events.schema import Event, EventRegistry, RecordedEvent, event_type, registry
    from potluck.events.store import ANY_VERSION, NO_STREAM, EventStore, NewEvent, StreamAppend
    from potluck.events.subscriber import (
        FilePositions,
        LoggedEvent,
        MemoryPositions,
        PositionTracker,
        Subscriber,
        event_subscriber,
    )

#: Each public name and the module of this package that holds it.
_HOME: dict[str, str] = {
    "DEAD_LETTER_STREAM": "bus",
    "EVENTS_STREAM": "bus",
    "REPORTS_STREAM": "bus",
    "ensure_streams": "bus",
    "Contended": "decide",
    "DEFAULT_RETRY": "decide",
    "RetryPolicy": "decide",
    "decide_and_append": "decide",
    "DuplicateEvent": "errors",
    "EventsError": "errors",
    "MalformedEvent": "errors",
    "PoisonMessage": "errors",
    "SchemaError": "errors",
    "StoreError": "errors",
    "UnknownEventType": "errors",
    "UnsupportedSchemaVersion": "errors",
    "WrongExpectedVersion": "errors",
    "LogFollower": "follower",
    "TRANSIENT_DB_ERRORS": "follower",
    "database_away": "follower",
    "event_id_for": "ids",
    "Fold": "projection",
    "Projection": "projection",
    "SkippedEvent": "projection",
    "SkippedEvents": "projection",
    "VersionedProjection": "projection",
    "decode_or_skip": "projection",
    "OutboxRelay": "relay",
    "Event": "schema",
    "EventRegistry": "schema",
    "RecordedEvent": "schema",
    "event_type": "schema",
    "registry": "schema",
    "ANY_VERSION": "store",
    "EventStore": "store",
    "NO_STREAM": "store",
    "NewEvent": "store",
    "StreamAppend": "store",
    "FilePositions": "subscriber",
    "LoggedEvent": "subscriber",
    "MemoryPositions": "subscriber",
    "PositionTracker": "subscriber",
    "Subscriber": "subscriber",
    "event_subscriber": "subscriber",
}

__all__ = [
    "ANY_VERSION",
    "DEAD_LETTER_STREAM",
    "DEFAULT_RETRY",
    "EVENTS_STREAM",
    "NO_STREAM",
    "REPORTS_STREAM",
    "TRANSIENT_DB_ERRORS",
    "Contended",
    "DuplicateEvent",
    "Event",
    "EventRegistry",
    "EventStore",
    "EventsError",
    "FilePositions",
    "Fold",
    "LogFollower",
    "LoggedEvent",
    "MalformedEvent",
    "MemoryPositions",
    "NewEvent",
    "OutboxRelay",
    "PoisonMessage",
    "PositionTracker",
    "Projection",
    "RecordedEvent",
    "RetryPolicy",
    "SchemaError",
    "SkippedEvent",
    "SkippedEvents",
    "StoreError",
    "StreamAppend",
    "Subscriber",
    "UnknownEventType",
    "UnsupportedSchemaVersion",
    "VersionedProjection",
    "WrongExpectedVersion",
    "database_away",
    "decide_and_append",
    "decode_or_skip",
    "ensure_streams",
    "event_id_for",
    "event_subscriber",
    "event_type",
    "registry",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        # Also how `from potluck.events import bus` finds that a submodule must be imported.
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
