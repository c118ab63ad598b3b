"""Cancelling tasks so that they really end.

Before Python 3.12, `asyncio.wait_for` can swallow a cancellation that arrives as
the future it waits on completes (bpo-42130); libraries use it (nats-py's
requests), and a retry loop around such a call then runs on as if never told to
stop. A hostd that left the pool hung that way whenever the server dropped its
connection at the moment it was cancelled. Sending the cancellation again
until the tasks are done closes that window.
"""

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_until_done"]


async def cancel_until_done(tasks: Iterable["asyncio.Future[Any]"], resend_after_s: float = 1.0) -> None:
    """Cancel `tasks` and wait until every one has ended, cancelling again those still running
    every `resend_after_s`. Their results and errors are left on them for the caller."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=resend_after_s)
