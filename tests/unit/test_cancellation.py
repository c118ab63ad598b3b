import asyncio
import threading

from potluck.kernel.cancellation import cancel_until_done, then_end_the_rest


async def test_a_task_that_swallows_one_cancellation_still_ends() -> None:
    """A retry loop whose first cancellation is lost (as asyncio.wait_for before 3.12 can lose it)
    keeps running after one cancel(); cancel_until_done sends it again, and it ends, while a
    well-behaved task beside it ends at the first."""
    swallowed = 0

    async def loses_the_first_cancel() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1

    stubborn = asyncio.ensure_future(loses_the_first_cancel())
    polite = asyncio.ensure_future(asyncio.sleep(3600))
    await asyncio.sleep(0)
    await cancel_until_done([stubborn, polite], resend_after_s=0.01)
    assert stubborn.cancelled()
    assert polite.cancelled()
    assert swallowed == 1


async def test_finished_tasks_keep_their_results_and_errors() -> None:
    async def fails() -> None:
        raise ValueError("kept")

    done = asyncio.ensure_future(asyncio.sleep(0, result="kept"))
    failed = asyncio.ensure_future(fails())
    await asyncio.sleep(0.01)
    await cancel_until_done([done, failed])
    assert done.result() == "kept"
    assert isinstance(failed.exception(), ValueError)


def test_a_process_ends_though_a_task_it_left_behind_loses_its_cancellation() -> None:
    """What is tried: a main that returns while a task it started loses the one cancellation
    asyncio.run sends at the end (as nats-py's reconnect loop did in a hostd that had left the
    pool). What must hold: the loop still ends, with main's result, and the task is cancelled.
    Plain asyncio.run would wait for that task forever, so it runs in a thread, given 30 s."""
    left: list[asyncio.Task[None]] = []

    async def loses_the_first_cancel() -> None:
        lost = False
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if lost:
                    raise
                lost = True

    async def main() -> str:
        left.append(asyncio.ensure_future(loses_the_first_cancel()))
        await asyncio.sleep(0.05)
        return "main's result"

    outcome: list[str] = []
    runner = threading.Thread(
        target=lambda: outcome.append(asyncio.run(then_end_the_rest(main()))), daemon=True
    )
    runner.start()
    runner.join(30)
    assert not runner.is_alive(), "the loop did not end: a task it left behind is still running"
    assert outcome == ["main's result"]
    assert left[0].cancelled()
