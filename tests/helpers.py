"""Small waiting and bookkeeping helpers shared by the integration tests."""

import asyncio
from collections import Counter
from collections.abc import Callable
from uuid import UUID

from potluck.events import LoggedEvent


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def stop(*tasks: "asyncio.Task[None]") -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class Received:
    """A handler that counts what it was handed, per event id."""

    def __init__(self) -> None:
        self.counts: Counter[UUID] = Counter()
        self.positions: list[int] = []
        self.events: list[LoggedEvent] = []

    async def __call__(self, delivered: LoggedEvent) -> None:
        self.counts[delivered.event_id] += 1
        self.positions.append(delivered.position)
        self.events.append(delivered)
