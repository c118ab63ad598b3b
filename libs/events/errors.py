"""Every error libs/events raises, under one root.

    EventsError
    ├── SchemaError                    an event cannot be encoded or decoded
    │   ├── UnknownEventType           no class registered for a type name
    │   ├── MalformedEvent             data does not fit the registered schema
    │   └── UnsupportedSchemaVersion   newer than this code, or no upcaster path
    ├── StoreError                     the event store refused an append
    │   ├── WrongExpectedVersion       optimistic concurrency conflict on a stream
    │   └── DuplicateEvent             an event id is already in the log
    └── PoisonMessage                  a bus message that can never be applied

Errors carry the operator's detail in their attributes and a message that is
safe to show a user.
"""

from uuid import UUID


class EventsError(Exception):
    """Root of every error raised by potluck.events."""


class SchemaError(EventsError):
    pass


class UnknownEventType(SchemaError):
    def __init__(self, type_name: str) -> None:
        super().__init__(f"unknown event type {type_name!r}: no class is registered under that name")
        self.type_name = type_name


class MalformedEvent(SchemaError):
    def __init__(self, type_name: str, detail: str) -> None:
        super().__init__(f"malformed {type_name} event: {detail}")
        self.type_name = type_name
        self.detail = detail


class UnsupportedSchemaVersion(SchemaError):
    def __init__(self, type_name: str, version: int, current: int) -> None:
        super().__init__(
            f"{type_name} schema version {version} cannot be read by this code "
            f"(it knows up to version {current}); upgrade potluck or add an upcaster"
        )
        self.type_name = type_name
        self.version = version
        self.current = current


class StoreError(EventsError):
    pass


class WrongExpectedVersion(StoreError):
    """Raised when a stream moved on since the writer read it; nothing of the batch is written."""

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        super().__init__(
            f"Wrong expected version for stream {stream!r}: expected {expected}, actual {actual}"
        )
        self.stream = stream
        self.expected = expected
        self.actual = actual


class DuplicateEvent(StoreError):
    """The event id is already logged: the message that caused it was handled before."""

    def __init__(self, event_ids: list[UUID]) -> None:
        super().__init__(f"event id already in the log: {', '.join(map(str, event_ids)) or '?'}")
        self.event_ids = event_ids


class PoisonMessage(EventsError):
    """A handler raises this for a message that no retry can ever apply; it is dead-lettered."""
