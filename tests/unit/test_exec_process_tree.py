"""Finding and ending an exec's processes: /proc parsed, the tree walked, real processes ended.

The pure parts under hypothesis; then the test's own child processes stand in
for an exec's: they share the test's cgroup, so the test's cgroup file is the
"container id" that `in_container` looks for, and any other string is a
container they are not in.
"""

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from potluck.hostd.process_tree import (
    Proc,
    end_tree,
    in_container,
    live_tree,
    ns_pid,
    parse_ns_pid,
    parse_stat,
    read_stat,
    select_tree,
    signal_from_host,
    visible,
)

OURS = Path("/proc/self/cgroup").read_text()
ELSEWHERE = "0123456789abcdef-not-this-container"


# /proc's files.


@given(
    st.integers(1, 2**22),
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0"), max_size=15),
    st.sampled_from("RSDZXTtIWP"),
    st.integers(0, 2**22),
)
def test_stat_is_read_whatever_the_command_name_holds(pid: int, comm: str, state: str, ppid: int) -> None:
    text = f"{pid} ({comm}) {state} {ppid} {pid} {pid} 0 -1 4194560 118 0 0 0 0 0 0 0 20 0 1 0 5 0\n"
    assert parse_stat(pid, text) == Proc(pid=pid, ppid=ppid, alive=state not in "ZX")


def test_stat_of_a_live_process_names_its_parent() -> None:
    me = read_stat(os.getpid())
    assert me == Proc(pid=os.getpid(), ppid=os.getppid(), alive=True)
    assert read_stat(2**22 + 1) is None  # above pid_max: never a process


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("Name:\tsh\nNSpid:\t4242\n", 4242),
        ("Name:\tsh\nNSpid:\t4242\t17\n", 17),
        ("Name:\tsh\nNSpid:\t4242\t310\t1\nNSpgid:\t1\n", 1),
        ("Name:\tsh\n", None),
        ("NSpid:\n", None),
        ("NSpid:\tx\n", None),
    ],
)
def test_the_pid_the_container_sees_is_the_last_nspid(status: str, expected: int | None) -> None:
    assert parse_ns_pid(status) == expected


def test_our_own_pid_is_the_one_our_namespace_sees() -> None:
    assert ns_pid(os.getpid()) == os.getpid()
    assert visible(os.getpid())
    assert not visible(2**22 + 1)


# The walk of the tree, against a reference that follows each process up to a root.


@st.composite
def _tables(draw: st.DrawFn) -> tuple[list[Proc], list[int], set[int]]:
    """A process table (each parent has a smaller PID, like a tree), roots, and who belongs."""
    count = draw(st.integers(1, 25))
    procs = [
        Proc(pid=pid, ppid=draw(st.integers(0, pid - 1)), alive=draw(st.booleans()))
        for pid in range(1, count + 1)
    ]
    roots = draw(st.lists(st.integers(1, count + 3), max_size=4))
    belongs = draw(st.sets(st.integers(1, count)))
    return procs, roots, belongs


def _reference(procs: Sequence[Proc], roots: Sequence[int], belongs: set[int]) -> set[int]:
    by_pid = {p.pid: p for p in procs}

    def taken(pid: int) -> bool:
        return pid in by_pid and by_pid[pid].alive and pid in belongs

    found = set()
    for proc in procs:
        pid = proc.pid
        while taken(pid):  # every step up to a root must be taken too
            if pid in roots:
                found.add(proc.pid)
                break
            pid = by_pid[pid].ppid
    return found


@given(_tables())
# A root listed after its own child, as end_tree re-walks the tree it found.
@example(([Proc(pid=1, ppid=0, alive=True), Proc(pid=2, ppid=1, alive=True)], [1, 2], {1, 2}))
def test_the_tree_is_the_roots_and_their_descendants_reached_through_live_members(
    table: tuple[list[Proc], list[int], set[int]],
) -> None:
    procs, roots, belongs = table
    asked: list[int] = []

    def belongs_to(pid: int) -> bool:
        asked.append(pid)
        return pid in belongs

    found = select_tree(roots, procs, belongs_to)
    assert len(found) == len(set(found))
    assert set(found) == _reference(procs, roots, belongs)
    # Parents before their children: signalled in this order, no parent outlives a child's
    # end by enough to exit in its place or start another.
    parent = {p.pid: p.ppid for p in procs}
    for i, pid in enumerate(found):
        if parent[pid] in found:
            assert found.index(parent[pid]) < i, f"{pid} before its parent {parent[pid]} in {found}"
    alive = {p.pid for p in procs if p.alive}
    assert set(asked) <= alive, "asked about a dead process"


