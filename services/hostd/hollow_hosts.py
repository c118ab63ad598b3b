"""Many hollow hostds in one process: real agents (NATS identity, registration, heartbeats,
reports, reconciliation, owner policy) over `HollowDriver`, for scale tests only.

Each host is an ordinary `Agent` with its own nkey and connection; only its engine is in
memory. What would read this machine rather than the hollow one is pointed away in the
config, not in code: the owner policy reads an empty power/thermal directory and counts
the owner busy only past every core (the hollow process itself keeps the machine busy), and
the sleep clock allows an hour of loop lag before calling it sleep (thousands of agents on
one loop lag far more than a laptop's clock ever jumps awake). What only looks at the
in-memory engine (its disk, its images, whether it answers) is looked at every few minutes,
one heap trimmer serves the whole process, the hosts share one set of machine sensors (each
host's policy still decides alone), and the policy's status file, which no member reads here,
is rewritten every few minutes: measured, those were most of its CPU.
"""

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from potluck.contracts.host_labels import HOLLOW_LABEL
from potluck.hostd.agent import Agent, HostdStopped
from potluck.hostd.config import HostdConfig
from potluck.hostd.heap import trim_heap_periodically
from potluck.hostd.hollow_engine import HollowDriver
from potluck.hostd.machine_sensors import MachineSensors
from potluck.kernel.cancellation import cancel_until_done

log = structlog.get_logger(__name__)

#: Two reader threads per host follow its (in-memory) engine's events, as for Docker; a small
#: stack keeps thousands of them cheap (they only wait on a queue).
THREAD_STACK_BYTES = 256 * 1024


#: How often a hollow host pings its in-memory engine.
HOLLOW_ENGINE_CHECK_S = 60.0
#: How often a hollow host rewrites its policy status file, besides at each change.
HOLLOW_STATUS_EVERY_S = 300.0


@dataclass(frozen=True)
class HollowHost:
    host_id: str
    name: str
    credentials_file: Path


def hollow_config(
    host: HollowHost,
    *,
    nats_url: str,
    workdir: Path,
    images: Iterable[str],
    heartbeat_s: float,
    donate: dict[str, Any] | None = None,
) -> HostdConfig:
    """A hostd config for one hollow host: labelled `hollow=true`, its files under `workdir`."""
    quiet = workdir / "no-sensors"
    quiet.mkdir(parents=True, exist_ok=True)
    return HostdConfig.model_validate(
        {
            "host_id": host.host_id,
            "credentials_file": host.credentials_file,
            "nats_url": nats_url,
            "state_dir": workdir / f"{host.name}-state",
            "allowed_images": list(images),
            "donate": donate or {"cpus": 4, "memory": "8G", "disk": "32G"},
            "labels": {"name": host.name, HOLLOW_LABEL[0]: HOLLOW_LABEL[1]},
            # Beats at the deployed pace; what only looks at the in-memory engine (its disk, its
            # images), which nothing changes behind the agent's back, is looked at rarely.
            "timing": {
                "heartbeat_interval_s": heartbeat_s,
                "usage_interval_s": 60.0,
                "disk_check_interval_s": 300.0,
                "image_scan_interval_s": 300.0,
                "state_report_interval_s": 3600.0,
            },
            "sleep": {"threshold_s": 3600.0, "check_interval_s": 60.0, "dbus_address": ""},
            "policy": {
                "owner_busy_cpus": 1024,
                "sample_interval_s": 2.0,
                "power_supply_dir": str(quiet),
                "thermal_dir": str(quiet),
            },
        }
    )


def make_host_keys(configs: Iterable[HostdConfig]) -> None:
    """Each host's SSH host key, made here in this process where missing.

    A real hostd makes its key in a child process, to keep asyncssh out of its memory; for
    thousands of hollow hosts that is thousands of interpreters started one after another
    (minutes before the first registers), and one process holding asyncssh once costs nothing.
    """
    from potluck.kernel.ssh_identity import host_key_path, load_or_create_key

    for config in configs:
        path = host_key_path(config.state_dir)
        if not path.exists():
            load_or_create_key(path, comment=f"potluck-hostd-{config.host_id}")


class HollowFleet:
    """N agents on one loop; `ready` counts those registered and synced."""

    def __init__(self, configs: list[HostdConfig], images: Iterable[str]) -> None:
        wanted = list(images)
        make_host_keys(configs)
        self.agents = [Agent(c, HollowDriver(c.host_id, wanted)) for c in configs]
        sensors: dict[tuple[Path, Path], MachineSensors] = {}
        for agent in self.agents:
            # One trimmer for the process: a collection per agent was a full gc.collect() over
            # every agent's objects, thousands of times over at start-up.
            agent.trims_heap = False
            # The in-memory engine never goes away: a ping every 2 s each was a thread hop per
            # host per 2 s, a third of the process's time.
            agent.engine_check_s = HOLLOW_ENGINE_CHECK_S
            # One machine under all of them: one reading of it at a time, not one per host
            # (machine_sensors.py; the policy's reads were over half of the process's CPU).
            where = (agent.policy.sensors.power_supply_dir, agent.policy.sensors.thermal_dir)
            agent.policy.sensors = sensors.setdefault(where, agent.policy.sensors)
            # No member reads a hollow host's status file (`potluck host status`); rewritten
            # every 5 s it was the largest part left (JSON and a file write per host).
            agent.policy.status_every_s = HOLLOW_STATUS_EVERY_S
        self.stopped: dict[str, str] = {}

    @property
    def ready(self) -> int:
        return sum(agent.ready.is_set() for agent in self.agents)

    async def _run_one(self, agent: Agent) -> None:
        try:
            await agent.run()
        except HostdStopped as exc:
            # One host out of the pool for good (revoked, left): the others go on.
            self.stopped[agent.host_id] = str(exc)
            log.warning("hollow.host_stopped", host_id=agent.host_id, reason=str(exc))

    async def run(
        self, on_progress: Callable[[int, int], None] | None = None, start_gap_s: float = 0.002
    ) -> None:
        """Run every agent until cancelled; `on_progress(ready, total)` about twice a second
        until all are ready. Starts are spread by `start_gap_s` so that the registry sees a
        stream of registrations rather than one burst."""
        threading.stack_size(THREAD_STACK_BYTES)
        trimmer = asyncio.create_task(trim_heap_periodically())
        tasks: list[asyncio.Task[None]] = []
        try:
            for agent in self.agents:
                tasks.append(asyncio.create_task(self._run_one(agent)))
                await asyncio.sleep(start_gap_s)
            total = len(self.agents)
            while on_progress is not None:
                ready = self.ready
                on_progress(ready, total)
                if ready + len(self.stopped) >= total:
                    break
                await asyncio.sleep(0.5)
            await asyncio.gather(*tasks)
        finally:
            with contextlib.suppress(Exception):
                await cancel_until_done([trimmer, *tasks])
