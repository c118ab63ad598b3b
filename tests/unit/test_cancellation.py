import asyncio

from potluck.kernel.cancellation import cancel_until_done


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
