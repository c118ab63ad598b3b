"""hostd's image inventory on a real Docker engine of its own (so no other test's image is at risk).

Twenty small images reach the engine and are used, one after the other, by a
container each (the way allocations use them) while the inventory runs and
follows the engine's events; one container stays. The images waiting for
their turn are what allocations placed here wait for (`wanted`), as after a pull.
"""

import asyncio
import io
import os
import tarfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import pytest

from potluck.contracts.host_images import held_names
from potluck.contracts.reports import ImagesHeld, Report
from potluck.hostd.config import HostdConfig
from potluck.hostd.docker_driver import DockerDriver, EngineImage
from potluck.hostd.image_inventory import ImageInventory
from potluck.localstack import DockerEngine, LocalStackError, build_test_image, ensure_docker_installed
from potluck.localstack.test_image import DEFAULT_TAG, import_rootfs

KiB = 1024
IMAGES = 20
KEPT = 7  # its container stays
WANTED = 3  # an allocation placed here waits for it; never used


def rootfs(n: int) -> bytes:
    """A root filesystem of one 200 KiB file that differs per image (so each image has its own layer)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        data = os.urandom(200 * KiB)
        info = tarfile.TarInfo(f"data-{n}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def tag(n: int) -> str:
    return f"cache-test/img{n}:1"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    try:
        ensure_docker_installed()
        engine = DockerEngine(tmp_path_factory.mktemp("cache-engine"))
        engine.start()
        build_test_image(engine.url)
    except LocalStackError as exc:
        pytest.fail(f"cannot start a private Docker engine: {exc}", pytrace=False)
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture
async def driver(engine: DockerEngine) -> AsyncIterator[DockerDriver]:
    driver = DockerDriver(engine.url)
    yield driver
    driver.close()


def by_tag(images: list[EngineImage]) -> dict[str, EngineImage]:
    return {t: i for i in images for t in i.tags}


async def test_twenty_images_used_and_the_cache_keeps_its_size(
    engine: DockerEngine, driver: DockerDriver, tmp_path: Path
) -> None:
    """Tried: twenty 200 KiB images, each used by a container in turn (one container kept), with
    `image_cache` room for the base image and four of them. Must hold afterwards: the images
    take no more than `image_cache`; the image with a container, the one an allocation waits
    for and the member's base image (named exactly in allowed_images) are all still there; the
    image used last is kept and the one used first is gone (least recently used go first);
    each use was noticed from the engine's events alone (no periodic scan in the test's time);
    the last ImagesHeld report names exactly what the engine holds."""
    for n in range(IMAGES):
        await asyncio.to_thread(import_rootfs, engine.url, rootfs(n), tag(n), changes=[])
    images = by_tag(await asyncio.to_thread(driver.images))
    base = images[DEFAULT_TAG].size
    each = max(images[tag(n)].size for n in range(IMAGES))
    cap = base + 4 * each + each // 2
    config = HostdConfig.model_validate(
        {
            "host_id": "h-cache",
            "credentials_file": tmp_path / "creds",
            "state_dir": tmp_path,
            "docker_url": engine.url,
            "allowed_images": [DEFAULT_TAG, "cache-test/*:*"],
            "image_cache": cap,
            "donate": {"cpus": 1, "memory": "1G", "disk": "1G"},
            "timing": {"image_scan_interval_s": 300, "image_idle_s": 0},
        }
    )
    reports: list[Report] = []
    unused = set(range(IMAGES))
    inventory = ImageInventory(
        config, driver, reports.append, wanted=lambda: [tag(n) for n in unused | {WANTED}]
    )
    client = docker.DockerClient(base_url=engine.url)
    running = asyncio.create_task(inventory.run())
    try:
        order = [n for n in reversed(range(IMAGES)) if n != WANTED]  # used last: image 0
        for n in order:
            image_id = images[tag(n)].image_id
            container = await asyncio.to_thread(client.api.create_container, tag(n), command=["/none"])
            unused.discard(n)
            deadline = time.monotonic() + 10
            while image_id not in inventory.last_used or inventory.last_used[image_id] < time.time() - 5:
                assert time.monotonic() < deadline, f"the use of {tag(n)} was not noticed"
                await asyncio.sleep(0.05)
            if n != KEPT:
                await asyncio.to_thread(client.api.remove_container, container["Id"])
        deadline = time.monotonic() + 15
        while True:
            held = await asyncio.to_thread(driver.images)
            if sum(i.size for i in held) <= cap or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # the scan after the last removal has reported
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        client.close()
    held = await asyncio.to_thread(driver.images)
    tags = by_tag(held)
    assert sum(i.size for i in held) <= cap, (sorted(tags), cap)
    assert {DEFAULT_TAG, tag(KEPT), tag(WANTED), tag(0)} <= set(tags), sorted(tags)
    assert tag(order[0]) not in tags
    last = [r for r in reports if isinstance(r, ImagesHeld)][-1]
    assert set(last.images) == set().union(*(held_names(i.tags, i.digests) for i in held))
