"""Typed, versioned event schemas.

An event is a frozen pydantic model registered under a type name. Its
``schema_version`` says which shape it has; an upcaster turns the data of
version N into version N+1, so events logged by older code still replay.
"""

import json
from collections.abc import Callable, Mapping
from dataclasses import FrozenInstanceError
from datetime import datetime
from functools import cached_property
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, ValidationError

from potluck.events.errors import MalformedEvent, UnknownEventType, UnsupportedSchemaVersion
from potluck.kernel.rejections import error_line

JsonDict = dict[str, Any]
Upcaster = Callable[[JsonDict], JsonDict]


class Event(BaseModel):
    """Base of every domain event: a fact, named in the past tense."""

    # Built on first use: a process uses a few of the hundred-odd events and messages, and
    # building every model's validator as its class is made cost each service about 0.25 s of
    # its start on two cores (a third of the registry's imports), and kept validators resident
    # that it never uses (issue 20). The contracts' models say the same.
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    type_name: ClassVar[str] = ""
    schema_version: ClassVar[int] = 1
    # Name of a field whose value ends the bus subject, so that consumers
    # (and NATS permissions) can filter, e.g. by host id.
    routing_field: ClassVar[str | None] = None

    def routing_key(self) -> str | None:
        if self.routing_field is None:
            return None
        value = getattr(self, self.routing_field)
        return None if value is None else str(value)


E = TypeVar("E", bound=type[Event])


