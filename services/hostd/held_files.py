"""Files a container deleted and still holds open: bytes on the member's disk its layer no longer shows.

Where the engine has no quota the disk guard measures the container's writable layer by walking
it (disk_bound.py). A file removed while a process holds it open is in no directory any more, so
no walk finds it, yet its blocks stay taken on the member's disk until the last holder closes it:
found, a container with a 64 MiB bound wrote five files of 40 MiB, removing each after writing it
with its descriptor kept open, and ran on measured at 0 bytes, holding 200 MiB, and could have
gone on to fill the disk. So the guard also counts the blocks of every deleted regular file a
process of the container holds open or maps (`held_bytes`), each file once, whatever holds it.

Files of the container's memory file systems (/dev, /dev/shm, memfd) are left out: they are
memory, which the container's memory limit bounds. Read from /proc (`container_held_bytes`), so
only where hostd sees the engine's processes (an engine on hostd's own machine) and may read
their descriptors (hostd as root); elsewhere nothing is added. Not seen: a descriptor in flight
in a Unix socket's queue, held by no process.

`held_bytes` is pure; `container_held_bytes` reads /proc.
"""

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from potluck.hostd.cpu_load import memory_usage_file, parse_proc_cgroup
from potluck.hostd.process_tree import in_container

__all__ = ["MEMORY_PREFIXES", "HeldFile", "container_held_bytes", "held_bytes"]

#: Where a descriptor's target lies in memory, not on the disk: what the kernel names it by
#: (its path in the container's mount namespace, " (deleted)" after it).
MEMORY_PREFIXES = ("/dev/", "/memfd:")
_DELETED = " (deleted)"


@dataclass(frozen=True)
class HeldFile:
    """One open descriptor's target: the kernel's name for it (/proc/PID/fd's link) and its stat."""

    target: str
    dev: int
    ino: int
    links: int
    regular: bool
    blocks: int


def held_bytes(files: Iterable[HeldFile]) -> int:
    """The bytes on disk of the deleted regular files among `files` (no link left), each file
    once however many descriptors hold it; memory file systems' left out (MEMORY_PREFIXES)."""
    counted: dict[tuple[int, int], int] = {}
    for f in files:
        if not f.regular or f.links > 0 or not f.target.endswith(_DELETED):
            continue
        if f.target.startswith(MEMORY_PREFIXES):
            continue
        counted[(f.dev, f.ino)] = f.blocks * 512
    return sum(counted.values())


def _held_by(pid: int) -> Iterable[HeldFile]:
    """What the process holds: its descriptors, and the files it maps (a file mapped, closed
    and removed is held by the mapping alone)."""
    yield from _targets(Path(f"/proc/{pid}/fd"))
    yield from _targets(Path(f"/proc/{pid}/map_files"))


def _targets(directory: Path) -> Iterable[HeldFile]:
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        path = directory / name
        try:
            target = os.readlink(path)
            st = os.stat(path)
        except OSError:
            continue
        yield HeldFile(target, st.st_dev, st.st_ino, st.st_nlink, stat.S_ISREG(st.st_mode), st.st_blocks)


def _cgroup_pids(init_pid: int) -> list[int] | None:
    """The processes of the cgroup `init_pid` is in (its memory controller's, where the
    container's processes all are), None when it cannot be read: one read where a scan of
    /proc reads a file of every process of the machine (a member's laptop runs hundreds)."""
    try:
        memory = memory_usage_file(parse_proc_cgroup(Path(f"/proc/{init_pid}/cgroup").read_text()))
        if memory is None:
            return None
        return [int(pid) for pid in (memory.parent / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return None


def container_held_bytes(container_id: str, init_pid: int = 0) -> int:
    """`held_bytes` of what the container's processes hold open now, read from /proc: 0 where
    hostd sees none of them. With the container's first process (`init_pid`, as this machine
    sees it) its cgroup lists them; without, or where that cannot be read, all of /proc is."""
    pids = _cgroup_pids(init_pid) if init_pid > 0 else None
    if pids is None:
        pids = [int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit()]
    files: list[HeldFile] = []
    for pid in pids:
        if in_container(pid, container_id):
            files.extend(_held_by(pid))
    return held_bytes(files)
