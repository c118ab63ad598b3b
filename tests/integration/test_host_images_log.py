"""hostd's image reports into the log (real Postgres): a fact only when the set changed."""

import asyncio

from potluck.allocator.image_locality import last_reported, record_images_held
from potluck.contracts.host_images import images_stream
from potluck.contracts.reports import ImagesHeld
from potluck.events import EventStore

A = "docker.io/library/a:1"
B = "docker.io/library/b:1"


async def test_a_report_is_logged_only_when_the_set_changed(store: EventStore) -> None:
    """Tried: the same set reported again (after a reconnect, in another order), a report
    redelivered, a changed set, and two replicas recording different reports at once. Must
    hold: one event per change, none for a repeat or a redelivery, and the last event is the
    last set recorded."""
    first = ImagesHeld(images=[A, B])
    await record_images_held(store, "h1", first)
    await record_images_held(store, "h1", first)  # redelivered
    await record_images_held(store, "h1", ImagesHeld(images=[B, A]))  # sent again after a reconnect
    assert await store.stream_version(images_stream("h1")) == 1
    await record_images_held(store, "h1", ImagesHeld(images=[A]))
    assert await last_reported(store, "h1") == (frozenset({A}), 2)
    await asyncio.gather(
        record_images_held(store, "h1", ImagesHeld(images=[B])),
        record_images_held(store, "h1", ImagesHeld(images=[B])),
    )
    assert await last_reported(store, "h1") == (frozenset({B}), 3)
    assert await last_reported(store, "h2") == (None, 0)