# Real processes: the test's own children.


@pytest.fixture
def spawn() -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(script: str) -> subprocess.Popen[bytes]:
        # Default signal dispositions, as a container's processes have: a suite started under
        # `nohup` would otherwise hand its ignored SIGHUP down to the tree.
        proc = subprocess.Popen(
            ["sh", "-c", script],
            stdout=subprocess.PIPE,
            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _tree_of(root: int, size: int) -> list[int]:
    """The tree of `root` in our cgroup once it has `size` processes (the shell forks as it goes)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = live_tree([root], OURS)
        if len(found) >= size:
            return found
        time.sleep(0.02)
    raise AssertionError(f"{root} never had {size} processes: {live_tree([root], OURS)}")


def _alive(pid: int) -> bool:
    proc = read_stat(pid)
    return proc is not None and proc.alive


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


async def _from_host(pids: Sequence[int], number: int) -> bool:
    return not signal_from_host(pids, number, OURS)


def test_the_tree_holds_the_process_and_its_descendants_in_the_container(
    spawn: Callable[[str], subprocess.Popen[bytes]],
) -> None:
    shell = spawn("sleep 60 & sleep 60 & wait")
    found = _tree_of(shell.pid, 3)
    assert found[0] == shell.pid
    assert [getattr(read_stat(pid), "ppid", None) for pid in found[1:]] == [shell.pid, shell.pid]
    assert all(in_container(pid, OURS) for pid in found)
    assert live_tree([shell.pid], ELSEWHERE) == []
    assert not in_container(shell.pid, ELSEWHERE)


async def test_a_tree_is_ended_by_the_hangup(spawn: Callable[[str], subprocess.Popen[bytes]]) -> None:
    shell = spawn("sleep 60 & sleep 60 & wait")
    found = _tree_of(shell.pid, 3)
    ended = await end_tree(shell.pid, OURS, _from_host, grace_s=5)
    assert (ended.hung_up, ended.killed) == (3, 0)
    assert shell.wait(5) == -signal.SIGHUP
    assert not any(_alive(pid) for pid in found)


async def test_what_ignores_the_hangup_is_killed_after_the_grace(
    spawn: Callable[[str], subprocess.Popen[bytes]],
) -> None:
    shell = spawn("trap '' HUP; sleep 60 & wait")  # the ignored HUP is inherited by sleep
    found = _tree_of(shell.pid, 2)
    started = time.monotonic()
    ended = await end_tree(shell.pid, OURS, _from_host, grace_s=0.3)
    assert time.monotonic() - started >= 0.3
    assert (ended.hung_up, ended.killed) == (2, 2)
    assert shell.wait(5) == -signal.SIGKILL
    _until(lambda: not any(_alive(pid) for pid in found), "the KILL to take effect")


async def test_a_process_outside_the_container_is_never_signalled(
    spawn: Callable[[str], subprocess.Popen[bytes]],
) -> None:
    shell = spawn("sleep 60 & wait")
    _tree_of(shell.pid, 2)
    sent: list[tuple[Sequence[int], int]] = []

    async def record(pids: Sequence[int], number: int) -> bool:
        sent.append((pids, number))
        return True

    ended = await end_tree(shell.pid, ELSEWHERE, record, grace_s=0.1)
    assert (ended.hung_up, ended.killed, sent) == (0, 0, [])
    assert signal_from_host([shell.pid], signal.SIGKILL, ELSEWHERE) == []
    await asyncio.sleep(0.05)
    assert shell.poll() is None


def test_a_process_that_ended_before_its_signal_is_skipped(
    spawn: Callable[[str], subprocess.Popen[bytes]],
) -> None:
    """Tried: signal a tree of which one process has ended and been reaped (its PID free).
    Must hold: the live one is signalled, the ended one is skipped without an error and
    is not reported as denied."""
    ended = spawn("exit 0")
    ended.wait(5)
    live = spawn("sleep 60")
    assert signal_from_host([ended.pid, live.pid], signal.SIGKILL, OURS) == []
    assert live.wait(5) == -signal.SIGKILL


async def test_work_detached_from_the_session_is_not_touched(
    spawn: Callable[[str], subprocess.Popen[bytes]],
) -> None:
    shell = spawn("sleep 60 >/dev/null & echo $!")  # the shell exits; sleep is reparented
    assert shell.stdout is not None
    detached = int(shell.stdout.readline())
    try:
        shell.wait(5)
        ended = await end_tree(shell.pid, OURS, _from_host, grace_s=0.1)
        assert ended.hung_up == 0
        assert _alive(detached)
    finally:
        os.kill(detached, signal.SIGKILL)
