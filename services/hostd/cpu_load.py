"""The owner's CPU load: the machine's CPU use (/proc/stat) less the pool's own.

Pure parsing apart from thin readers. The machine's use is the share of non-idle ticks
across all CPUs since the last sample, times the number of CPUs; the pool's is the
growth of its containers' cgroup CPU time over the same wall-clock interval, and of the CPU
time of the processes that work for the pool alone outside those cgroups (`outside_usage_ns`):
hostd itself, whose link relays the pool's sessions and serves SFTP, and each pool container's
shim, which carries the container's stdio. Before, a user's transfer into a container (hostd
and the shim relaying it: most of a core) counted as the owner's own use, and the pool was
throttled for its own work while the owner sat idle, the member's status saying the owner used
1.2 CPUs. The engine's own process (dockerd) stays the owner's: it serves the member's own
containers, builds and commands too, and the pool yields rather than guess.
A container's cgroup is found from its init process (/proc/<pid>/cgroup), so it does not
matter whether the engine uses the systemd or the cgroupfs driver, cgroup v1 or v2.
"""

import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from potluck.hostd.process_tree import read_stat

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class CpuTicks:
    busy: int
    total: int
    cpus: int


def parse_proc_stat(text: str) -> CpuTicks:
    """The aggregate `cpu` line of /proc/stat: busy is everything but idle and iowait."""
    busy = total = cpus = 0
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "cpu":
            # user nice system idle iowait irq softirq steal [guest guest_nice: inside user]
            values = [int(v) for v in fields[1:9]]
            total = sum(values)
            busy = total - values[3] - (values[4] if len(values) > 4 else 0)
        elif fields[0].startswith("cpu") and fields[0][3:].isdigit():
            cpus += 1
    if total == 0:
        raise ValueError("no aggregate `cpu` line in /proc/stat")
    return CpuTicks(busy=busy, total=total, cpus=max(cpus, 1))


def machine_cores(before: CpuTicks, after: CpuTicks) -> float:
    """Cores the whole machine kept busy between two samples."""
    total = after.total - before.total
    if total <= 0:
        return 0.0
    return max(0, after.busy - before.busy) / total * after.cpus


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/<pid>/cgroup as controller -> path; the cgroup v2 hierarchy is under ""."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for controller in controllers.split(",") if controllers else [""]:
            found[controller] = path
    return found


def cpu_usage_file(cgroups: dict[str, str], root: Path = CGROUP_ROOT) -> Path | None:
    """The file that counts the cgroup's CPU time: cgroup v1's cpuacct.usage (ns) where the
    cpuacct controller is mounted, else cgroup v2's cpu.stat (usage_usec)."""
    if "cpuacct" in cgroups:
        rel = cgroups["cpuacct"].lstrip("/")
        for mount in ("cpuacct", "cpu,cpuacct", "cpuacct,cpu"):
            candidate = root / mount / rel / "cpuacct.usage"
            if candidate.exists():
                return candidate
    if "" in cgroups:
        for base in (root, root / "unified"):
            candidate = base / cgroups[""].lstrip("/") / "cpu.stat"
            if candidate.exists():
                return candidate
    return None


def memory_usage_file(cgroups: dict[str, str], root: Path = CGROUP_ROOT) -> Path | None:
    """The file with the cgroup's memory use in bytes: v1 memory.usage_in_bytes, v2 memory.current."""
    if "memory" in cgroups:
        candidate = root / "memory" / cgroups["memory"].lstrip("/") / "memory.usage_in_bytes"
        if candidate.exists():
            return candidate
    if "" in cgroups:
        candidate = root / cgroups[""].lstrip("/") / "memory.current"
        if candidate.exists():
            return candidate
    return None


def parse_usage_ns(path_name: str, text: str) -> int:
    """CPU time in ns from cpuacct.usage (ns) or cpu.stat (`usage_usec`)."""
    if path_name == "cpuacct.usage":
        return int(text.strip())
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            return int(value) * 1000
    raise ValueError("no usage_usec in cpu.stat")


@dataclass(frozen=True)
class CgroupFiles:
    """Where a container's CPU time and memory use are counted."""

    cpu: Path | None
    memory: Path | None


def container_cgroup_files(pid: int, root: Path = CGROUP_ROOT) -> CgroupFiles | None:
    """The cgroup files of the container whose init process is `pid` (None: it is gone)."""
    try:
        cgroups = parse_proc_cgroup(Path(f"/proc/{pid}/cgroup").read_text())
    except OSError:
        return None
    return CgroupFiles(cpu_usage_file(cgroups, root), memory_usage_file(cgroups, root))


