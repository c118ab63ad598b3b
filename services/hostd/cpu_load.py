"""The owner's CPU load: the machine's CPU use (/proc/stat) less the pool's own (its cgroups).

Pure parsing apart from thin readers. The machine's use is the share of non-idle ticks
across all CPUs since the last sample, times the number of CPUs; the pool's is the
growth of its containers' cgroup CPU time over the same wall-clock interval. A
container's cgroup is found from its init process (/proc/<pid>/cgroup), so it does not
matter whether the engine uses the systemd or the cgroupfs driver, cgroup v1 or v2.
"""

import contextlib
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

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


class LoadMeter:
    """The machine's and the pool's CPU use between two samples, in cores."""

    def __init__(self) -> None:
        self._ticks: CpuTicks | None = None
        self._at: float | None = None
        self._usage: dict[Path, int] = {}

    def sample(self, ticks: CpuTicks, pool_files: list[Path]) -> tuple[float, float] | None:
        """(machine cores, pool cores) since the previous call, from the machine's `ticks`
        (machine_sensors.py reads them) and the pool's cgroup files; None on the first."""
        now = time.monotonic()
        usage: dict[Path, int] = {}
        for path in pool_files:
            with contextlib.suppress(Exception):
                value = read_usage_ns(path)
                if value is not None:
                    usage[path] = value
        before, at, previous = self._ticks, self._at, self._usage
        self._ticks, self._at, self._usage = ticks, now, usage
        # The same reading twice (shared, and asked again too soon) has no interval either.
        if before is None or at is None or now <= at or ticks.total <= before.total:
            return None
        # Only containers seen both times count: one that started or ended in between
        # has no interval of its own.
        pool_ns = sum(max(0, usage[p] - previous[p]) for p in usage if p in previous)
        return machine_cores(before, ticks), pool_ns / 1e9 / (now - at)


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
