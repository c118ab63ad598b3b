"""What a container's output costs the member outside its cgroup, counted against its CPU cap.

A container's stdout and stderr are carried by its containerd shim to dockerd, whose log driver
writes them to the member's disk, one JSON object a line. Neither process is in the container's
cgroup, so its CPU quota does not bound them: measured (bench/README.md, `log_flood`), a
container capped at 0.5 CPU writing `yes` cost dockerd 96 % of a core while it used 1 % itself.
Lowering its quota does not help (at 0.01 CPU dockerd still spent 53 %): a container blocked
on its log pipe needs almost no CPU to keep the engine busy. Other drivers cost the same.

So each pool container gets a budget (`LogBudget`): every tick it earns its cap's worth of CPU
time and is charged what it used itself plus what its output cost outside: its shim's CPU, and
dockerd's shared out among the engine's containers by their shims' CPU of the last seconds (every
container of the engine counted, the member's own too, so a chatty container of the member's
is the member's cost; a shim's first second, its container's start, is not counted, nor its CPU
while its container's log file did not change (`carrying`: the engine asking it); an ended
container's share decays rather than going at once; and while the shims together carry little,
dockerd's CPU is charged only in part: `decayed_shares`, START_GRACE_S, CARRYING_FLOOR_S).
While the budget is spent the container is paused (the engine's
freezer), and what the engine still spends meanwhile on what it wrote before is charged too.
Savings are capped at one tick's worth, so an idle container cannot save up for a burst.

Readings come from /proc, not from the engine (each `docker stats` costs dockerd too): the
container's CPU from its cgroup, its shim as the parent of its first process (the shim starts
it and stays its parent), dockerd's process from the engine socket's peer credentials. Where
hostd cannot see the engine's processes (an engine in a VM, Docker Desktop, or over TCP), the
bound is off and hostd says so once: the VM bounds the engine there.

ContainerManager applies the holds (`hold_for_logs`, under its lock): the member's pause, the
owner policy's freeze and a drain come first (nothing is done to a container they hold, and
the bound's own pauses are forgotten when they freeze); a container is unpaused before it is
stopped or removed; a session opening asks it to run (`let_run`: the engine refuses an exec
into a paused container); and while a session is open the container is not held at all.
"""

import asyncio
import contextlib
import math
import socket
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from potluck.hostd.cpu_load import parse_process_cpu
from potluck.hostd.docker_driver import DockerDriverError
from potluck.hostd.process_tree import read_stat

__all__ = [
    "GONE_SHARE_FLOOR_S",
    "EngineContainers",
    "LogBound",
    "LogBudget",
    "PoolContainers",
    "carrying",
    "cgroup_cpu_s",
    "cpu_s",
    "decayed_shares",
    "engine_pid",
    "run_time_s",
]

log = structlog.get_logger(__name__)

#: How often budgets are charged: a flood is held within about a tick of passing its cap.
TICK_S = 0.5
#: How often the engine's list of running containers (and their shims) is read again.
LIST_EVERY_S = 5.0
#: dockerd using less than this share of a core is idle: the tick reads nothing more.
QUIET_ENGINE = 0.05
#: Over about how long the shims' CPU is summed to share dockerd's out.
SHARE_WINDOW_S = 5.0
#: A hold is logged at most this often per allocation.
TELL_EVERY_S = 60.0
#: A container's shim is not counted for this long after it is first seen: its CPU then is
#: the container's start (runc's work, in the shim), not output carried.
START_GRACE_S = 1.0
#: The least sum of shares dockerd's CPU is shared out over, in seconds of shim CPU: about what a
#: shim carrying a flood of short lines spends over SHARE_WINDOW_S (measured: 3 ms a second for
#: `yes`; an idle shim's are a few us). Below it the shims carry little, so what dockerd spends is
#: not their output and is charged only in part: a container that wrote nothing, its idle shim
#: the only one with a share, was charged all dockerd spent starting another container.
CARRYING_FLOOR_S = 0.005
#: An ended container's share (its shim's CPU, decaying) is forgotten below this many seconds.
GONE_SHARE_FLOOR_S = 1e-4


@dataclass
class LogBudget:
    """One container's CPU budget, in seconds of CPU; pure."""

    cap: float
    tick_s: float
    left: float = 0.0

    def charge(self, spent_s: float, elapsed_s: float) -> bool:
        """Charge `spent_s` of CPU over `elapsed_s`; True while the container must be held."""
        self.left = min(self.left + self.cap * elapsed_s - spent_s, self.cap * self.tick_s)
        return self.left < 0


