"""What a container has written lately, read every second without the engine: it wakes the
disk guard.

The guard measures what a container wrote through the engine (disk_bound.py), at a regular
interval or sooner while the rate it saw between two measures takes the container toward its
bound. A container that sat idle (a rate of 0) and then wrote in a burst was seen at its next
regular measure only: with a 1 GB bound and the default 10 s, `dd` wrote 2.1 GB before it was
stopped, and a fast disk takes tens of GB in 10 s. Measuring every second is what the guard
avoids (the engine walks the layer). Reading a counter is not: the guard reads each
container's every second (SOONEST_MEASURE_S) and measures it at once when what it wrote since
its last measure could take it past its bound (disk_bound.measure_now).

The counter: the kernel's `write_bytes` of /proc/<pid>/io, the bytes a process had written to
storage, counted when it dirties the page cache (not seconds later when the page is written
back), and added to its parent's when the parent reaps it. The container's processes are in
its cgroup's `cgroup.procs`; what the processes that ended wrote is in their parents', up to
the container's first process and its shim, which reaps the first process and every `docker
exec` (a user's session). Their sum grows with everything the container writes, to its layer
and to the engine's files outside it.

The cgroup's own counters do not do: on cgroup v1 (the tests' engines) blkio counts no
buffered write (v1 charges writeback to no cgroup), and memory.stat's `dirty` and `writeback`
are what is waiting now, drained as fast as the disk goes and capped by the container's memory:
measured, a container with 128 MiB of memory wrote 1.5 GB in 1.5 s; cgroup v2's io.stat counts
at writeback, seconds after the write.

Only the growth between two reads counts (`WriteWatch`): a count drops when a process that
wrote ends and is reaped by one not counted, or when the container starts again. The sum
counts more than the layer grew (a file written over, or written and removed, counts each
time): that only has the container measured sooner; the measure decides, as before. Not seen:
an engine on another machine (its PIDs are not this machine's: Docker Desktop's VM) or a hostd
not allowed to read the container's processes' counts (not root); the guard then measures on
its clock alone (`write_source` says why; containers.py logs it once).

Parsing and the watch are pure; `write_source` and `read_written` read /proc and the cgroup.
"""

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from potluck.hostd.cpu_load import CGROUP_ROOT, parse_proc_cgroup, shim_of

__all__ = ["WriteSource", "WriteWatch", "parse_write_bytes", "procs_file", "read_written", "write_source"]


def parse_write_bytes(text: str) -> int:
    """`write_bytes` of /proc/<pid>/io."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "write_bytes":
            return int(value)
    raise ValueError("no write_bytes in /proc/<pid>/io")


def procs_file(cgroups: dict[str, str], root: Path = CGROUP_ROOT) -> Path | None:
    """The `cgroup.procs` that lists the container's processes, from its first process's
    /proc/<pid>/cgroup (`parse_proc_cgroup`): cgroup v1's memory controller's, else the v2
    hierarchy's (at the root, or under `unified` beside v1's)."""
    candidates: list[Path] = []
    if "memory" in cgroups:
        candidates.append(root / "memory" / cgroups["memory"].lstrip("/"))
    if "" in cgroups:
        candidates += [root / cgroups[""].lstrip("/"), root / "unified" / cgroups[""].lstrip("/")]
    for directory in candidates:
        # A v2 path of "/" is the machine's own group: not the container's.
        if directory not in (root, root / "unified") and (directory / "cgroup.procs").exists():
            return directory / "cgroup.procs"
    return None


@dataclass(frozen=True)
class WriteSource:
    """Where a running container's writes are counted: its first process (as this machine sees
    it), the file listing its processes, and its shim (None: not found)."""

    init_pid: int
    procs: Path
    shim: int | None


def _read_small(path: str) -> str:
    # os's own calls: a quarter of pathlib's CPU, and the guard reads these every second.
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 4096).decode()
    finally:
        os.close(fd)


def _write_bytes(pid: int) -> int | None:
    """The process's count; None once it is gone, or where hostd may not read it (`write_source`
    checks that it may read the container's first process's)."""
    try:
        return parse_write_bytes(_read_small(f"/proc/{pid}/io"))
    except (OSError, ValueError):
        return None


def read_written(source: WriteSource) -> int | None:
    """What the container's processes, and those that ended in them, wrote so far (a sum of
    counts that only grows while the same processes run); None when the container no longer
    runs the first process it was found with (stopped, or started again: find it anew)."""
    try:
        pids = [int(pid) for pid in _read_small(str(source.procs)).split()]
    except (OSError, ValueError):
        return None
    if source.init_pid not in pids:
        return None
    if source.shim is not None:
        pids.append(source.shim)
    return sum(count for pid in pids if (count := _write_bytes(pid)) is not None)


def write_source(container_id: str, init_pid: int, root: Path = CGROUP_ROOT) -> WriteSource | str:
    """Where the running container whose first process is `init_pid` (0: not running) has its
    writes counted, read once to be sure hostd may; else why they cannot be read here."""
    if init_pid <= 0:
        return "the container runs no process"
    try:
        cgroup_text = Path(f"/proc/{init_pid}/cgroup").read_text()
    except OSError:
        cgroup_text = ""
    # Its cgroup names the container (cgroupfs and systemd drivers alike): a PID of another
    # machine's (an engine in a VM) or gone by now is not taken for it.
    if container_id not in cgroup_text:
        return "the engine's processes are not this machine's (an engine on another machine or in a VM)"
    procs = procs_file(parse_proc_cgroup(cgroup_text), root)
    if procs is None:
        return f"no cgroup.procs for the container under {root}"
    try:
        parse_write_bytes(Path(f"/proc/{init_pid}/io").read_text())
    except PermissionError:
        return "hostd may not read its containers' processes' /proc/<pid>/io: run hostd as root"
    except (OSError, ValueError) as exc:
        return f"the container's first process's /proc/{init_pid}/io: {exc}"
    return WriteSource(init_pid, procs, shim_of(init_pid))


class WriteWatch:
    """Each container's writes since its last measure, from its counter's reads (by alloc_id):
    the growth between reads, a drop taken as none."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self._since: dict[str, int] = {}

    def read(self, key: str, count: int) -> int:
        """A read of the counter: what it grew since the last measure. The first read only
        starts the count."""
        last = self._last.get(key)
        self._last[key] = count
        if last is not None:
            self._since[key] = self._since.get(key, 0) + max(0, count - last)
        return self._since.get(key, 0)

    def measured(self, key: str) -> None:
        """The container was measured: its writes since start from here."""
        self._since.pop(key, None)

    def since(self, key: str) -> int:
        return self._since.get(key, 0)

    def restart(self, key: str) -> None:
        """Its counter is another one from now (the container found anew): the next read
        starts it again, what was counted since the last measure kept."""
        self._last.pop(key, None)

    def keep_only(self, keys: Iterable[str]) -> None:
        """Forget every container but these (the others are gone)."""
        kept = set(keys)
        self._last = {key: count for key, count in self._last.items() if key in kept}
        self._since = {key: count for key, count in self._since.items() if key in kept}
