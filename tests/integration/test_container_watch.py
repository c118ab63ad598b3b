"""hostd's follow of its engine's events, on a real private engine: no die goes unreported."""

import asyncio
import contextlib
from pathlib import Path

from potluck.contracts.allocation_events import AllocationSpec
from potluck.contracts.capacity import Capacity
from potluck.contracts.reports import ContainerExited, ContainerStarted
from potluck.localstack import DockerEngine
from tests.fixtures.container_manager import container_manager

MiB = 1024 * 1024
HOST = "h-0a0b0c0d0e0f"


async def test_a_container_that_ended_before_the_event_stream_opened_is_reported(
    docker_engine: DockerEngine, test_image: str, tmp_path: Path
) -> None:
    """What is tried: a task placed and ended (`true`) before hostd's follow of the engine's
    events begins, as a placement fetched at once by a hostd just started can be, its events
    stream's request still queued behind the first sync's engine calls (seen in CI).
    What must hold: once the follow begins, the task's exit is reported, exit code 0 (before,
    its die was never seen and the allocation stayed `running` until a periodic state report)."""
    manager, driver, reports = container_manager(docker_engine, tmp_path, HOST)
    alloc_id = "a-0a0b0c0d0e0f"
    spec = AllocationSpec(
        resources=Capacity(cpus=0.5, memory_bytes=64 * MiB, disk_bytes=256 * MiB),
        image=test_image,
        command=["true"],
    )
    try:
        await manager.place(alloc_id, spec)
        async with asyncio.timeout(30):
            while not any(isinstance(r, ContainerStarted) for r in reports):
                await asyncio.sleep(0.05)
            container_id = next(r.container_id for r in reports if isinstance(r, ContainerStarted))
            while (await asyncio.to_thread(driver.state, container_id)).running:
                await asyncio.sleep(0.05)
        assert not any(isinstance(r, ContainerExited) for r in reports)  # nothing followed yet

        following = asyncio.create_task(manager.watch_docker_events())
        try:
            async with asyncio.timeout(10):
                while not (exits := [r for r in reports if isinstance(r, ContainerExited)]):
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # a second report of the same end would come by now
        finally:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        exits = [r for r in reports if isinstance(r, ContainerExited)]
        assert [(e.alloc_id, e.container_id, e.exit_code) for e in exits] == [(alloc_id, container_id, 0)]
        assert alloc_id not in manager.desired
    finally:
        for container in driver.list_managed(HOST):
            with contextlib.suppress(Exception):
                driver.remove(container.container_id)
