"""The warm containers of this host (issue 20): kept filled in the background, taken by
placements (containers.py), emptied when the host leaves the pool or drains.

`warm_containers` (hostd.toml) of each of the shapes placed here last (warm_pool.py) are
kept started and frozen (only created where the machine has no helper): they hold an
empty writable layer and no CPU (a frozen keep-alive or launcher holds a few hundred kB of
memory, within its placeholder's 6 MiB), and count against the donated disk with their
disk bound.
Filling runs in a task of its own, never on a placement's path; a placement that finds
none of its shape creates its own as before. A hostd that starts removes the warm
containers a previous one left (it cannot know which shapes they were for) and fills
again after its first placement.
"""

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from potluck.hostd.container_config import ContainerSpec
from potluck.hostd.docker_driver import DockerDriver, DockerDriverError, ImageRefused
from potluck.hostd.warm_engine import (
    NotTaken,
    ShapeCannotStart,
    create_warm,
    list_warm,
    take_warm,
)
from potluck.hostd.warm_pool import RecentShapes, WarmContainer, env_at_take, refill_plan, take, warm_key

log = structlog.get_logger(__name__)
T = TypeVar("T")

#: A refill that failed is tried again this many times in all, waiting longer each time.
REFILL_ATTEMPTS = 5
REFILL_RETRY_S = 0.5


class WarmKeeper:
    def __init__(
        self, driver: DockerDriver, host_id: str, per_key: int, disk_free: Callable[[], int]
    ) -> None:
        """`disk_free`: the donated disk no allocation placed here reserves, now."""
        self.driver = driver
        self.host_id = host_id
        self.per_key = per_key
        self.disk_free = disk_free
        self.recent = RecentShapes()
        #: Warm containers ready to be taken (created by this hostd, not taken yet).
        self.ready: list[WarmContainer] = []
        #: False while the host takes no work (left, draining): nothing is kept, nothing made.
        self.wanted = True
        self._swept = False
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._again = False

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def take(self, spec: ContainerSpec) -> str | None:
        """Start `spec`'s allocation in a warm container of its shape; None when there is
        none (or it could not become the allocation): then create its own, as before.
        Raises as the driver's `run` does once the container was taken (LimitsNotApplied,
        a failed start). Refills in the background either way."""
        key = warm_key(spec, env_at_take=env_at_take(self.driver.helper))
        if key is None:
            return None
        self.recent.note(key)
        found = take(self.ready, spec)
        try:
            if found is None:
                return None
            try:
                container_id = await self._thread(take_warm, self.driver, found, spec)
            except NotTaken as exc:
                log.warning("hostd.warm_not_taken", alloc_id=spec.allocation_id, error=str(exc))
                return None
            log.info("hostd.warm_taken", alloc_id=spec.allocation_id, container_id=container_id[:12])
            return container_id
        finally:
            self.refill_soon()

    def refill_soon(self) -> None:
        """Bring the warm containers in line in the background (one refill at a time; a
        request during one runs another after it)."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.create_task(self._refill_loop())

    async def _refill_loop(self) -> None:
        self._again = True
        failures = 0
        while self._again:
            self._again = False
            try:
                await self.refill()
                failures = 0
            except DockerDriverError as exc:
                # A refused or dropped call (the engine busy removing, or away): tried again a
                # few times; then the next placement or reconciliation asks again.
                failures += 1
                log.warning("hostd.warm_refill_failed", error=str(exc), attempt=failures)
                if failures >= REFILL_ATTEMPTS:
                    return
                self._again = True
                await asyncio.sleep(REFILL_RETRY_S * failures)

    async def refill(self) -> None:
        async with self._lock:
            if not self._swept:
                await self._sweep()
            wanted = list(self.recent.keys) if self.wanted else []
            plan = refill_plan(wanted, list(self.ready), self.per_key, self.disk_free())
            for container in plan.remove:
                if container in self.ready:
                    self.ready.remove(container)
                    with contextlib.suppress(DockerDriverError):
                        await self._thread(self.driver.remove, container.container_id)
            for key in plan.create:
                if not self.wanted or key not in self.recent.keys:
                    break  # emptied or moved on meanwhile
                try:
                    made = await self._thread(create_warm, self.driver, self.host_id, key)
                except (ShapeCannotStart, ImageRefused) as exc:
                    # Its command is not in its image, or its image is refused (read before
                    # anything is made: a VOLUME line, a label of Potluck's namespace): each
                    # allocation of it fails at start, cold, saying why; no warm one is made
                    # for it until it is placed here again.
                    self.recent.forget(key)
                    log.warning("hostd.warm_shape_dropped", image=key.image, error=str(exc))
                    continue
                self.ready.append(made)
                log.info("hostd.warm_created", image=key.image, container_id=made.container_id[:12])

    async def _sweep(self) -> None:
        """Remove the warm containers of an earlier hostd (their shapes are not known here)."""
        mine = {c.container_id for c in self.ready}
        for container_id, name in await self._thread(list_warm, self.driver, self.host_id):
            if container_id not in mine:
                log.info("hostd.warm_left_over_removed", container=name)
                await self._thread(self.driver.remove, container_id)
        self._swept = True

    def want_again(self) -> None:
        """Warm containers are made again (the member took a drain back)."""
        self.wanted = True
        self.refill_soon()

    async def empty(self) -> None:
        """No more warm containers here (the host left, or drains), until want_again."""
        self.wanted = False
        if self._task is not None:
            # Not cancelled: a create under way in its thread would leave a container behind.
            with contextlib.suppress(DockerDriverError):
                await self._task
        async with self._lock:
            while self.ready:
                container = self.ready.pop()
                with contextlib.suppress(DockerDriverError):
                    await self._thread(self.driver.remove, container.container_id)