def decayed_shares(shares: Mapping[str, float], spent: Mapping[str, float], decay: float) -> dict[str, float]:
    """Each container's shim CPU over the last few seconds (`shares`, decayed by `decay`, plus this
    tick's `spent`), by which dockerd's CPU is shared out; pure.

    A container whose shim is gone (it ended) keeps its share while it decays, until it is
    below GONE_SHARE_FLOOR_S: what dockerd spends just after a container ended (the rest of its
    output, its removal) is that container's, and goes with its share. Forgotten at once, its
    share left the engine's whole work to the containers still running in proportion to theirs:
    a container that wrote nothing, its shim's few microseconds the only share left, was charged
    all of dockerd's (0.44 of a core, a full test run's load beside it) and paused as a flood.
    A flood that starts while an ended one's share decays is undercharged for those seconds."""
    out = {cid: value * decay for cid, value in shares.items()}
    for cid, value in spent.items():
        out[cid] = out.get(cid, 0.0) + value
    return {cid: value for cid, value in out.items() if cid in spent or value >= GONE_SHARE_FLOOR_S}


def carrying(spent: Mapping[str, float], wrote: Mapping[str, bool]) -> dict[str, float]:
    """The shims' CPU of a tick (`spent`) that counts towards sharing dockerd's out: none of a
    container whose log file is known not to have changed in the tick (`wrote` False); pure.

    A shim also works for what the engine asks of its container (each inspect, an exec's
    start, `docker top`): 2 ms a second under a loop of inspects (measured), as much as a
    shim carrying a flood of short lines spends. A container that wrote nothing, its shim busy
    with such requests while dockerd still wrote out what a paused flood had sent, took most of
    dockerd's CPU as its share and was paused as a flood itself (a full suite's run,
    2026-12-06: 0.23 of a core charged to `sleep`). Where no log file is seen (a driver that
    names none, an engine elsewhere) or a session is open, the shim's CPU counts as before."""
    return {cid: 0.0 if wrote.get(cid) is False else cpu for cid, cpu in spent.items()}


