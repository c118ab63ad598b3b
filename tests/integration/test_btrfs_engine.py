"""hostd on an engine whose data-root is on btrfs (Fedora's and openSUSE's default filesystem).

There dockerd picks its btrfs storage driver, whose `size` option bounds the image and the
writes together, not the writes alone as overlay2's does: a container of an image larger than
its size cannot even be created ("Failed to limit qgroup ... disk quota exceeded"). hostd must
not take that option for the disk bound it promises (what the container writes); it measures
the writes instead, as on any engine without quotas.

The engine is real: a private dockerd on a btrfs filesystem in a sparse file, loop-mounted.
"""

import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from potluck.hostd.docker_driver import DockerDriver
from potluck.localstack import DockerEngine, build_test_image
from potluck.localstack.docker_engine import engine_request
from potluck.localstack.test_image import import_rootfs, rootfs_tarball
from tests.fixtures.docker import container_spec

MiB = 1 << 20


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}", pytrace=False)


@pytest.fixture
def btrfs_engine(tmp_path: Path) -> Iterator[DockerEngine]:
    """A private engine whose data-root is a fresh btrfs filesystem; unmounted afterwards."""
    if shutil.which("mkfs.btrfs") is None:
        pytest.fail("mkfs.btrfs is missing: run ops/setup (it installs btrfs-progs)", pytrace=False)
    image = tmp_path / "btrfs.img"
    with image.open("wb") as sparse:
        sparse.truncate(2 << 30)
    _run("mkfs.btrfs", "-q", str(image))
    engine = DockerEngine(tmp_path / "engine")
    engine.data_root.mkdir(parents=True)
    _run("mount", "-o", "loop", str(image), str(engine.data_root))
    try:
        engine.start()
        yield engine
    finally:
        try:
            engine.stop()  # unmounts what is mounted on its data-root, ours included
        finally:
            if os.path.ismount(engine.data_root):
                _run("umount", str(engine.data_root))


def _image_larger_than(url: str, size: int) -> str:
    """The test image with `size` bytes of random data added (random: nothing compresses it)."""
    rootfs = io.BytesIO(rootfs_tarball())
    with tarfile.open(fileobj=rootfs, mode="a") as tar:
        ballast = tarfile.TarInfo("ballast")
        ballast.size = size
        tar.addfile(ballast, io.BytesIO(os.urandom(size)))
    tag = f"potluck-test/large:{uuid.uuid4().hex[:8]}"
    return import_rootfs(url, rootfs.getvalue(), tag, changes=['CMD ["sleep", "1000"]'])


def test_a_btrfs_engine_is_measured_and_runs_images_larger_than_the_bound(
    btrfs_engine: DockerEngine,
) -> None:
    """Tried: hostd's driver on a real btrfs-backed engine whose first image is small (the probe
    of a size option passes there), then an allocation with a 32 MiB disk bound of a 48 MiB image.
    Must hold: the engine is reported without a disk quota (hostd measures the writes), and the
    allocation's container is created and runs, with no size option on it."""
    info = btrfs_engine.info()
    assert info["Driver"] == "btrfs", info["Driver"]
    build_test_image(btrfs_engine.url)
    driver = DockerDriver(btrfs_engine.url)
    try:
        facts = driver.engine_facts()  # probed while the small image is the only one
        assert facts.storage_driver == "btrfs"
        assert not facts.disk_quota_supported, "btrfs' size bounds the image too, not the writes alone"

        large = _image_larger_than(btrfs_engine.url, 48 * MiB)
        container_id = driver.run(container_spec(large, "h-btrfs", disk_bytes=32 * MiB))
        assert driver.state(container_id).running
        status, body = engine_request(btrfs_engine.url, "GET", f"/containers/{container_id}/json")
        assert status == 200, body
        storage_opt = json.loads(body)["HostConfig"].get("StorageOpt")
        assert not storage_opt, storage_opt
        driver.remove(container_id)
    finally:
        driver.close()
