"""The relay as a process of its own (services also embed it; the advisory lock keeps one leader)."""

import asyncio

import nats
import structlog

from potluck.events import EventStore, OutboxRelay
from potluck.runner import run_tasks_until, run_until_signalled

log = structlog.get_logger(__name__)


async def run_relay(database_url: str, nats_url: str, *, name: str, batch_size: int) -> None:
    async def main(stop: asyncio.Event) -> None:
        store = await EventStore.open(database_url, max_size=4)
        nc = await nats.connect(nats_url, name=f"potluck-relay-{name}", max_reconnect_attempts=-1,
                                reconnect_time_wait=0.5)
        try:
            relay = OutboxRelay(store, nc.jetstream(), name=name, batch_size=batch_size)
            log.info("relay.started", relay=name)
            await run_tasks_until(stop, relay.run())
        finally:
            await nc.drain()
            await store.close()
            log.info("relay.stopped", relay=name)

    await run_until_signalled(main)
