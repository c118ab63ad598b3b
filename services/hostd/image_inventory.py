"""The images this host holds: reported to the allocator, and kept within `image_cache`.

One loop, its Docker calls off the event loop: it lists the engine's images
after each image event (pull, tag, untag, delete; a container made or
removed), at least every `timing.image_scan_interval_s`, and when the agent
asks after a (re)registration. It then

- notes when each image was last used: now, for every image a container (any
  state) was made from, and for an image that arrived since the last listing
  (pulled, loaded, built: the engine's `Created` is when the image was built,
  which may be long before it reached this engine); one present when hostd
  started and never seen in use counts from its `Created`;
- if `image_cache` is set and the images take more, removes images, least
  recently used first, until they fit: never one a container was made from,
  one an allocation placed here waits for, one the member named exactly in
  `allowed_images`, or one used or pulled within `timing.image_idle_s` (a pull
  for an allocation is not undone before its container is made). When only
  such images remain the cache stays over its size, and says so in the log;
- reports `ImagesHeld` (normalised names, tags and digests) when the set
  changed since the last report, or when asked to send it again: only the
  images the pool may run here (pulled for it, or listed in a non-empty
  `allowed_images`: pool_images.py), so the names of the member's own images
  never leave the machine;
- forgets, in the ledger of the pool's images, the ids the engine no longer holds.

Sizes are the engine's `Size` per image, layers shared between images counted
in each: the sum is at least what the images take on disk, so the cap holds
on the disk too.
"""

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import structlog

from potluck.contracts.host_images import bounded, held_names, image_keys
from potluck.contracts.reports import ImagesHeld, Report
from potluck.hostd.config import HostdConfig
from potluck.hostd.docker_driver import DockerDriver, DockerDriverError, EngineImage
from potluck.hostd.pool_images import PoolImages, shared_names
from potluck.kernel.sizes import format_size

log = structlog.get_logger(__name__)

#: Events come in bursts (a pull tags, a run creates); one listing after the burst is enough.
_SETTLE_S = 0.3


def names_of(image: EngineImage) -> set[str]:
    return held_names(image.tags, image.digests)


def evictions(
    images: Sequence[EngineImage],
    last_used: Callable[[EngineImage], float],
    *,
    cap: int,
    protected: set[str],
    now: float,
    idle_s: float,
) -> list[EngineImage]:
    """Which images to remove, in order, so that the rest take at most `cap` bytes. Pure.

    Only images no container was made from, none of whose names is `protected`,
    and not used within `idle_s` of `now`, least recently used first (ties: by id).
    """
    total = sum(i.size for i in images)
    if total <= cap:
        return []
    candidates = sorted(
        (
            i
            for i in images
            if i.containers == 0 and not (names_of(i) & protected) and last_used(i) <= now - idle_s
        ),
        key=lambda i: (last_used(i), i.image_id),
    )
    chosen = []
    for image in candidates:
        if total <= cap:
            break
        chosen.append(image)
        total -= image.size
    return chosen


