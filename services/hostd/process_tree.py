"""An exec's processes on the engine's machine, found through /proc, and how they are ended.

The engine has no call to kill an exec. When a session's channel closes while
its process still runs, hostd finds the exec's process (exec_inspect's `Pid`,
a PID on the engine's machine) and its descendants at that moment, checks
each one still belongs to the container's cgroup (holding it by a pidfd, so a
recycled PID is never signalled), sends SIGHUP, waits a grace period, and sends
SIGKILL to what is left (`end_tree`). Work a user detached on purpose (`setsid`, `nohup cmd &`
from a shell that then exits, daemons) has left the session's process tree by
then and is not touched.

How a signal reaches a process is the caller's choice (`SendSignal`):
`signal_from_host` signals the processes hostd may signal itself (root, or
the same user) and hands back the others, which exec_bridge.py then signals
with `kill` run inside the container, by the PIDs the container sees
(`ns_pid`).

Limitation: the engine must run on hostd's machine (a laptop's own Docker), so
that its PIDs are hostd's; with an engine in a VM (Docker Desktop) the PIDs are
the VM's (`visible` says no), and leftover session processes are reported,
not ended.

The parsing of /proc's files and the walk of the tree are pure functions
(`parse_stat`, `parse_ns_pid`, `select_tree`); the rest reads /proc.
"""

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Proc", "SendSignal", "TreeEnded", "end_tree", "in_container", "live_tree", "ns_pid", "parse_ns_pid",
    "parse_stat", "read_stat", "select_tree", "signal_from_host", "visible",
]  # fmt: skip

#: Deliver a signal to these PIDs (on the engine's machine); False if it could not be.
SendSignal = Callable[[Sequence[int], int], Awaitable[bool]]

_POLL_S = 0.05


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    alive: bool


def parse_stat(pid: int, text: str) -> Proc:
    """A process from its /proc/<pid>/stat (the command name may hold spaces and parentheses)."""
    fields = text.rpartition(")")[2].split()
    return Proc(pid=pid, ppid=int(fields[1]), alive=fields[0] not in ("Z", "X"))


def read_stat(pid: int) -> Proc | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return parse_stat(pid, text)


def in_container(pid: int, container_id: str) -> bool:
    """Whether the process is (still) in the container's cgroup."""
    try:
        return container_id in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


def parse_ns_pid(status: str) -> int | None:
    """The PID in the innermost PID namespace (the last of NSpid) from /proc/<pid>/status."""
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            try:
                return int(line.split()[-1])
            except (IndexError, ValueError):
                return None
    return None


def ns_pid(pid: int) -> int | None:
    """The PID the container sees."""
    try:
        return parse_ns_pid(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None


def visible(pid: int) -> bool:
    """Whether hostd sees the process at all (not when the engine runs in a VM)."""
    return os.path.exists(f"/proc/{pid}")


def select_tree(roots: Sequence[int], procs: Iterable[Proc], belongs: Callable[[int], bool]) -> list[int]:
    """The live processes among `roots` and their descendants that `belongs` accepts,
    each before its descendants: signalled in this order, a parent is
    killed before its children die, so it cannot exit in their place (a shell's `wait`
    returning 0) or start new ones that no list holds.

    A process that is dead or not accepted is not taken, and neither are its
    descendants through it. `belongs` is asked only about live processes reached.
    """
    children: dict[int, list[int]] = {}
    parent: dict[int, int] = {}
    alive: set[int] = set()
    for proc in procs:
        children.setdefault(proc.ppid, []).append(proc.pid)
        parent[proc.pid] = proc.ppid
        if proc.alive:
            alive.add(proc.pid)
    found: list[int] = []
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        if pid in alive and belongs(pid):
            found.append(pid)
            todo.extend(children.get(pid, []))

    def depth(pid: int) -> int:
        steps, up = 0, {pid}
        while (pid := parent.get(pid, 0)) > 0 and pid not in up:
            up.add(pid)
            steps += 1
        return steps

    return sorted(found, key=depth)


def _all_procs() -> Iterable[Proc]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            proc = read_stat(int(entry.name))
            if proc is not None:
                yield proc


def live_tree(roots: Sequence[int], container_id: str) -> list[int]:
    """Live processes among `roots` and their descendants that are in the container, now."""
    return select_tree(roots, _all_procs(), lambda pid: in_container(pid, container_id))


def signal_from_host(pids: Sequence[int], number: int, container_id: str) -> list[int]:
    """Signal those of `pids` that are in the container; the ones hostd may not signal are returned.

    Each process is held by a pidfd before its cgroup is read, and signalled through
    that pidfd: if it exits and its PID is reused between the check and the signal,
    the signal fails with ESRCH instead of reaching the newcomer (`kill(pid)` after
    the check would signal whichever process holds the PID by then).
    """
    denied: list[int] = []
    for pid in pids:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            if not in_container(pid, container_id):
                continue
            signal.pidfd_send_signal(pidfd, number)
        except ProcessLookupError:
            pass
        except PermissionError:
            denied.append(pid)
        finally:
            os.close(pidfd)
    return denied


@dataclass(frozen=True)
class TreeEnded:
    hung_up: int
    """How many processes were sent SIGHUP (0: the root was not a live process of the container)."""
    killed: int
    """How many were left after the grace period, and sent SIGKILL."""


async def end_tree(root: int, container_id: str, send: SendSignal, grace_s: float) -> TreeEnded:
    """HUP `root` and its descendants in the container, then KILL what is left after `grace_s`."""
    known = await asyncio.to_thread(live_tree, [root], container_id)
    if not known:
        return TreeEnded(hung_up=0, killed=0)
    hung_up = len(known)
    await send(known, signal.SIGHUP)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        await asyncio.sleep(_POLL_S)
        known = await asyncio.to_thread(live_tree, known, container_id)
        if not known:
            break
    if known:
        await send(known, signal.SIGKILL)
    return TreeEnded(hung_up=hung_up, killed=len(known))
