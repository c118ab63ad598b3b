"""The event-log library every Potluck service uses.

Typed, versioned event schemas (schema), the Postgres event store (store) and
its follower (follower), one way to fold the log into a read model
(projection) and to decide and append under optimistic concurrency (decide),
the outbox relay to JetStream (relay), durable
subscribers with dead letters (subscriber), subjects and streams (bus),
answering requests only into the requester's inbox (replies), and
trace-context propagation (tracing). Nothing service-specific lives here.
"""

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
from potluck.events.follower import TRANSIENT_DB_ERRORS, LogFollower
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
    "decide_and_append",
    "decode_or_skip",
    "ensure_streams",
    "event_id_for",
    "event_subscriber",
    "event_type",
    "registry",
]