class ImageInventory:
    def __init__(
        self,
        config: HostdConfig,
        driver: DockerDriver,
        report: Callable[[Report], None],
        wanted: Callable[[], Iterable[str]] = tuple,
        clock: Callable[[], float] = time.time,
        pool_images: PoolImages | None = None,
    ) -> None:
        """`wanted`: the images of the allocations placed here (kept whatever their age).
        `pool_images`: the ledger of what the pool brought (pool_images.py), pruned of what the
        engine no longer holds; only what it or allowed_images admits is reported (None: all)."""
        self.config = config
        self.driver = driver
        self.report = report
        self.wanted = wanted
        self.clock = clock
        self.pool_images = pool_images
        self.last_used: dict[str, float] = {}
        self.held: list[str] | None = None  # the names last reported
        self._present: set[str] | None = None  # image ids at the last listing (None: not listed yet)
        self._resend = True
        self._wake = asyncio.Event()

    def resend(self) -> None:
        """Report the images again at the next scan (after a registration), changed or not."""
        self._resend = True
        self._wake.set()

    def _shared(self, image: EngineImage) -> set[str]:
        """The names of `image` the pool may hear of: a member's own images stay unnamed."""
        if self.pool_images is None:
            return names_of(image)
        return shared_names(
            image.image_id, names_of(image), pool_ids=self.pool_images.ids, allowed=self.config.allowed_images
        )

    def _used_at(self, image: EngineImage) -> float:
        return self.last_used.get(image.image_id, float(image.created))

    def _protected(self) -> set[str]:
        names: set[str] = set()
        for image in (*self.wanted(), *self.config.base_images()):
            names.update(image_keys(image))
        return names

    async def scan(self) -> None:
        """List the images, remove what the cache has no room for, report if the set changed."""
        # Before the listing: an id a pull records while the engine is listed is not pruned.
        known = self.pool_images.ids if self.pool_images is not None else frozenset()
        images = await asyncio.to_thread(self.driver.images)
        now = self.clock()
        present = {i.image_id for i in images}
        for image in images:
            arrived = self._present is not None and image.image_id not in self._present
            if image.containers or arrived:
                self.last_used[image.image_id] = now
        self._present = present
        for image_id in [i for i in self.last_used if i not in present]:
            del self.last_used[image_id]
        if self.config.image_cache is not None:
            images = await self._evict(images, self.config.image_cache, now)
        if self.pool_images is not None:
            self.pool_images.prune({i.image_id for i in images}, known)
        every = set().union(*(self._shared(i) for i in images))
        names = bounded(every)
        if len(names) < len(every) and self.held != names:
            log.warning("hostd.images_not_all_reported", held=len(every), reported=len(names))
        if self._resend or names != self.held:
            self._resend = False
            self.held = names
            self.report(ImagesHeld(images=names))

    async def _evict(self, images: list[EngineImage], cap: int, now: float) -> list[EngineImage]:
        chosen = evictions(
            images,
            self._used_at,
            cap=cap,
            protected=self._protected(),
            now=now,
            idle_s=self.config.timing.image_idle_s,
        )
        removed: set[str] = set()
        for image in chosen:
            try:
                await asyncio.to_thread(self.driver.remove_image, image)
            except DockerDriverError as exc:
                # In use since we listed, or the engine went away: listed again at the next scan.
                log.info("hostd.image_kept", image=image.image_id[:19], tags=image.tags, reason=str(exc))
                continue
            removed.add(image.image_id)
            self.last_used.pop(image.image_id, None)
            log.info(
                "hostd.image_removed",
                image=image.image_id[:19],
                tags=image.tags,
                size=image.size,
                idle_s=round(now - self._used_at(image)),
            )
        kept = [i for i in images if i.image_id not in removed]
        total = sum(i.size for i in kept)
        if total > cap:
            log.warning(
                "hostd.image_cache_over",
                size=format_size(total),
                image_cache=format_size(cap),
                hint="what is left is in use, wanted here, a base image or used recently",
            )
        return kept

    async def run(self) -> None:
        """Scan on every event and at least every image_scan_interval_s, until cancelled."""
        events = asyncio.create_task(self._follow_events())
        try:
            while True:
                try:
                    await self.scan()
                except DockerDriverError as exc:
                    log.info("hostd.images_unlisted", error=str(exc))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.timing.image_scan_interval_s):
                        await self._wake.wait()
                await asyncio.sleep(_SETTLE_S)
                self._wake.clear()
        finally:
            events.cancel()
            # Waits for the follower to end without taking its CancelledError for ours: a
            # second cancellation of this task while it waits still ends it.
            await asyncio.wait([events])

    async def _follow_events(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                stream = await asyncio.to_thread(self.driver.image_events)
            except DockerDriverError:
                await asyncio.sleep(2.0)
                continue
            # What changed before the stream was open (at start, or while it was down) is seen by
            # a scan from now on: a scan before it, and then no event, would miss it until the next.
            self._wake.set()
            closed = asyncio.Event()

            def pump(stream: Any = stream, closed: asyncio.Event = closed) -> None:
                try:
                    for _action in stream:
                        loop.call_soon_threadsafe(self._wake.set)
                except DockerDriverError:
                    pass
                finally:
                    with contextlib.suppress(RuntimeError):  # the loop closed first, at exit
                        loop.call_soon_threadsafe(closed.set)

            # A daemon thread, as for container events: a blocked read must not hold up exit.
            threading.Thread(target=pump, name="docker-image-events", daemon=True).start()
            try:
                await closed.wait()
            finally:
                stream.close()
            await asyncio.sleep(1.0)
