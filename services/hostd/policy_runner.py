"""The owner policy at work in hostd: read the sensors, decide, change the containers, tell.

Every `sample_interval_s` it reads the owner's load (cpu_load.py), the battery (power.py)
and the temperature (thermal.py), asks owner_policy.decide, and on a change of action sets
the containers (ContainerManager.set_policy) and tells the registry (PolicyChanged on
POLICY.<host_id>, retried until answered; sent again after every registration, so a
registry that missed one learns the current state). It also writes what it reads to
`policy-status.json` in the state_dir, which `potluck host status` shows the member.

A hostd that starts finds the containers as the one before left them, frozen or throttled
perhaps: its first decision is applied whatever it is, once the owner's load is known
(owner_policy.applies), and it decides from the memory the one before wrote to the status file
(policy_memory.py), so that a restart is no moment's thaw or full share for the pool.
"""

import asyncio
import contextlib
import json
import math
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats.errors
import structlog

from potluck.contracts.messages import PolicyChanged, Reply
from potluck.contracts.subjects import POLICY
from potluck.events.bus import TRANSIENT_BUS_ERRORS
from potluck.hostd.config import HostdConfig
from potluck.hostd.containers import ContainerManager
from potluck.hostd.cpu_load import (
    CgroupFiles,
    LoadMeter,
    SustainedLoad,
    container_cgroup_files,
    outside_usage_ns,
    read_bytes,
    shim_of,
)
from potluck.hostd.docker_driver import DockerDriverError
from potluck.hostd.machine_sensors import MachineSensors
from potluck.hostd.owner_policy import Decision, Readings, applies, decide
from potluck.hostd.policy_memory import memory_from_record, memory_record, remembered_decision
from potluck.hostd.power import PowerReading
from potluck.hostd.process_tree import visible

log = structlog.get_logger(__name__)

STATUS_FILE = "policy-status.json"
_PEER_AWAY: tuple[type[BaseException], ...] = (*TRANSIENT_BUS_ERRORS, nats.errors.NoRespondersError)
#: How often the status file (`potluck host status`) is rewritten, besides at every change of
#: the policy's decision; `local_status` calls it stale only past 10 s. Every sample (2 s) was
#: an eighth of an idle hostd's CPU.
_STATUS_EVERY_S = 5.0
_TRANSITIONS_KEPT = 20

Request = Callable[[str, bytes], Awaitable[Reply]]


def status_path(config: HostdConfig) -> Path:
    return config.state_dir / STATUS_FILE


@dataclass(frozen=True)
class _Counted:
    """Where one pool container's CPU time is counted: its cgroup's files, and its shim's PID
    (cpu_load.outside_usage_ns); None where hostd does not see it (an engine in a VM)."""

    files: CgroupFiles | None
    shim: int | None