def read_bytes(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def read_usage_ns(path: Path) -> int | None:
    try:
        return parse_usage_ns(path.name, path.read_text())
    except (OSError, ValueError):
        return None


#: hostd's own CPU time among the processes working for the pool outside its containers.
OWN_PROCESS = "hostd"

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def parse_process_cpu(text: str) -> tuple[int, int]:
    """(start time in clock ticks, user + system CPU time in ns) from /proc/<pid>/stat; the
    command's name, in parentheses, may hold spaces and parentheses: the fields follow its last
    ")"."""
    fields = text.rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])
    return int(fields[19]), ticks * 1_000_000_000 // _TICKS_PER_S


def shim_of(pid: int) -> int | None:
    """The containerd shim that started the container whose init process is `pid`: its parent,
    if that is a shim (None otherwise, or once either is gone)."""
    proc = read_stat(pid)
    if proc is None:
        return None
    try:
        name = Path(f"/proc/{proc.ppid}/comm").read_text().strip()
    except OSError:
        return None
    return proc.ppid if name.startswith("containerd-shim") else None


def outside_usage_ns(shims: Iterable[int]) -> dict[Hashable, int]:
    """CPU time in ns of the processes that work for the pool alone outside its containers'
    cgroups (module docstring): hostd (this process, all its threads) and the pool containers'
    `shims`. A shim is keyed by its PID and start time, so that a PID taken again by another
    process is not counted as the shim's."""
    found: dict[Hashable, int] = {OWN_PROCESS: time.process_time_ns()}
    for pid in shims:
        with contextlib.suppress(OSError, ValueError, IndexError):
            start, used = parse_process_cpu(Path(f"/proc/{pid}/stat").read_text())
            found[(pid, start)] = used
    return found


@dataclass(frozen=True)
class LoadSample:
    """Cores used between two samples: by the whole machine, by the pool's containers (their
    cgroups), and by the processes working for the pool outside them (`outside_usage_ns`)."""

    machine: float
    containers: float
    outside: float

    @property
    def owner(self) -> float:
        """The owner's own use: never below zero (the readings are taken a moment apart)."""
        return owner_cores(self.machine, self.containers + self.outside)


class LoadMeter:
    """The machine's and the pool's CPU use between two samples, in cores."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ticks: CpuTicks | None = None
        self._at: float | None = None
        self._usage: dict[Path, int] = {}
        self._outside: Mapping[Hashable, int] = {}

    def sample(
        self, ticks: CpuTicks, pool_files: list[Path], outside: Mapping[Hashable, int]
    ) -> LoadSample | None:
        """The use since the previous call, from the machine's `ticks` (machine_sensors.py reads
        them), the pool's cgroup files and the CPU time of the processes working for it outside
        them (`outside_usage_ns`, in ns); None on the first."""
        now = self._clock()
        usage: dict[Path, int] = {}
        for path in pool_files:
            with contextlib.suppress(Exception):
                value = read_usage_ns(path)
                if value is not None:
                    usage[path] = value
        before, at, previous, outside_before = self._ticks, self._at, self._usage, self._outside
        self._ticks, self._at, self._usage, self._outside = ticks, now, usage, outside
        # The same reading twice (shared, and asked again too soon) has no interval either.
        if before is None or at is None or now <= at or ticks.total <= before.total:
            return None
        return LoadSample(
            machine_cores(before, ticks),
            _grown(previous, usage) / 1e9 / (now - at),
            _grown(outside_before, outside) / 1e9 / (now - at),
        )


def _grown(before: Mapping[Any, int], after: Mapping[Any, int]) -> int:
    """How much the counters grew. Only those read both times count: a container or process
    that started or ended in between has no interval of its own."""
    return sum(max(0, after[key] - before[key]) for key in after if key in before)


def owner_cores(machine: float, pool: float) -> float:
    """The owner's own use: never below zero (the two are sampled a moment apart)."""
    return max(0.0, machine - pool)


class SustainedLoad:
    """Whether a load stayed at or above a level for a whole span: a shorter spike does not count."""

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, at: float, value: float) -> None:
        self._samples.append((at, value))
        while len(self._samples) > 1 and self._samples[1][0] <= at - self.span_s:
            self._samples.popleft()

    def level(self) -> float | None:
        """The lowest load over the last `span_s` (None until the samples cover it)."""
        if not self._samples:
            return None
        first, last = self._samples[0][0], self._samples[-1][0]
        if last - first < self.span_s and self.span_s > 0:
            return None
        # Each sample is the mean over the interval before it, so the oldest kept sample
        # (which ended at or before the span's start) is left out when others cover the span.
        kept = [v for t, v in self._samples if t > last - self.span_s] or [self._samples[-1][1]]
        return min(kept)

    def latest(self) -> float | None:
        return self._samples[-1][1] if self._samples else None
