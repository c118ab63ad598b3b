"""Optimistic-concurrency retries around decide-then-append (tenacity)."""

from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random

from potluck.events import WrongExpectedVersion

T = TypeVar("T")


async def on_conflict(attempt: Callable[[], Awaitable[T]], *, attempts: int = 8) -> T:
    """Runs `attempt` again (it reloads state) while another writer moved the stream first."""
    async for trying in AsyncRetrying(
        retry=retry_if_exception_type(WrongExpectedVersion),
        stop=stop_after_attempt(attempts),
        wait=wait_random(0, 0.02),
        reraise=True,
    ):
        with trying:
            return await attempt()
    raise AssertionError("unreachable")
