"""A throttled pool's CPU share on a real private engine: a container that leaves gives its part
back to the others (services/hostd/containers.py, cpu_share.py).

The quota is read where the engine keeps it (`docker inspect` HostConfig.NanoCpus); the
end-to-end owner policy (the kernel's cgroup files, each cause) is tests/e2e/test_owner_policy.py.
"""

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from potluck.contracts.allocation_events import AllocationSpec
from potluck.contracts.capacity import Capacity
from potluck.contracts.reports import ContainerStarted, Report
from potluck.hostd.docker_driver import DockerDriver
from potluck.localstack import DockerEngine
from tests.fixtures.container_manager import container_manager

MiB = 1024 * 1024
HOST = "h-5ba7e0c1d2f3"
A, B = "a-share0000000a", "a-share0000000b"
#: A 1-CPU donation throttled to half: two 0.5-CPU allocations get 0.25 each, one alone its 0.5.
SHARE_CPUS = 0.5
QUARTER, HALF = 250_000_000, 500_000_000


def _spec(image: str) -> AllocationSpec:
    return AllocationSpec(
        resources=Capacity(cpus=0.5, memory_bytes=64 * MiB, disk_bytes=256 * MiB),
        image=image,
        command=["sleep", "3600"],
    )


def _nano_cpus(driver: DockerDriver, container_id: str) -> int:
    return int(driver.inspect(container_id)["HostConfig"]["NanoCpus"])


@pytest.mark.parametrize("leaves", ["released", "kept after its end", "dropped by a snapshot"])
async def test_a_container_that_leaves_a_throttled_pool_gives_its_share_to_the_others(
    docker_engine: DockerEngine, test_image: str, tmp_path: Path, leaves: str
) -> None:
    """Tried: a 1-CPU donation throttled to 0.5 CPUs runs two 0.5-CPU allocations, A and B
    (0.25 each); then B leaves: released (`potluck alloc rm B`), ended and kept for its files,
    or left out of a new snapshot of the desired state.
    Must hold: at once, with no policy change and no container start, A's quota in the engine
    is 0.5 CPUs (NanoCpus 500000000), its part of the share alone, and hostd's own record of
    the quotas says the same (before, A stayed at 0.25 until the next policy change)."""
    manager, driver, reports = container_manager(docker_engine, tmp_path, HOST)
    try:
        await manager.set_policy(frozen=False, share_cpus=SHARE_CPUS)
        await manager.place(A, _spec(test_image))
        await manager.place(B, _spec(test_image))
        async with asyncio.timeout(60):
            while (
                len(
                    started := {
                        r.alloc_id: r.container_id for r in reports if isinstance(r, ContainerStarted)
                    }
                )
                < 2
            ):
                await asyncio.sleep(0.05)
        assert await asyncio.to_thread(_nano_cpus, driver, started[A]) == QUARTER
        assert await asyncio.to_thread(_nano_cpus, driver, started[B]) == QUARTER

        if leaves == "released":
            await manager.release(B)
        elif leaves == "kept after its end":
            await asyncio.to_thread(driver.stop, started[B], 1)
            await manager.keep(B, datetime.now(UTC) + timedelta(hours=1))
        else:
            await manager.set_desired([(A, _spec(test_image))])

        assert await asyncio.to_thread(_nano_cpus, driver, started[A]) == HALF
        assert manager.quotas() == {A: 0.5}
        assert manager.cpu_cap(A) == 0.5
    finally:
        for container in driver.list_managed(HOST):
            with contextlib.suppress(Exception):
                driver.remove(container.container_id)


async def _started(reports: list[Report], alloc_id: str) -> str:
    async with asyncio.timeout(60):
        while True:
            for report in reports:
                if isinstance(report, ContainerStarted) and report.alloc_id == alloc_id:
                    return report.container_id
            await asyncio.sleep(0.05)


async def test_before_its_first_decision_a_new_hostd_starts_containers_on_the_share_remembered(
    docker_engine: DockerEngine, test_image: str, tmp_path: Path
) -> None:
    """Tried: a new manager told that the hostd before it throttled the pool to 0.5 CPUs
    (remember_policy, from policy-status.json) and no decision of its own yet; allocation A is
    placed and starts, then B.
    Must hold: A runs on 0.5 CPUs (its part alone), then B on 0.25 and A lowered to 0.25 (before,
    each ran on its full request, 0.5 CPUs, until the policy's first decision); the first
    decision, throttled to 0.5, leaves both so."""
    manager, driver, reports = container_manager(docker_engine, tmp_path, HOST)
    try:
        manager.remember_policy(frozen=False, share_cpus=SHARE_CPUS)
        await manager.place(A, _spec(test_image))
        a = await _started(reports, A)
        assert await asyncio.to_thread(_nano_cpus, driver, a) == HALF
        await manager.place(B, _spec(test_image))
        b = await _started(reports, B)
        assert await asyncio.to_thread(_nano_cpus, driver, b) == QUARTER
        assert await asyncio.to_thread(_nano_cpus, driver, a) == QUARTER
        assert manager.quotas() == {A: 0.25, B: 0.25}

        await manager.set_policy(frozen=False, share_cpus=SHARE_CPUS)
        assert manager.quotas() == {A: 0.25, B: 0.25}
        assert await asyncio.to_thread(_nano_cpus, driver, a) == QUARTER
    finally:
        for container in driver.list_managed(HOST):
            with contextlib.suppress(Exception):
                driver.remove(container.container_id)
