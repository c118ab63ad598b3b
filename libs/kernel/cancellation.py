"""Cancelling tasks so that they really end.

Before Python 3.12, `asyncio.wait_for` can swallow a cancellation that arrives as
the future it waits on completes (bpo-42130); libraries use it (nats-py's
requests), and a retry loop around such a call then runs on as if never told to
stop. A hostd that left the pool hung that way whenever the server dropped its
connection at the moment it was cancelled. Sending the cancellation again
until the tasks are done closes that window.

A task that ignores every cancellation (a bug: one that catches CancelledError in a
loop) would still keep a stopped process alive; `then_end_the_rest` gives the tasks
left behind a bounded time and then hands them to its caller, which ends the
process and names them (potluck.cli.run).
"""

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

__all__ = ["cancel_until_done", "task_whereabouts", "then_end_the_rest"]

T = TypeVar("T")


async def cancel_until_done(
    tasks: Iterable["asyncio.Future[Any]"], resend_after_s: float = 1.0, within_s: float | None = None
) -> set["asyncio.Future[Any]"]:
    """Cancel `tasks` and wait until every one has ended, cancelling again those still running
    every `resend_after_s`; with `within_s`, for at most that long. Their results and errors are
    left on them for the caller; returned: those still running (none without `within_s`)."""
    loop = asyncio.get_running_loop()
    deadline = None if within_s is None else loop.time() + within_s
    pending = {task for task in tasks if not task.done()}
    while pending:
        wait_s = resend_after_s if deadline is None else min(resend_after_s, deadline - loop.time())
        if wait_s <= 0:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=wait_s)
    return pending


def task_whereabouts(task: "asyncio.Future[Any]") -> str:
    """A task's name and where its coroutine waits (file:line), for an operator's log."""
    name = task.get_name() if isinstance(task, asyncio.Task) else repr(task)
    frames = task.get_stack(limit=1) if isinstance(task, asyncio.Task) else []
    if not frames:
        return name
    code = frames[-1].f_code
    return f"{name} in {code.co_qualname} ({code.co_filename}:{frames[-1].f_lineno})"


async def then_end_the_rest(
    main: Awaitable[T],
    *,
    grace_s: float | None = None,
    on_stuck: Callable[[list["asyncio.Future[Any]"]], None] | None = None,
) -> T:
    """`main`'s outcome, once every other task of the loop has ended as well.

    asyncio.run cancels the tasks `main` leaves behind once, then waits for them without
    bound: a library's task that lost that one cancellation (nats-py's reconnect loop, in a
    hostd whose connection the server dropped as it stopped for good) kept the process alive
    forever. Here they are cancelled until they are done; asyncio.run then finds none left.
    With `grace_s`, those still running that long after `main` ended go to `on_stuck`, which
    must end them or the process (asyncio.run would wait for them for ever).
    """
    try:
        return await main
    finally:
        loop = asyncio.get_running_loop()
        deadline = None if grace_s is None else loop.time() + grace_s
        me = asyncio.current_task()
        # Again while any is left: one may start another as it ends (a client's close does).
        while rest := [task for task in asyncio.all_tasks() if task is not me and not task.done()]:
            left_s = None if deadline is None else max(deadline - loop.time(), 0.0)
            stuck = await cancel_until_done(rest, within_s=left_s)
            if stuck:
                if on_stuck is not None:
                    on_stuck(sorted(stuck, key=task_whereabouts))
                break
