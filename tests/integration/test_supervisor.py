"""`potluck up`'s supervisor on real child processes (short-lived `sh`), with short pauses."""

import asyncio
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

from potluck.localstack.process import ChildProcess
from potluck.supervisor import RestartPolicy, Supervisor

FAST = RestartPolicy(first_delay_s=0.05, max_delay_s=0.2, stable_after_s=30.0, poll_s=0.02)


def child(tmp_path: Path, script: str) -> ChildProcess:
    proc = ChildProcess(["sh", "-c", script], log_path=tmp_path / "child.log")
    proc.start()
    return proc


async def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


async def test_a_child_killed_is_started_again_and_the_console_says_so(tmp_path: Path) -> None:
    """SIGKILL a running child: a new process of it runs, and both the death and the restart are said."""
    said: list[str] = []
    proc = child(tmp_path, "sleep 60")
    first = proc.pid
    assert first is not None
    watch = asyncio.create_task(Supervisor(said.append, FAST).keep_running("hostd-local", proc))
    try:
        os.kill(first, signal.SIGKILL)
        # The start runs in a thread: what it says follows it.
        await wait_until(lambda: proc.running() and proc.pid != first and len(said) >= 2)
        assert said[0].startswith("hostd-local was killed by signal 9; restarting it in 0.05s"), said
        assert re.fullmatch(r"restarted hostd-local \(pid \d+, restart 1\)", said[1]), said
    finally:
        watch.cancel()
        proc.stop()


async def test_a_child_that_keeps_dying_waits_longer_each_time_up_to_the_cap(tmp_path: Path) -> None:
    """A child that exits at once, again and again: pauses 0.05, 0.1, 0.2, then 0.2 (the cap)."""
    said: list[str] = []
    proc = child(tmp_path, "exit 4")
    watch = asyncio.create_task(Supervisor(said.append, FAST).keep_running("registry", proc))
    try:
        await wait_until(lambda: sum("restarting it in" in s for s in said) >= 5)
    finally:
        watch.cancel()
        proc.stop()
    pauses = [float(m.group(1)) for s in said if (m := re.search(r"restarting it in ([\d.]+)s", s))]
    assert pauses[:5] == [0.05, 0.1, 0.2, 0.2, 0.2]
    assert all(s.startswith("registry exited with code 4") for s in said if "restarting it in" in s)


async def test_a_child_that_ran_a_while_is_restarted_at_once_and_its_pauses_start_over(
    tmp_path: Path,
) -> None:
    """Past `stable_after_s` a death is no crash loop: restarted without a pause; then a quick
    death pauses for the first delay again, not for the next one of an old series."""
    said: list[str] = []
    policy = RestartPolicy(first_delay_s=0.05, max_delay_s=5.0, stable_after_s=0.3, poll_s=0.02)
    marker = tmp_path / "ran-once"
    # The first run lives 0.6 s (past stable_after_s); every later one exits at once.
    proc = child(tmp_path, f"if [ -e {marker} ]; then exit 1; fi; touch {marker}; sleep 0.6")
    watch = asyncio.create_task(Supervisor(said.append, policy).keep_running("allocator", proc))
    try:
        await wait_until(lambda: sum("restarting it in" in s for s in said) >= 2)
    finally:
        watch.cancel()
        proc.stop()
    assert said[0] == "allocator exited with code 0 after running a while; restarting it now", said
    pauses = [s for s in said if "restarting it in" in s]
    assert pauses[0].endswith("restarting it in 0.05s"), said
    assert pauses[1].endswith("restarting it in 0.1s"), said


async def test_once_the_watch_is_cancelled_nothing_is_restarted(tmp_path: Path) -> None:
    """`potluck down` cancels the watch before it stops the children: a child ending then stays ended."""
    said: list[str] = []
    proc = child(tmp_path, "sleep 60")
    watch = asyncio.create_task(Supervisor(said.append, FAST).keep_running("sshgateway", proc))
    await asyncio.sleep(0.1)
    watch.cancel()
    await asyncio.gather(watch, return_exceptions=True)
    proc.stop()
    await asyncio.sleep(0.3)
    assert not proc.running()
    assert said == []


async def test_a_child_that_stopped_for_good_is_said_once_and_not_restarted(tmp_path: Path) -> None:
    """A child exiting with code 3 (hostd of a machine that left or was revoked): the watch
    ends after saying so once, and no new process of it is started."""
    said: list[str] = []
    proc = child(tmp_path, "exit 3")
    first = proc.pid
    async with asyncio.timeout(10):
        await Supervisor(said.append, FAST).keep_running("hostd-local", proc)
    assert said == [
        "hostd-local exited with code 3: it stopped for good (see its log for why); not restarting it"
    ]
    assert proc.pid == first
    assert not proc.running()
