"""BackgroundTasks (libs/kernel/background.py): work started and not awaited is held until it
ends, and ended at a service's stop."""

import asyncio
import gc

from potluck.kernel.background import BackgroundTasks


async def test_a_task_is_held_until_done_then_let_go() -> None:
    """Tried: a task started with no other reference, and the garbage collector run while it
    waits. Must hold: it still runs to its end, and is no longer held once done."""
    tasks = BackgroundTasks()
    went_on = asyncio.Event()
    release = asyncio.Event()

    async def work() -> None:
        await release.wait()
        went_on.set()

    tasks.start(work(), name="held")
    gc.collect()
    assert len(tasks) == 1
    assert [t.get_name() for t in tasks] == ["held"]
    release.set()
    async with asyncio.timeout(5):
        await went_on.wait()
    await asyncio.sleep(0)  # the done callback runs on the next turn
    assert len(tasks) == 0


async def test_aclose_cancels_what_runs_and_waits_for_it_to_end() -> None:
    """Tried: closing while one task waits forever and one has a cleanup to do. Must hold: both
    are cancelled, the cleanup has run when aclose returns, and nothing is held afterwards."""
    tasks = BackgroundTasks()
    cleaned = []

    async def forever() -> None:
        await asyncio.Event().wait()

    async def with_cleanup() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0.01)
            cleaned.append(True)

    started = [tasks.start(forever()), tasks.start(with_cleanup())]
    await asyncio.sleep(0)
    await tasks.aclose()
    assert all(t.cancelled() for t in started)
    assert cleaned == [True]
    assert len(tasks) == 0


async def test_cancel_returns_the_tasks_it_cancelled() -> None:
    tasks = BackgroundTasks()
    task = tasks.start(asyncio.sleep(3600))
    assert tasks.cancel() == [task]
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
