"""One way to decide and append: optimistic concurrency, retried by one policy.

A decision reads state, decides on it, and appends with the expected version
of every stream it decided on. When another writer moved one of those streams
first, the append fails with WrongExpectedVersion and nothing was written; the
decision is simply made again on fresher state. `decide_and_append` runs that
loop for every service: `before_retry` refreshes what the next attempt reads
(for a service that decides on a followed read model, waiting until the model
has caught up with the log), a short random wait keeps competing replicas
from colliding in lock step, and after `policy.attempts` the conflict is
raised as `Contended`, for the caller to refuse the command as busy.

tenacity does the retrying: a well-kept library rather than one more loop.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_random

from potluck.events.errors import EventsError, WrongExpectedVersion

__all__ = ["DEFAULT_RETRY", "Contended", "RetryPolicy", "decide_and_append"]

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 20
    #: Each retry first waits a random time up to this long.
    max_jitter_s: float = 0.02


DEFAULT_RETRY = RetryPolicy()


class Contended(EventsError):
    """Other writers won every attempt; the command may be tried again later."""

    def __init__(self, conflict: WrongExpectedVersion, attempts: int) -> None:
        super().__init__(f"gave up after {attempts} attempts: {conflict}")
        self.conflict = conflict
        self.attempts = attempts


async def decide_and_append(
    attempt: Callable[[], Awaitable[T]],
    *,
    before_retry: Callable[[], Awaitable[None]] | None = None,
    policy: RetryPolicy = DEFAULT_RETRY,
) -> T:
    """Run `attempt` (read, decide, append with expected versions) until no other writer wins."""

    async def refresh(state: RetryCallState) -> None:
        if before_retry is not None:
            await before_retry()

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(WrongExpectedVersion),
        stop=stop_after_attempt(policy.attempts),
        wait=wait_random(0, policy.max_jitter_s),
        before_sleep=refresh,
        reraise=True,
    )
    try:
        async for trying in retrying:
            with trying:
                return await attempt()
    except WrongExpectedVersion as exc:
        raise Contended(exc, policy.attempts) from exc
    raise AssertionError("unreachable: tenacity either returns, raises or retries")
