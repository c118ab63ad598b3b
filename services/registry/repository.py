"""A command on one host, decided on the host's stream as the log has it, and appended.

Commands are decided on `host-<id>` read from the store, not on the possibly
lagging read model, and appended with the stream's expected version, so two
registry replicas (or the registry and an operator's `potluck ops hosts`)
never record the same transition twice. An attempt here is only "load, decide
(host.py, pure), append"; potluck.events' `decide_and_append` is the one retry
policy around it. When other writers win every attempt the command is refused
as BUSY, like any other refusal, rather than failing the caller.

An event of the stream that this version cannot decode is skipped as every
reader skips it (`decode_or_skip`), and the expected version is still the
stream's own, so the append neither overwrites the event nor retries forever.
Skips of a load are logged but not counted in the service's figure: every
such event is in the log the service folds, which counts each exactly once.

A host's stream grows with every transition it goes through (registrations,
silences and recoveries), so the registry does not fold it from the start for
each command: it starts from the state its view already holds (`known`, the
host as folded up to that state's version) and reads only the events after
it. The state decided on and the version appended at are still the stream's
own as of this read: an event the view has not folded yet is read here, and
one appended after the read makes the append fail and the command be decided
again, so optimistic concurrency holds exactly as with a full read.

Without such a view (an operator's command, a replica), the load starts from the
stream's snapshot (potluck.events.snapshots) when there is one, and a load that
folded many events leaves one where it ended: a host's decade of silences and
recoveries costs one row and the events since, never the whole stream.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from potluck.contracts.host_events import host_stream
from potluck.events import (
    Contended,
    DuplicateEvent,
    Event,
    EventStore,
    NewEvent,
    SkippedEvents,
    decide_and_append,
    decode_or_skip,
    event_id_for,
)
from potluck.events.snapshots import Snapshots
from potluck.kernel.rejections import Rejected
from potluck.readmodels.hosts import HOST_FOLD_VERSION, HostState, evolve

__all__ = [
    "SNAPSHOT_AFTER_EVENTS",
    "Decision",
    "Known",
    "Outcome",
    "decide_on_host",
    "host_snapshots",
    "load_host",
    "load_host_stream",
]

log = structlog.get_logger(__name__)

#: A load that had to fold this many events keeps a snapshot where it ended: the next load
#: of the stream (an operator's command, a replica that has not folded it) starts there.
SNAPSHOT_AFTER_EVENTS = 100

#: The aggregate's part: the current state (None: no such host) to the events it produces.
Decision = Callable[[HostState | None], list[Event]]


@dataclass(frozen=True)
class Outcome:
    """The state a command was decided on, and the events it recorded (none: nothing to change)."""

    state: HostState | None
    events: list[Event]


#: Where a load may start instead of the stream's beginning: the host folded up to its version.
Known = Callable[[], HostState | None]


async def load_host_stream(
    store: EventStore,
    host_id: str,
    skipped: SkippedEvents | None = None,
    *,
    reader: str = "registry",
    known: HostState | None = None,
) -> tuple[HostState | None, int]:
    """The host as its stream has it, and the stream's version (what an append must expect).

    With `known` (the host folded from its stream up to `known.version`), only the events
    after that version are read.
    """
    skipped = SkippedEvents() if skipped is None else skipped
    stream = host_stream(host_id)
    snapshots = host_snapshots(store)
    state: HostState | None = None
    version = 0
    if known is not None and known.host_id == host_id and known.version > 0:
        state, version = known, known.version
    elif (snapshot := await snapshots.load(stream)) is not None:
        state, version = snapshot.state, snapshot.version
    records = await store.read_stream(stream, after_version=version)
    for record in records:
        version = record.version
        event = decode_or_skip(record, skipped, reader=reader)
        if event is not None:
            state = evolve(state, event, record.version, record.recorded_at)
    if state is not None and len(records) >= SNAPSHOT_AFTER_EVENTS:
        try:
            await snapshots.save(stream, version, state)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            # A cost saving only: the load stands without it.
            log.warning("host.snapshot_not_saved", host_id=host_id, error=str(exc))
    return state, version


def host_snapshots(store: EventStore) -> Snapshots[HostState]:
    return Snapshots(store, "host", HOST_FOLD_VERSION, HostState)


async def load_host(
    store: EventStore,
    host_id: str,
    skipped: SkippedEvents | None = None,
    *,
    reader: str = "registry",
    known: HostState | None = None,
) -> HostState | None:
    state, _ = await load_host_stream(store, host_id, skipped, reader=reader, known=known)
    return state


async def decide_on_host(
    store: EventStore,
    host_id: str,
    decide: Decision,
    metadata: Mapping[str, Any] | None = None,
    *,
    reader: str = "registry",
    known: Known | None = None,
    source_id: str | None = None,
) -> Outcome:
    """Load, decide, append at the version read; again if another writer won; BUSY if they always do.

    `known` gives, at each attempt, the host as far as a view has folded it (see the module's
    docstring); without it the whole stream is read. `source_id`: the message the command came
    in (a report redelivered by JetStream): the events' ids derive from it, so that a
    redelivery decided on a later state records nothing (no events in the outcome).
    """

    async def attempt() -> Outcome:
        start = known() if known is not None else None
        state, version = await load_host_stream(store, host_id, reader=reader, known=start)
        events = decide(state)
        if events:
            new: list[Event | NewEvent] = list(events)
            if source_id is not None:
                new = [NewEvent(e, event_id=event_id_for("host", source_id, i)) for i, e in enumerate(events)]
            try:
                await store.append(host_stream(host_id), new, expected_version=version, metadata=metadata)
            except DuplicateEvent:
                if source_id is None:
                    raise
                log.info("host.already_recorded", host_id=host_id, source=source_id)
                return Outcome(state, [])
            for event in events:
                log.info("host.event", host_id=host_id, type=type(event).type_name)
        return Outcome(state, events)

    try:
        return await decide_and_append(attempt)
    except Contended as exc:
        log.warning("host.contended", host_id=host_id, attempts=exc.attempts, error=str(exc.conflict))
        raise Rejected(
            "BUSY", f"host {host_id} is changing too fast to decide; try again", status=503
        ) from exc
