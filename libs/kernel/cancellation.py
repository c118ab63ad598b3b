"""Cancelling tasks so that they really end.

Before Python 3.12, `asyncio.wait_for` can swallow a cancellation that arrives as
the future it waits on completes (bpo-42130); libraries use it (nats-py's
requests), and a retry loop around such a call then runs on as if never told to
stop. A hostd that left the pool hung that way whenever the server dropped its
connection at the moment it was cancelled. Sending the cancellation again
until the tasks are done closes that window.
"""

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

__all__ = ["cancel_until_done", "then_end_the_rest"]

T = TypeVar("T")


async def cancel_until_done(tasks: Iterable["asyncio.Future[Any]"], resend_after_s: float = 1.0) -> None:
    """Cancel `tasks` and wait until every one has ended, cancelling again those still running
    every `resend_after_s`. Their results and errors are left on them for the caller."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=resend_after_s)


async def then_end_the_rest(main: Awaitable[T]) -> T:
    """`main`'s outcome, once every other task of the loop has ended as well.

    asyncio.run cancels the tasks `main` leaves behind once, then waits for them without
    bound: a library's task that lost that one cancellation (nats-py's reconnect loop, in a
    hostd whose connection the server dropped as it stopped for good) kept the process alive
    forever. Here they are cancelled until they are done; asyncio.run then finds none left.
    """
    try:
        return await main
    finally:
        me = asyncio.current_task()
        # Again while any is left: one may start another as it ends (a client's close does).
        while rest := [task for task in asyncio.all_tasks() if task is not me and not task.done()]:
            await cancel_until_done(rest)
