"""Follow the log: catch up from a position, then wait for NOTIFY, forever.

A follower survives Postgres restarting under it: it waits, reconnects and
resumes after the last position it handed out, so nothing is skipped and
nothing is handed out twice. Because the store serialises appends (see
store.py), ``position > last`` never misses an event that commits late.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import structlog

from potluck.events.schema import RecordedEvent
from potluck.events.store import NOTIFY_CHANNEL, EventStore
from potluck.kernel.raised_in import raised_in

log = structlog.get_logger(__name__)

#: Errors that mean "the database is away for now", as opposed to a bug.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    # What asyncpg raises on a connection the server terminated while shutting down, when the
    # next statement meets the half-read termination ("cannot switch to state 12; another
    # operation (2) is in progress": MagicStack/asyncpg#1069). Seen on the relay's own
    # connection in tests/e2e/test_database_outage.py; it ended the registry.
    asyncpg.InternalClientError,
)

#: asyncpg's own among them: the database connection's, whatever raised them.
_RAISED_BY_ASYNCPG = tuple(e for e in TRANSIENT_DB_ERRORS if e.__module__.startswith("asyncpg."))


def database_away(exc: BaseException) -> bool:
    """Whether `exc` means the event log's database is away for now: one of TRANSIENT_DB_ERRORS
    that asyncpg raised (its own, or an OSError or a timeout out of its calls). The same OSError
    out of a file the process writes (a full disk, a path that is a file) is the process's own
    failure, which a handler answering "the log is away, ask again" would hide from its operator."""
    if isinstance(exc, _RAISED_BY_ASYNCPG):
        return True
    return isinstance(exc, TRANSIENT_DB_ERRORS) and raised_in(exc, ("asyncpg",))


class LogFollower:
    def __init__(
        self,
        store: EventStore,
        *,
        after_position: int = 0,
        batch_size: int = 1000,
        poll_interval: float = 2.0,
        max_backoff: float = 5.0,
    ) -> None:
        """`poll_interval` bounds the wait when a notification is lost (e.g. across a reconnect)."""
        self.store = store
        self.position = after_position
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self._wakeup = asyncio.Event()
        self._listener: asyncpg.Connection | None = None

    def _notified(self, *_: Any) -> None:
        self._wakeup.set()

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        self._listener = await asyncpg.connect(self.store.dsn, timeout=10)
        await self._listener.add_listener(NOTIFY_CHANNEL, self._notified)

    async def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(*TRANSIENT_DB_ERRORS):
                await self._listener.close(timeout=2)
            self._listener = None

    async def batches(self) -> AsyncIterator[list[RecordedEvent]]:
        """Non-empty batches in log order; each starts right after the last one handed out."""
        backoff = 0.1
        try:
            while True:
                try:
                    await self._listen()
                    # Clear before reading: a NOTIFY that lands during the read
                    # then wakes the next wait instead of being lost.
                    self._wakeup.clear()
                    batch = await self.store.read_all(self.position, self.batch_size)
                except TRANSIENT_DB_ERRORS as exc:
                    log.warning(
                        "follower.database_unavailable",
                        error=str(exc),
                        retry_in=backoff,
                        position=self.position,
                    )
                    await self.close()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    continue
                backoff = 0.1
                if batch:
                    self.position = batch[-1].position
                    yield batch
                    if len(batch) == self.batch_size:
                        continue
                # A short batch held everything committed when it was read; anything
                # committed since has notified (and set the wake-up cleared before
                # that read), so reading again before then would find nothing.
                with contextlib.suppress(asyncio.TimeoutError):
                    async with asyncio.timeout(self.poll_interval):
                        await self._wakeup.wait()
        finally:
            await self.close()

    async def events(self) -> AsyncIterator[RecordedEvent]:
        async for batch in self.batches():
            for event in batch:
                yield event
