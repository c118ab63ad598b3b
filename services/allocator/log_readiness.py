"""Whether the event log's database answers now: what `/readyz` adds to "the log is folded".

A Postgres that is stopped (SIGSTOP, a paused VM, a full disk that hangs its writes) keeps its
connections open: every request then waits up to the store's command timeout (60 s) before it is
told LOG_UNAVAILABLE, while a readiness probe that looked only at the allocator's own state kept
sending users to it. The probe asks the database one round trip, bounded by `timeout_s`.

`/readyz` is public (load balancers and supervisors call it without a token): however many ask,
the database is asked at most once per `fresh_s`, one question at a time (callers arriving while
it is out share its answer), so probes hold at most one of the store's connections that users'
requests need, and none more while the database is stopped.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

__all__ = ["LogReadiness"]

log = structlog.get_logger(__name__)


class LogReadiness:
    def __init__(
        self,
        ping: Callable[[], Awaitable[object]],
        *,
        timeout_s: float = 2.0,
        fresh_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ping = ping
        self._timeout_s = timeout_s
        self._fresh_s = fresh_s
        self._clock = clock
        self._known: tuple[float, bool] | None = None
        self._asking: tuple[float, asyncio.Task[bool]] | None = None

    async def answers(self) -> bool:
        """True when the database answered within `timeout_s`, now or less than `fresh_s` ago."""
        now = self._clock()
        if self._known is not None and now - self._known[0] < self._fresh_s:
            return self._known[1]
        if self._asking is None:
            self._asking = (now, asyncio.create_task(self._ask()))
        asked_at, question = self._asking
        left = self._timeout_s - (now - asked_at)
        if left > 0:
            # Never cancelled on a timeout: cancelling a query on a stopped server waits for that
            # server too (asyncpg sends it a cancel request), which would hold this probe with it.
            # The question stays out, the only one, until the database answers or the store's
            # command timeout ends it; probes meanwhile are told at once that it has not answered.
            done, _ = await asyncio.wait({question}, timeout=left)
            if done:
                return question.result()
        self._known = (self._clock(), False)
        return False

    def close(self) -> None:
        """At shutdown: a question still out is cancelled, not awaited (its server may be stopped)."""
        if self._asking is not None:
            self._asking[1].cancel()

    async def _ask(self) -> bool:
        try:
            await self._ping()
            answered = True
        except Exception as exc:  # a probe says "not ready", never fails: the log says why
            log.warning("allocator.log_unanswered", error=repr(exc))
            answered = False
        self._known = (self._clock(), answered)
        self._asking = None
        return answered
