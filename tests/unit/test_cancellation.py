import asyncio
import contextlib
import subprocess
import sys
import textwrap
import threading
from typing import Any

from potluck.kernel.cancellation import cancel_until_done, task_whereabouts, then_end_the_rest


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


def test_tasks_that_ignore_every_cancellation_are_handed_over_after_the_grace() -> None:
    """What is tried: a main that returns while a task it started ignores every cancellation
    (catches CancelledError in a loop), with a grace of 0.2 s. What must hold: `on_stuck` gets
    that task, and only it, named with the coroutine it waits in; a polite task beside it has
    ended by then; once `on_stuck` lets it go, the loop ends with main's result."""
    handed: list[list[str]] = []
    let_go = threading.Event()

    async def ignores_cancellation() -> None:
        while not let_go.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.01)

    polite: list[asyncio.Task[None]] = []

    async def main() -> str:
        asyncio.ensure_future(ignores_cancellation()).set_name("stubborn")
        polite.append(asyncio.ensure_future(asyncio.sleep(3600)))
        await asyncio.sleep(0.05)
        return "main's result"

    def on_stuck(tasks: list[asyncio.Future[Any]]) -> None:
        handed.append([task_whereabouts(t) for t in tasks])
        assert polite[0].cancelled(), "the polite task ends within the grace"
        let_go.set()

    outcome: list[str] = []
    runner = threading.Thread(
        target=lambda: outcome.append(asyncio.run(then_end_the_rest(main(), grace_s=0.2, on_stuck=on_stuck))),
        daemon=True,
    )
    runner.start()
    runner.join(30)
    assert not runner.is_alive(), "the loop did not end"
    assert outcome == ["main's result"]
    assert len(handed) == 1, handed
    assert len(handed[0]) == 1, handed
    assert handed[0][0].startswith("stubborn in "), handed
    assert "ignores_cancellation" in handed[0][0], handed


def test_a_potluck_process_with_a_task_that_never_ends_exits_70_and_names_it() -> None:
    """What is tried: the `potluck` command's runner (potluck.cli.run, with its grace cut to
    0.5 s) over a main that leaves behind a task ignoring every cancellation, in a process of
    its own. What must hold: the process ends by itself (given 60 s) with exit status 70, and
    its log names the task and where it waits, with a hint for the operator."""
    script = textwrap.dedent(
        """
        import asyncio
        import potluck.cli as cli
        from potluck.logs import configure_logging

        configure_logging("INFO", json=True)
        cli.LEFTOVER_GRACE_S = 0.5

        async def never_ends():
            while True:
                try:
                    await asyncio.sleep(0.01)
                except asyncio.CancelledError:
                    pass

        async def main():
            asyncio.ensure_future(never_ends()).set_name("never-ends")
            await asyncio.sleep(0.05)

        cli.run(main())
        print("unreachable: run() returned")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    log = done.stdout + done.stderr
    assert done.returncode == 70, log
    assert "unreachable" not in log
    assert "process.tasks_did_not_end" in log, log
    assert "never-ends in never_ends" in log, log
    assert "ignores its cancellation" in log, log
