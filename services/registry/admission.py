"""Requests of one kind handled a few at a time, and those that waited too long dropped.

nats-py runs one subscription's callbacks one after another, so thousands of hosts
registering at once (a campus after a network blip, a scale run) queue behind one
another: each registration reads and appends the host's stream and creates its
consumer, and past a few hundred queued the last ones are answered after their hostd
stopped waiting (5 s). It asks again, so the queue only grows: every request is
served too late to count.

`Admission` takes each request off the subscription at once, lets `limit` of them
run together (the database pool's size is the useful bound) in arrival order, and
drops unanswered any that waited in line longer than its sender waits
(`max_wait_s`): the work goes to requests someone still waits for, and the dropped
ones' hosts ask again after their backoff. Nothing is lost by dropping: a
registration not run recorded nothing.

Only requests the gate admitted (replies.py: the host's own inbox, within its rate) come
into the line, as they arrive: a host in a loop is refused before it, so its requests
never stand in front of other hosts' (taken in unchecked, 200,000 of one host's
registrations held every other host's past its sender's patience).

`expired` is the pure decision, tested without a loop.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from nats.aio.msg import Msg

from potluck.kernel.background import BackgroundTasks

__all__ = ["Admission", "expired"]

log = structlog.get_logger(__name__)

Callback = Callable[[Msg], Awaitable[None]]


def expired(waited_s: float, max_wait_s: float) -> bool:
    """A request that waited `waited_s` in line is no longer waited for by its sender."""
    return waited_s > max_wait_s


class Admission:
    def __init__(
        self,
        kind: str,
        *,
        limit: int = 8,
        max_wait_s: float = 4.0,
        clock: Callable[[], float] = time.monotonic,
        log_every: int = 100,
    ) -> None:
        if limit < 1 or max_wait_s <= 0:
            raise ValueError(f"admission needs limit >= 1 and max_wait_s > 0 (got {limit}, {max_wait_s})")
        self.kind = kind
        self.max_wait_s = max_wait_s
        self.clock = clock
        self.log_every = log_every
        self._slots = asyncio.Semaphore(limit)
        self._tasks = BackgroundTasks()
        #: Requests dropped for waiting too long, since start.
        self.dropped = 0

    @property
    def waiting(self) -> int:
        """Requests taken and not finished (running or in line)."""
        return len(self._tasks)

    def admit(self, callback: Callback) -> Callback:
        """The subscription's callback: `callback` run under this admission."""

        async def take(msg: Msg) -> None:
            self._tasks.start(self._run(callback, msg, self.clock()))

        return take

    async def _run(self, callback: Callback, msg: Msg, arrived: float) -> None:
        async with self._slots:
            waited = self.clock() - arrived
            if expired(waited, self.max_wait_s):
                self.dropped += 1
                if self.dropped == 1 or self.dropped % self.log_every == 0:
                    log.warning(
                        "registry.request_dropped",
                        kind=self.kind,
                        waited_s=round(waited, 3),
                        dropped=self.dropped,
                        waiting=self.waiting,
                        hint="more requests at once than the registry serves in time; "
                        "their senders ask again after a backoff",
                    )
                return
            try:
                await callback(msg)
            except Exception:
                # The callback answers its own errors; one that escapes is a bug, logged, and the
                # next request is served all the same.
                log.exception("registry.request_failed", kind=self.kind, subject=msg.subject)

    async def close(self) -> None:
        """Cancel what is still running or in line (at shutdown)."""
        await self._tasks.aclose()
