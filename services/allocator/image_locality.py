"""A host's `ImagesHeld` report into the fact placement reads: `HostImagesReported` on
`images-<host_id>`, logged only when the set differs from the last one logged.

Decided on the stream itself (its last event and version), not on the model, so
a report that arrives before the model caught up is not logged twice; a
concurrent replica's append makes ours fail with WrongExpectedVersion and
`decide_and_append` decides again. The event id derives from the report's id,
so a redelivered report is logged once.
"""

from collections.abc import Callable

import structlog

from potluck.contracts.host_images import HostImagesReported, images_stream
from potluck.contracts.reports import ImagesHeld
from potluck.events import (
    DuplicateEvent,
    EventStore,
    NewEvent,
    SkippedEvents,
    StreamAppend,
    decide_and_append,
    decode_or_skip,
    event_id_for,
)

log = structlog.get_logger(__name__)


async def last_reported(store: EventStore, host_id: str) -> tuple[frozenset[str] | None, int]:
    """The images last logged for the host (None: never) and the stream's version."""
    stream = images_stream(host_id)
    version = await store.stream_version(stream)
    if version == 0:
        return None, 0
    for record in reversed(await store.read_stream(stream, after_version=version - 1)):
        event = decode_or_skip(record, SkippedEvents(), reader="allocator")
        if isinstance(event, HostImagesReported):
            return frozenset(event.images), version
    return None, version


async def record_images_held(
    store: EventStore, host_id: str, report: ImagesHeld, admit: Callable[[], bool] = lambda: True
) -> bool:
    """Log the report's set when it differs from the last one logged and `admit()` says so (the
    allocator's rate per host); False when it differed and `admit()` held it back."""
    images = sorted(set(report.images))
    held_back = False

    async def attempt() -> None:
        nonlocal held_back
        last, version = await last_reported(store, host_id)
        if last is not None and last == frozenset(images):
            return
        held_back = not admit()
        if held_back:
            return
        event = HostImagesReported(host_id=host_id, images=images)
        append = StreamAppend(
            images_stream(host_id),
            [NewEvent(event, event_id=event_id_for("report", report.report_id))],
            version,
        )
        try:
            await store.append_streams(
                [append], metadata={"actor": "allocator", "causation_id": report.report_id}
            )
        except DuplicateEvent:
            return
        log.info("allocator.host_images", host_id=host_id, images=len(images))

    await decide_and_append(attempt)
    return not held_back