class EventRegistry:
    """Maps type names to event classes, and old schema versions to upcasters."""

    def __init__(self) -> None:
        self._types: dict[str, type[Event]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, cls: E) -> E:
        """Class decorator. The type name defaults to the class name."""
        name = cls.__dict__.get("type_name") or cls.__name__
        existing = self._types.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"event type {name!r} is already registered to {existing.__qualname__}")
        cls.type_name = name
        self._types[name] = cls
        return cls

    def upcaster(self, type_name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register a function turning `from_version` data into `from_version + 1` data."""

        def decorate(fn: Upcaster) -> Upcaster:
            self._upcasters[(type_name, from_version)] = fn
            return fn

        return decorate

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._types

    def class_for(self, type_name: str) -> type[Event]:
        try:
            return self._types[type_name]
        except KeyError:
            raise UnknownEventType(type_name) from None

    def decode(self, type_name: str, schema_version: int, data: Mapping[str, Any] | str | bytes) -> Event:
        cls = self._types.get(type_name)
        if cls is not None and schema_version == cls.schema_version and isinstance(data, str | bytes):
            # The common case, the log's own text at the current schema: pydantic-core parses
            # and validates in one pass (model_validate_json), about three times faster than
            # json.loads, a dict copy and model_validate (bench/README.md, "replay_typed").
            # Still validated, not model_construct'ed: rows logged by an older writer, or
            # written by hand, must fail here as MalformedEvent rather than later in a fold.
            try:
                return cls.__pydantic_validator__.validate_json(data)  # type: ignore[no-any-return]
            except ValidationError:
                pass  # the path below says what is wrong, in the words it always used
        return self._decode_slowly(type_name, schema_version, data)

    def _decode_slowly(
        self, type_name: str, schema_version: int, data: Mapping[str, Any] | str | bytes
    ) -> Event:
        """Any schema version (upcast in Python), and the errors of a payload that is not right."""
        cls = self.class_for(type_name)
        if isinstance(data, str | bytes):
            try:
                data = json.loads(data)
            except ValueError as exc:
                raise MalformedEvent(type_name, f"not JSON: {exc}") from None
        if not isinstance(data, Mapping):
            raise MalformedEvent(type_name, f"expected a JSON object, got {type(data).__name__}")
        payload = dict(data)
        version = schema_version
        if version > cls.schema_version or version < 1:
            raise UnsupportedSchemaVersion(type_name, version, cls.schema_version)
        while version < cls.schema_version:
            step = self._upcasters.get((type_name, version))
            if step is None:
                raise UnsupportedSchemaVersion(type_name, version, cls.schema_version)
            payload = step(payload)
            version += 1
        try:
            return cls.model_validate(payload)
        except ValidationError as exc:
            raise MalformedEvent(type_name, _summarise(exc)) from None

    def decode_record(self, record: "RecordedEvent") -> Event:
        # decode()'s fast path again, inline: this runs once per event of every replay.
        type_name, schema_version, data = record.type, record.schema_version, record.data_json
        cls = self._types.get(type_name)
        if cls is not None and schema_version == cls.schema_version:
            try:
                return cls.__pydantic_validator__.validate_json(data)  # type: ignore[no-any-return]
            except ValidationError:
                pass
        return self._decode_slowly(type_name, schema_version, data)


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        parts.append(error_line(err, "(root)"))
    return "; ".join(parts)


def encode(event: Event) -> str:
    return event.model_dump_json()


#: The registry every service registers its events in.
registry = EventRegistry()
event_type = registry.register


class RecordedEvent:
    """One event of the log, as read back or as just appended. Read-only.

    `data` and `metadata` are parsed from their JSON on first use, then kept:
    replay often needs only the type and the stream, and parsing every row's
    JSON cost more than the query itself (bench/README.md, "replay").

    Events read from the log are instances of a private subclass that is the
    asyncpg row itself (`store._LoggedRow`), so reading builds no Python object
    per row. Use the attributes: anything else such a row answers (indexing,
    `keys()`, iteration) is asyncpg's, and events from `append` have none of it.
    Equality compares the fields, whichever kind either side is; like a frozen
    dataclass whose fields include a dict, events are not hashable.
    """

    __match_args__ = (
        "position",
        "event_id",
        "stream",
        "version",
        "type",
        "schema_version",
        "data_json",
        "metadata",
        "recorded_at",
    )

    position: int
    event_id: UUID
    stream: str
    version: int
    type: str
    schema_version: int
    data_json: str
    metadata: JsonDict
    recorded_at: datetime

    def __init__(
        self,
        position: int,
        event_id: UUID,
        stream: str,
        version: int,
        type: str,
        schema_version: int,
        data_json: str,
        metadata: JsonDict,
        recorded_at: datetime,
    ) -> None:
        # Into __dict__ directly: __setattr__ refuses every assignment.
        self.__dict__.update(
            position=position,
            event_id=event_id,
            stream=stream,
            version=version,
            type=type,
            schema_version=schema_version,
            data_json=data_json,
            metadata=metadata,
            recorded_at=recorded_at,
        )

    @cached_property
    def data(self) -> JsonDict:
        parsed: JsonDict = json.loads(self.data_json)
        return parsed

    @property
    def event_id_text(self) -> str:
        """The id as text; an event read from the log hands out its column's text (the relay
        puts it in a header as it is)."""
        return str(self.event_id)

    @property
    def metadata_json(self) -> str:
        """The metadata as JSON text; an event read from the log hands out its column's text
        without parsing it (the relay copies it into a header as it is)."""
        return json.dumps(self.metadata)

    @property
    def category(self) -> str:
        return stream_category(self.stream)

    def _fields(self) -> tuple[Any, ...]:
        return (
            self.position,
            self.event_id,
            self.stream,
            self.version,
            self.type,
            self.schema_version,
            self.data_json,
            self.metadata,
            self.recorded_at,
        )

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecordedEvent):
            return NotImplemented
        return self._fields() == other._fields()

    def __ne__(self, other: object) -> bool:
        # Defined, not inherited: on rows it would otherwise be asyncpg.Record's.
        if not isinstance(other, RecordedEvent):
            return NotImplemented
        return self._fields() != other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        names = self.__match_args__
        return (
            "RecordedEvent("
            + ", ".join(f"{n}={v!r}" for n, v in zip(names, self._fields(), strict=True))
            + ")"
        )

    def __reduce__(self) -> tuple[Callable[..., "RecordedEvent"], tuple[Any, ...]]:
        # Pickles and copies as a plain RecordedEvent, rows included.
        return (RecordedEvent, self._fields())


def readable_metadata(parsed: object) -> JsonDict:
    """An event's metadata as every reader takes it: a log row's metadata that is not a JSON
    object (a hand-made row, another writer's) carries nothing this version can read, so none,
    rather than an error in whichever reader looks at it first (the relay, `ops events show`)."""
    return parsed if isinstance(parsed, dict) else {}


def stream_category(stream: str) -> str:
    """`host-3f2a` -> `host` (streams are named category-id, as in message-db)."""
    return stream.split("-", 1)[0]