def cpu_s(pid: int) -> float | None:
    """CPU time (user + system, all threads) of process `pid`; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return parse_process_cpu(text)[1] / 1e9


def run_time_s(pid: int) -> float | None:
    """CPU time of process `pid`, all threads, to the nanosecond (/proc/PID/task/*/schedstat);
    /proc/PID/stat's clock ticks (10 ms) where the kernel keeps no schedstat. A shim carrying
    short lines uses a few ms a second: in clock ticks, most ticks of the loop read nothing."""
    total, found = 0, False
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[0])
            found = True
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9 if found else cpu_s(pid)


def cgroup_cpu_s(pid: int) -> float | None:
    """CPU time of the whole cgroup of process `pid` (cgroup v2's cpu.stat, or v1's cpuacct)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        try:
            if controllers == "":  # v2
                for entry in Path(f"/sys/fs/cgroup{path}/cpu.stat").read_text().splitlines():
                    if entry.startswith("usage_usec "):
                        return int(entry.split()[1]) / 1e6
            elif "cpuacct" in controllers.split(","):
                root = next(p for p in Path("/sys/fs/cgroup").iterdir() if "cpuacct" in p.name.split(","))
                return int((root / path.lstrip("/") / "cpuacct.usage").read_text()) / 1e9
        except (OSError, StopIteration, ValueError):
            return None
    return None


def engine_pid(docker_url: str) -> int | None:
    """dockerd's process, as this machine sees it: the peer of a connection to its unix
    socket; None for another kind of URL, or a peer that is not a dockerd here."""
    if not docker_url.startswith("unix://"):
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(docker_url.removeprefix("unix://"))
            pid, _, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    except OSError:
        return None
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    # 0: the peer is in a PID namespace hostd cannot see (hostd in a container of its own).
    return pid if pid > 0 and name == "dockerd" else None


class EngineContainers(Protocol):
    """What the loop asks of the engine (DockerDriver)."""

    def running_ids(self) -> list[str]: ...

    def process_and_log_of(self, container_id: str) -> tuple[int, str]: ...


class PoolContainers(Protocol):
    """What the loop reads and asks of the pool's containers (ContainerManager; bench/log_flood.py
    gives it a container of its own)."""

    @property
    def driver(self) -> EngineContainers: ...

    @property
    def containers(self) -> dict[str, str]: ...

    @property
    def log_held(self) -> set[str]: ...

    def cpu_cap(self, alloc_id: str) -> float | None: ...

    def in_session(self, container_id: str) -> bool: ...

    async def hold_for_logs(self, alloc_id: str, container_id: str, hold: bool) -> bool: ...


class LogBound:
    """The loop: every `tick_s`, each pool container's budget charged and applied."""

    def __init__(self, manager: PoolContainers, docker_url: str, tick_s: float = TICK_S) -> None:
        self.manager = manager
        self.docker_url = docker_url
        self.tick_s = tick_s
        self._budgets: dict[str, LogBudget] = {}
        self._shims: dict[str, int] = {}  # container id -> its shim, every running one of the engine
        self._first: dict[str, int] = {}  # container id -> its first process (for its cgroup)
        self._last: dict[tuple[str, str], float] = {}  # (what, id) -> its last CPU reading
        self._told: dict[str, float] = {}  # alloc id -> when a hold was last logged
        self._share: dict[str, float] = {}  # container id -> its shim's CPU, decaying
        self._seen: dict[str, float] = {}  # container id -> when its shim was first seen
        self._without: set[str] = set()  # running, but no process of it seen: not looked up again
        self._logs: dict[str, Path] = {}  # container id -> the file its log driver writes
        self._log_marks: dict[str, tuple[int, int] | None] = {}  # container id -> its (inode, size)

    async def run(self) -> None:
        dockerd = await asyncio.to_thread(engine_pid, self.docker_url)
        if dockerd is None:
            log.info(
                "hostd.log_bound_off",
                url=self.docker_url,
                hint="the engine's processes are not visible here (an engine in a VM or over TCP): "
                "what containers' output costs the engine is not counted against their caps",
            )
            await asyncio.Event().wait()
            return
        listed_at, at = -LIST_EVERY_S, time.monotonic()
        while True:
            await asyncio.sleep(self.tick_s)
            now = time.monotonic()
            elapsed, at = now - at, now
            periodic = now - listed_at >= LIST_EVERY_S
            if periodic:
                listed_at, self._without = now, set()
            # A pool container not seen yet is looked up at once (a flood from its first second
            # would run unbounded until the next listing); one not found, at the next listing.
            unseen = set(self.manager.containers.values()) - self._shims.keys() - self._without
            if periodic or unseen:
                with contextlib.suppress(DockerDriverError):
                    await self._list()
            if not await self._tick(dockerd, elapsed):  # the engine restarted: its new process
                dockerd = await asyncio.to_thread(engine_pid, self.docker_url) or dockerd

    async def _list(self) -> None:
        """The engine's running containers and their shims; only new ones are inspected."""
        driver = self.manager.driver
        running = set(await asyncio.to_thread(driver.running_ids))
        for gone in set(self._shims) - running:
            self._forget(gone)
        self._without |= set(self.manager.containers.values()) - running
        for container_id in running - set(self._shims) - self._without:
            with contextlib.suppress(DockerDriverError):
                first, log_path = await asyncio.to_thread(driver.process_and_log_of, container_id)
                proc = read_stat(first) if first else None
                shim = proc.ppid if proc is not None else None
                if shim:
                    self._shims[container_id], self._first[container_id] = shim, first
                    self._seen[container_id] = time.monotonic()
                    if log_path:
                        self._logs[container_id] = Path(log_path)
                else:  # not running after all, or not visible here: not asked again each tick
                    self._without.add(container_id)

    def _forget(self, container_id: str) -> None:
        """A container that no longer runs: its shim, first process and first sighting (not its
        share, which decays)."""
        self._shims.pop(container_id, None)
        self._first.pop(container_id, None)
        self._seen.pop(container_id, None)
        self._logs.pop(container_id, None)
        self._log_marks.pop(container_id, None)

    def _delta(self, what: str, key: str, now: float | None) -> float:
        """CPU since the last reading of the same thing; 0 the first time (or once it is gone)."""
        if now is None:
            self._last.pop((what, key), None)
            return 0.0
        before = self._last.get((what, key))
        self._last[(what, key)] = now
        return 0.0 if before is None else max(0.0, now - before)

    async def _tick(self, dockerd: int, elapsed: float) -> bool:
        """One charge of every budget; False when dockerd's process is gone."""
        engine_now = cpu_s(dockerd)
        engine = self._delta("dockerd", "", engine_now)
        if engine < QUIET_ENGINE * elapsed and not self.manager.log_held:
            # The engine is idle: nobody's output costs anything worth counting, and each
            # container's own use is bounded by its quota. Nothing more is read (what a tick
            # costs hostd), and the next busy tick counts from itself, not from here.
            self._last = {key: value for key, value in self._last.items() if key[0] == "dockerd"}
            self._budgets.clear()
            # An ended container's work is done once the engine is idle: its share goes.
            self._share = {cid: value for cid, value in self._share.items() if cid in self._shims}
            return engine_now is not None
        readings = {cid: run_time_s(pid) for cid, pid in self._shims.items()}
        for gone in [cid for cid, reading in readings.items() if reading is None]:
            # Its container ended: its share decays (decayed_shares says why).
            self._forget(gone)
        spent = {
            cid: self._delta("shim", cid, reading) for cid, reading in readings.items() if reading is not None
        }
        spent = carrying(spent, self._wrote(spent.keys()))
        # A shim's first second is its container's start, not output: counted, it took a share
        # of what dockerd spent starting other containers meanwhile, and a container that wrote
        # nothing (its shim alone had a share yet) was charged all of it and paused as a flood.
        now = time.monotonic()
        shims = {cid: cpu for cid, cpu in spent.items() if now - self._seen.get(cid, now) >= START_GRACE_S}
        # dockerd's work is shared out by the shims' CPU over the last few seconds, not the
        # tick's alone: a shim carrying short lines uses a few ms a second, while dockerd
        # spends most of a core on what it carries.
        self._share = decayed_shares(self._share, shims, math.exp(-elapsed / SHARE_WINDOW_S))
        all_shims = max(sum(self._share.values()), CARRYING_FLOOR_S)
        for alloc_id, container_id in list(self.manager.containers.items()):
            cap = self.manager.cpu_cap(alloc_id)
            first = self._first.get(container_id)
            if cap is None or first is None:
                continue
            if self.manager.in_session(container_id):
                # A session's stream (a transfer's, say) goes through the same shim and dockerd:
                # paused mid-transfer, an scp of 100 MB hung for good. The container runs
                # unpaused while a session is open, and that time leaves no debt to pay after.
                # (So a user who keeps a session open escapes the bound meanwhile: known.)
                self._budgets.pop(container_id, None)
                await self.manager.hold_for_logs(alloc_id, container_id, False)
                continue
            share = self._share.get(container_id, 0.0) / all_shims
            outside = shims.get(container_id, 0.0) + engine * share
            inside = self._delta("cgroup", container_id, cgroup_cpu_s(first))
            budget = self._budgets.setdefault(container_id, LogBudget(cap, self.tick_s))
            budget.cap = cap
            hold = budget.charge(inside + outside, elapsed)
            if await self.manager.hold_for_logs(alloc_id, container_id, hold):
                self._tell(alloc_id, cap, inside, outside, elapsed)
        for gone in set(self._budgets) - set(self.manager.containers.values()):
            del self._budgets[gone]
        return engine_now is not None

    def _wrote(self, container_ids: Iterable[str]) -> dict[str, bool]:
        """Whether each container's log file changed since the last tick (grew, or was rotated),
        for those whose driver writes one this machine sees and that have no session open (a
        session's stream goes through the shim and dockerd, never into the log file)."""
        wrote: dict[str, bool] = {}
        for cid in container_ids:
            path = self._logs.get(cid)
            if path is None or self.manager.in_session(cid):
                continue
            try:
                info = path.stat()
                mark: tuple[int, int] | None = (info.st_ino, info.st_size)
            except OSError:
                mark = None
            before = self._log_marks.get(cid)
            self._log_marks[cid] = mark
            if mark is not None and before is not None:
                wrote[cid] = mark != before
        return wrote

    def _tell(self, alloc_id: str, cap: float, inside: float, outside: float, elapsed: float) -> None:
        """Logged when a hold begins, at most once a minute per allocation."""
        now = time.monotonic()
        if now - self._told.get(alloc_id, -TELL_EVERY_S) < TELL_EVERY_S:
            return
        self._told[alloc_id] = now
        log.info(
            "hostd.log_bound_held",
            alloc_id=alloc_id,
            cap_cpus=cap,
            own_cpus=round(inside / elapsed, 3),
            engine_cpus=round(outside / elapsed, 3),
            hint="its output costs the Docker engine CPU outside its limits; it is paused while "
            "that and its own use pass its CPU cap (logged at most once a minute)",
        )
