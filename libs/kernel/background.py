"""Tasks a service starts and does not await, held until they end and cancelled at its stop.

The event loop keeps only a weak reference to a task (asyncio's docs on `create_task`: save a
reference, "to avoid a task disappearing mid-execution"), so work started from a callback (a
NATS message, an SSH channel's data, a D-Bus signal) must be held somewhere. Each service held
its own set, with the same add and discard; this is that set, and the cancellation at stop.
"""

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["BackgroundTasks"]

T = TypeVar("T")


class BackgroundTasks:
    """The tasks started here and not yet done."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, work: Coroutine[Any, Any, T], name: str | None = None) -> "asyncio.Task[T]":
        """Run `work` in a task held until it is done."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator["asyncio.Task[Any]"]:
        return iter(list(self._tasks))

    def cancel(self) -> list["asyncio.Task[Any]"]:
        """Cancel every task still running; those tasks, for whoever waits for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        return tasks

    async def aclose(self) -> None:
        """Cancel every task still running and wait until they have all ended."""
        await asyncio.gather(*self.cancel(), return_exceptions=True)
