"""Process lifecycle for every potluck service: run until SIGTERM or SIGINT, then stop cleanly."""

import asyncio
import signal
from collections.abc import Awaitable, Callable

import structlog

from potluck.kernel.cancellation import cancel_until_done

log = structlog.get_logger(__name__)


async def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Runs `main(stop)`; SIGTERM/SIGINT set `stop`, and `main` is expected to return soon after."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await main(stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def run_tasks_until(stop: asyncio.Event, *tasks: Awaitable[None]) -> None:
    """Runs `tasks` until `stop` is set or one of them fails; then cancels the rest."""
    running = [asyncio.ensure_future(t) for t in tasks]
    stopper = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait([*running, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        await cancel_until_done([*running, stopper])