class PolicyRunner:
    def __init__(
        self,
        config: HostdConfig,
        containers: ContainerManager,
        request: Request,
        *,
        now_local: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.config = config
        self.policy = config.policy
        self.containers = containers
        self.request = request
        self.now_local = now_local
        self.decision = Decision()
        #: Whether a decision was applied to the containers since this hostd started.
        self.applied = False
        self.since = datetime.now(UTC)
        self.transitions: deque[dict[str, Any]] = deque(maxlen=_TRANSITIONS_KEPT)
        last = self._last_status()
        self._memory = memory_from_record(last.get("memory"), self.since, time.monotonic())
        remembered = remembered_decision(last.get("policy"))
        if remembered is not None:
            # What the hostd before applied holds the containers until this one's first decision
            # (containers.py), and is what the status says meanwhile, with its own `since`.
            self.decision = remembered
            self.since = _since(last.get("policy"), self.since)
            containers.remember_policy(frozen=remembered.state == "frozen", share_cpus=remembered.share_cpus)
        #: The machine's readings; many runners in one process (hollow hosts) share one.
        self.sensors = MachineSensors(
            Path(self.policy.power_supply_dir),
            Path(self.policy.thermal_dir),
            fresh_for_s=self.policy.sample_interval_s / 2,  # each of its own samples reads afresh
        )
        self._meter = LoadMeter()
        #: How often the status file is rewritten besides at each change (hollow hosts: rarely).
        self.status_every_s = _STATUS_EVERY_S
        self._sustained = SustainedLoad(self.policy.busy_after_s)
        self._cgroups: dict[str, _Counted] = {}  # container id -> where its CPU time is counted
        self._unsent = asyncio.Event()
        # Set once the owner's load is known (a full smoothing span sampled): a restarted hostd
        # does not tell "normal" for the moment before it can tell the owner is still busy.
        self._settled = asyncio.Event()
        self._readings: dict[str, Any] = {}

    def _last_status(self) -> dict[str, Any]:
        """The status file the hostd before this one wrote ({} if none, or unreadable)."""
        try:
            found = json.loads(status_path(self.config).read_text())
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    def resend(self) -> None:
        """Tell the registry the current state again (after a (re)registration)."""
        self._unsent.set()

    async def run(self) -> None:
        await asyncio.gather(self._decide_loop(), self._report_loop())

    async def _decide_loop(self) -> None:
        interval = self.policy.sample_interval_s
        last_status = 0.0
        while True:
            try:
                await self.step()
            except Exception:  # the policy must keep running whatever one sample does
                log.exception("hostd.policy_step_failed", hint="a bug; the next sample tries again")
            if time.monotonic() - last_status >= self.status_every_s:
                last_status = time.monotonic()
                with contextlib.suppress(OSError):
                    self.write_status()
            await asyncio.sleep(interval)

    async def step(self) -> None:
        """One sample, one decision, and the containers changed if the action changed."""
        found = await self._pool_containers()
        files = [c.files for c in found if c.files is not None]
        machine_now = await self.sensors.read()
        outside = outside_usage_ns(c.shim for c in found if c.shim is not None)
        sample = self._meter.sample(machine_now.ticks, [f.cpu for f in files if f.cpu is not None], outside)
        at = time.monotonic()
        owner: float | None = None
        if sample is not None:
            owner = sample.owner
            self._sustained.add(at, owner)
            self._readings.update(
                machine_cpus=round(sample.machine, 3),
                pool_cpus=round(sample.containers, 3),
                pool_outside_cpus=round(sample.outside, 3),
            )
        memory_bytes = [read_bytes(f.memory) for f in files if f.memory is not None]
        power, temperature = machine_now.power, machine_now.temperature_c
        readings = Readings(
            owner_cpus=self._sustained.level(), on_battery=power.on_battery, temperature_c=temperature
        )
        self._readings.update(
            owner_cpus=None if owner is None else round(owner, 3),
            owner_sustained_cpus=readings.owner_cpus,
            pool_memory_bytes=sum(m for m in memory_bytes if m is not None),
            power=_power_dict(power),
            temperature_c=temperature,
        )
        if readings.owner_cpus is not None or self.policy.on_owner_busy == "ignore":
            self._settled.set()
        decision, self._memory = decide(
            self.policy, self.config.donate.cpus, self._memory, readings, self.now_local(), at
        )
        if not applies(decision, self.decision if self.applied else None, owner_known=self._settled.is_set()):
            return
        await self._change(decision)

    async def _change(self, decision: Decision) -> None:
        first = not self.applied
        log.info(
            "hostd.policy_changed",
            state=decision.state,
            cause=decision.cause,
            reason=decision.reason,
            share_cpus=decision.share_cpus,
            was=None if first else self.decision.state,
            first=first,
        )
        self.decision = decision
        self.since = datetime.now(UTC)
        self.transitions.append({"at": self.since.isoformat(), **asdict(decision)})
        await self.containers.set_policy(frozen=decision.state == "frozen", share_cpus=decision.share_cpus)
        self.applied = True
        self._unsent.set()
        with contextlib.suppress(OSError):
            self.write_status()

    async def _pool_containers(self) -> list[_Counted]:
        """Where the pool's running containers' CPU time is counted, found once per container,
        and again while its cgroup is not found (a container seen before its process was) or
        once its shim is gone (a container the engine started again has a new one)."""
        found: list[_Counted] = []
        current = set(self.containers.containers.values())
        for container_id in list(self._cgroups):
            if container_id not in current:
                del self._cgroups[container_id]
        for container_id in current:
            known = self._cgroups.get(container_id)
            if known is None or known.files is None or (known.shim is not None and not visible(known.shim)):
                known = self._cgroups[container_id] = await self._find_cgroup(container_id)
            found.append(known)
        return found

    async def _find_cgroup(self, container_id: str) -> _Counted:
        try:
            inspect = await asyncio.to_thread(self.containers.driver.inspect, container_id)
        except DockerDriverError:
            return _Counted(None, None)
        pid = int((inspect.get("State") or {}).get("Pid") or 0)
        if pid <= 0:
            return _Counted(None, None)
        return _Counted(container_cgroup_files(pid), shim_of(pid))

    def message(self) -> PolicyChanged:
        decision = self.decision
        return PolicyChanged(
            state=decision.state,
            cause=decision.cause,
            reason=decision.reason[:500],
            share_cpus=decision.share_cpus if decision.state == "throttled" else None,
            # A member's `inf` (never tell) is None on the wire, as JSON always carried it.
            max_frozen_s=self.policy.max_frozen_s
            if decision.state == "frozen" and math.isfinite(self.policy.max_frozen_s)
            else None,
        )

    async def _report_loop(self) -> None:
        """One sender: the latest state, retried until the registry answers."""
        subject = f"{POLICY}.{self.config.host_id}"
        backoff = 0.5
        await self._settled.wait()
        while True:
            await self._unsent.wait()
            self._unsent.clear()
            message = self.message()
            try:
                reply = await self.request(subject, message.model_dump_json().encode())
            except _PEER_AWAY as exc:
                log.warning("hostd.policy_not_told", error=repr(exc), retry_in=backoff)
                reply = None
            if reply is not None and reply.ok:
                backoff = 0.5
                log.info("hostd.policy_told", state=message.state, recorded=reply.data.get("recorded"))
                continue
            if reply is not None:
                log.warning(
                    "hostd.policy_refused",
                    error=reply.error,
                    retry_in=backoff,
                    hint="the registry refused the policy state; hostd tries again",
                )
            self._unsent.set()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    def status(self) -> dict[str, Any]:
        donated = self.config.donate
        return {
            "at": datetime.now(UTC).isoformat(),
            "host_id": self.config.host_id,
            "donated": {"cpus": donated.cpus, "memory_bytes": int(donated.memory)},
            "pool": {
                "containers": len(self.containers.containers),
                "cpus": self._readings.get("pool_cpus"),
                # hostd and the containers' shims, working for the pool: not the owner's use.
                "outside_cpus": self._readings.get("pool_outside_cpus"),
                "memory_bytes": self._readings.get("pool_memory_bytes"),
                "quotas": self.containers.quotas(),
                "frozen_by_member": self.containers.paused,
            },
            "machine_cpus": self._readings.get("machine_cpus"),
            "owner": {
                "cpus": self._readings.get("owner_cpus"),
                "sustained_cpus": self._readings.get("owner_sustained_cpus"),
                "busy_from_cpus": self.policy.owner_busy_cpus,
                "input_idle": "not read (load only)",
            },
            "battery": self._readings.get("power"),
            "temperature_c": self._readings.get("temperature_c"),
            "temperature": "no sensor"
            if self._readings.get("temperature_c") is None
            else f"{self._readings['temperature_c']:.0f} °C",
            "policy": {
                "state": self.decision.state,
                "cause": self.decision.cause,
                "reason": self.decision.reason,
                "share_cpus": self.decision.share_cpus,
                "since": self.since.isoformat(),
                # False: the decision the hostd before applied, held until this one decides.
                "decided": self.applied,
            },
            "transitions": list(self.transitions),
            # For the next hostd, should this one stop (policy_memory.py).
            "memory": memory_record(self._memory, datetime.now(UTC), time.monotonic()),
        }

    def write_status(self) -> None:
        path = status_path(self.config)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.status(), indent=2))
        os.replace(temporary, path)


def _since(record: object, otherwise: datetime) -> datetime:
    """The `since` of a status file's "policy", or `otherwise` when it has none that reads."""
    if not isinstance(record, dict):
        return otherwise
    try:
        found = datetime.fromisoformat(str(record["since"]))
    except (KeyError, ValueError):
        return otherwise
    return found if found.tzinfo is not None else otherwise


def _power_dict(power: PowerReading) -> dict[str, Any]:
    if not power.has_battery:
        return {"present": False, "on_battery": False, "detail": "no battery"}
    return {"present": True, "on_battery": power.on_battery, "detail": power.detail}
