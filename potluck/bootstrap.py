"""Process lifecycle shared by the central services: store, bus, relay, signals.

One AsyncExitStack owns the database pool and the NATS connection; SIGTERM or
SIGINT ends the service's tasks, then the connection is flushed and closed and the
pool closed. Each central service embeds an outbox relay by default; the advisory
lock keeps exactly one of them publishing, so any one may die.
"""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import nats.errors
import structlog
from nats.aio.client import Client as NATS

from potluck.events import EventStore, OutboxRelay, ensure_streams
from potluck.events.bus import StreamReplicasError
from potluck.events.connection import connect_bus
from potluck.events.relay import watch_relay_lag
from potluck.kernel.metrics import pool_metrics
from potluck.kernel.redacted_urls import redacted
from potluck.runner import (
    StoppedWhileStarting,
    exit_crashed,
    run_tasks_until,
    run_until_signalled,
    unless_stopped,
)
from potluck.telemetry import TelemetryConfigError, configure_telemetry

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Backends:
    database_url: str
    nats_url: str
    nats_seed_file: Path | None = None
    relay: bool = True
    relay_batch_size: int = 500
    #: Copies of each JetStream stream to keep (--stream-replicas); None keeps what they have.
    stream_replicas: int | None = None

    def seed(self) -> str | None:
        if self.nats_seed_file is None:
            return None
        from potluck.registry.enrollment import read_seed

        return read_seed(self.nats_seed_file)


Body = Callable[[EventStore, NATS], Awaitable[None]]


class BusGone(Exception):
    """The NATS client closed its connection for good (see connect_bus): the service would go on
    deaf to the bus, answering nothing and publishing nothing, while it looked alive."""


async def _failed_once_set(gone: asyncio.Event, name: str, url: str) -> None:
    await gone.wait()
    raise BusGone(
        f"the connection to NATS at {redacted(url)} was closed for good and will not come back; "
        f"{name} ends so that its supervisor starts it again"
    )


#: How long a stopping service waits for the server to confirm what it published.
LET_GO_FLUSH_S = 5


async def _let_go(nc: NATS) -> None:
    """Close `nc` at a stop, what the service published confirmed by the server first (a
    flush, within LET_GO_FLUSH_S); nothing once it is closed already.

    Not nats-py's drain(): by now the service's tasks have ended, so what its subscriptions
    still hold (a pull consumer's fetched batch, a reply come late) has no one left to take
    it, and drain() waited for them to be taken, up to its 30 s drain timeout: one stop in
    three of an allocator outlived its supervisor's grace and was killed (test_allocator_stop)."""
    if nc.is_closed:
        return
    if nc.is_connected:
        try:
            await nc.flush(timeout=LET_GO_FLUSH_S)
        except (nats.errors.Error, TimeoutError) as exc:  # gone meanwhile, or too slow
            log.warning("bus.unconfirmed_at_stop", error=repr(exc))
    await nc.close()


class EventLogUnreachable(Exception):
    """The event log's database did not let this service in; the message says which and why."""


async def open_event_log(database_url: str) -> EventStore:
    """The event store, or EventLogUnreachable saying which database did not answer and where
    to name another (it was a traceback ending in ConnectionRefusedError)."""
    try:
        return await EventStore.open(database_url, max_size=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise EventLogUnreachable(
            f"cannot open the event log at {redacted(database_url)} ({exc}); is Postgres "
            "running there, and the URL right? (--database-url or POTLUCK_DATABASE_URL)"
        ) from None


async def serve(name: str, backends: Backends, body: Body) -> None:
    async def main(stop: asyncio.Event) -> None:
        try:
            await start_and_serve(stop)
        except StoppedWhileStarting:
            log.info(f"{name}.stopped_while_starting")
        except BusGone as exc:
            # A non-zero exit: `potluck up`'s supervisor, systemd and compose start it again.
            log.error(f"{name}.bus_gone", error=str(exc))
            raise SystemExit(f"error: {exc}") from None
        except OSError as exc:
            # What the machine refused (a port taken, a file it may not read): its message says
            # what and where, and a traceback around it would only bury it (`potluck up` shows
            # the last lines of the service's log).
            log.error(f"{name}.failed", error=str(exc))
            raise SystemExit(f"error: {exc}") from None
        except Exception as exc:
            exit_crashed(
                log,
                name,
                exc,
                hint=f"{name} exits with code 1 and its supervisor (`potluck up`, systemd, compose) "
                "starts it again; if it keeps crashing, this line's exception says where",
            )

    async def start_and_serve(stop: asyncio.Event) -> None:
        async with contextlib.AsyncExitStack() as stack:
            try:
                store = await unless_stopped(stop, open_event_log(backends.database_url))
            except EventLogUnreachable as exc:
                # Raised here, not in unless_stopped's task: asyncio lets a SystemExit out of a
                # task's step with a "Task exception was never retrieved" traceback.
                raise SystemExit(f"error: {exc}") from None
            stack.push_async_callback(store.close)
            gone = asyncio.Event()

            async def closed_for_good() -> None:
                gone.set()

            nc = await unless_stopped(
                stop,
                connect_bus(
                    backends.nats_url,
                    name=f"potluck-{name}",
                    seed=backends.seed(),
                    on_closed_for_good=closed_for_good,
                ),
            )
            stack.push_async_callback(_let_go, nc)
            # Before anything subscribes: later ensure_streams calls keep these replicas.
            try:
                await ensure_streams(nc.jetstream(), backends.stream_replicas)
            except StreamReplicasError as exc:
                raise SystemExit(f"error: {exc}") from None
            jobs: list[Awaitable[None]] = [body(store, nc), _failed_once_set(gone, name, backends.nats_url)]
            if backends.relay:
                relay = OutboxRelay(store, nc.jetstream(), batch_size=backends.relay_batch_size)
                jobs.append(relay.run())
                watch_relay_lag(pool_metrics(), store)
            jobs.append(pool_metrics().run())
            log.info(f"{name}.started", relay=backends.relay)
            await run_tasks_until(stop, *jobs)
            log.info(f"{name}.stopping")

    try:
        shutdown_telemetry = configure_telemetry(f"potluck-{name}")
    except TelemetryConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    try:
        await run_until_signalled(main)
    finally:
        shutdown_telemetry()
