"""`potluck ops events tail|show`: the log as it grows, and one aggregate's history.

`tail` follows the log live with a LogFollower (from the head by default,
or after a given position), keeping the events of the given types and/or
stream. `show` prints one stream's events in version order. Both print a
readable line per event, or with `--json` one JSON object per line:
position, event id, stream, version, type, schema version, recorded time,
data and metadata.
"""

import json
from collections.abc import Callable, Iterable
from typing import Any

from potluck.events import EventStore, LogFollower, RecordedEvent, registry
from potluck.kernel.terminal_text import shown
from potluck.ops import OpsError
from potluck.projections import FOLDED_CATEGORIES

__all__ = [
    "check_position",
    "check_stream",
    "check_types",
    "event_line",
    "event_row",
    "show",
    "summary",
    "tail",
]


def event_row(record: RecordedEvent) -> dict[str, Any]:
    return {
        "position": record.position,
        "event_id": str(record.event_id),
        "stream": record.stream,
        "version": record.version,
        "type": record.type,
        "schema_version": record.schema_version,
        "recorded_at": record.recorded_at.isoformat(),
        "data": record.data,
        "metadata": record.metadata,
    }


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= 40 else text[:37] + "..."


def summary(record: RecordedEvent, width: int = 100) -> str:
    """The event's data as `key=value` pairs, the ids its stream already names left out."""
    skip = {"alloc_id", "host_id", "session_id", "user"} if record.category in FOLDED_CATEGORIES else set()
    stream_id = record.stream.split("-", 1)[-1]
    data = record.data
    if not isinstance(data, dict):  # a hand-made row, another writer's: shown, never a traceback
        return f"(data is not a JSON object) {_short(data)}"
    parts = []
    for key, value in data.items():
        if key in skip and value == stream_id:
            continue
        if key == "token_sha256":
            continue  # a credential's hash is nobody's business on a terminal
        parts.append(f"{key}={_short(value)}")
    text = " ".join(parts)
    return text if len(text) <= width else text[: width - 3] + "..."


def event_line(record: RecordedEvent) -> str:
    """One line for a person's terminal: the event's data holds users' and members' text (an
    allocation's failure detail, a job's name), shown escaped (potluck.kernel.terminal_text)."""
    at = record.recorded_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return shown(
        f"{record.position:>8}  {at}  {record.stream:<26} v{record.version:<3} "
        f"{record.type:<22} {summary(record)}"
    ).rstrip()


async def _similar_streams(store: EventStore, stream: str, limit: int = 5) -> list[str]:
    fragment = stream.split("-", 1)[-1] if "-" in stream else stream
    rows = await store.pool.fetch(
        "SELECT DISTINCT stream FROM events WHERE strpos(stream, $1) > 0 ORDER BY stream LIMIT $2",
        fragment[:64],
        limit,
    )
    return [r[0] for r in rows]


async def check_stream(store: EventStore, stream: str) -> int:
    """The stream's version; OpsError (with similar names) when the log has no such stream."""
    if not stream or "-" not in stream:
        raise OpsError(
            f"{stream!r} is not a stream name: streams are named category-id, e.g. host-h-3f2a9c1e7b40"
        )
    version = await store.stream_version(stream)
    if version == 0:
        similar = await _similar_streams(store, stream)
        hint = f"; similar streams: {', '.join(similar)}" if similar else ""
        raise OpsError(f"no stream {stream!r} in the log{hint}")
    return version


async def check_types(store: EventStore, types: Iterable[str]) -> list[str]:
    """The types, each known to this code or present in the log; OpsError otherwise."""
    wanted = list(dict.fromkeys(types))
    for type_name in wanted:
        if type_name in registry:
            continue
        if await store.pool.fetchval("SELECT 1 FROM events WHERE type = $1 LIMIT 1", type_name):
            continue
        raise OpsError(f"unknown event type {type_name!r} (types are CamelCase, e.g. AllocationPlaced)")
    return wanted


async def check_position(store: EventStore, position: int) -> int:
    """The head; OpsError when `position` is past it or negative."""
    head = await store.head_position()
    if position < 0:
        raise OpsError(f"position {position} is negative; positions start at 1")
    if position > head:
        raise OpsError(f"position {position} is past the end of the log (the head is at {head})")
    return head


async def show(store: EventStore, stream: str) -> list[RecordedEvent]:
    await check_stream(store, stream)
    return await store.read_stream(stream)


async def tail(
    store: EventStore,
    emit: Callable[[RecordedEvent], None],
    *,
    types: Iterable[str] = (),
    stream: str | None = None,
    after: int | None = None,
    count: int | None = None,
    poll_interval: float = 2.0,
) -> int:
    """Emit matching events as they are logged, after `after` (default: the head), until
    `count` have been emitted (default: forever). Returns how many were emitted."""
    wanted = set(await check_types(store, types))
    if stream is not None:
        await check_stream(store, stream)
    head = await check_position(store, after) if after is not None else await store.head_position()
    follower = LogFollower(
        store, after_position=head if after is None else after, poll_interval=poll_interval
    )
    emitted = 0
    if count is not None and count <= 0:
        return 0
    try:
        async for record in follower.events():
            if wanted and record.type not in wanted:
                continue
            if stream is not None and record.stream != stream:
                continue
            emit(record)
            emitted += 1
            if count is not None and emitted >= count:
                break
    finally:
        await follower.close()
    return emitted
