"""hostd reading a running allocation's files (`potluck-archive get PATH`, what `potluck cp
ALLOC:PATH .` runs) and measuring the engine's files it writes (the disk guard) while the
container swaps its /etc for a link to a directory of the member's machine.

The engine is a real private dockerd with the vfs storage driver: there (as on btrfs, zfs, and
overlayfs with redirect_dir) root in a container may rename its own /etc (each test shows the
container doing it with its own `mv`). The swap itself runs from the member's side, on the
container's root directory there, with renameat2's exchange in a tight loop: what a static
program of the user's image does from inside, faster than busybox's `mv` could.
"""

import asyncio
import ctypes
import io
import os
import subprocess
import tarfile
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import docker
import pytest

from potluck.hostd.docker_driver import DockerDriver
from potluck.hostd.exec_bridge import ExecBridge
from potluck.hostd.exec_errors import ExecError
from potluck.hostd.reserved_commands import ArchiveGet, open_reserved
from potluck.localstack import DockerEngine, build_test_image
from potluck.localstack.test_image import DEFAULT_TAG
from tests.fixtures.docker import container_spec
from tests.fixtures.exec_output import EXEC_WAIT_S, ExecOutput

HOST = "host-a"
#: Downloads made while the container swaps. The engine mounting through /etc was caught by
#: the 1st to the 18th download in runs before the fix: 60 is over three times the worst seen.
#: Each download is an exec in the container (about half a second beside the swapping), so
#: the 150 this was first were 80-110 s of the suite.
DOWNLOADS = 60
#: Measures made while the container swaps (one was caught at the 10th); a measure is cheap
#: (150 take about a second), so these keep their first count.
MEASURES = 150
AT_FDCWD = -100
RENAME_EXCHANGE = 2


@pytest.fixture
def vfs_engine(tmp_path: Path) -> Iterator[DockerEngine]:
    """A private engine on the vfs storage driver, with the test image; stopped afterwards."""
    engine = DockerEngine(tmp_path / "engine")
    engine.workdir.mkdir(parents=True)
    engine.config_file.write_text('{"storage-driver": "vfs"}\n')
    try:
        engine.start()
        build_test_image(engine.url, DEFAULT_TAG)
        yield engine
    finally:
        engine.stop()


def _mounts_under(path: Path) -> list[str]:
    """Mount points (here) in `path` or below it."""
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p == str(path) or p.startswith(f"{path}/")]


async def _get(bridge: ExecBridge, alloc_id: str, path: str) -> tuple[int | None, bytes, str]:
    process = await open_reserved(bridge, alloc_id, ArchiveGet(path))
    received = ExecOutput()
    try:
        process.attach(received)
        process.write_eof()
        async with asyncio.timeout(EXEC_WAIT_S):
            await received.ended.wait()
        status = await process.wait_exit()
    finally:
        process.close()
    return status, bytes(received.out), received.err.decode(errors="replace")


@asynccontextmanager
async def _swapping(
    engine: DockerEngine, container_id: str, members: Path, rounds: int
) -> AsyncIterator[None]:
    """The container's /etc swapped with a symlink to `members`, over and over, while inside
    (more swaps than the `rounds` of reads made meanwhile)."""
    client = docker.DockerClient(base_url=engine.url)
    try:
        container = client.containers.get(container_id)
        moved = await asyncio.to_thread(container.exec_run, ["sh", "-c", "mv /etc /etc.d && mv /etc.d /etc"])
        assert moved.exit_code == 0, moved.output  # the container may do this itself
    finally:
        client.close()
    mounts = engine.data_root / "image/vfs/layerdb/mounts" / container_id / "mount-id"
    root = engine.data_root / "vfs/dir" / mounts.read_text().strip()
    (root / "etcx").symlink_to(members)
    libc = ctypes.CDLL(None, use_errno=True)
    here, there = bytes(root / "etc"), bytes(root / "etcx")
    stop = threading.Event()
    swaps = 0

    def swap() -> None:
        nonlocal swaps
        while not stop.is_set():
            assert libc.renameat2(AT_FDCWD, here, AT_FDCWD, there, RENAME_EXCHANGE) == 0, ctypes.get_errno()
            swaps += 1

    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        yield
    finally:
        stop.set()
        await asyncio.to_thread(swapper.join)
        for point in _mounts_under(members):  # what an engine that failed this left mounted
            await asyncio.to_thread(subprocess.run, ["umount", "-l", point], check=False)
    assert swaps > rounds, swaps


def _untouched(members: Path) -> None:
    assert sorted(os.listdir(members)) == ["hosts"], os.listdir(members)
    assert (members / "hosts").read_text() == "the member's own\n"
    assert not _mounts_under(members)


async def test_a_download_while_the_container_swaps_etc_for_a_link_to_the_members_disk(
    vfs_engine: DockerEngine, tmp_path: Path
) -> None:
    """Tried: in a running allocation, /etc swapped, in a loop, with a symlink to a directory of
    the member's machine (which holds a file `hosts`), while its user downloads /root/f again
    and again. Before the fix hostd had the engine read the file: the engine resolved where the
    container's /etc/hosts, /etc/resolv.conf and /etc/hostname go inside the container's root,
    then mounted them there following the path again, as root, in its own mount namespace;
    the swap in between made it create `resolv.conf` in the member's directory and mount the
    container's writable file over it.
    Must hold: every download is the container's file; the member's directory holds what it
    held, and nothing is mounted on it."""
    members = tmp_path / "members-dir"
    members.mkdir()
    (members / "hosts").write_text("the member's own\n")
    driver = DockerDriver(vfs_engine.url)
    spec = container_spec(DEFAULT_TAG, HOST, command=["sh", "-c", "echo mine > /root/f; exec sleep 1000"])
    container_id = driver.run(spec)
    try:
        bridge = ExecBridge(vfs_engine.url, HOST)
        failed: list[str] = []
        async with _swapping(vfs_engine, container_id, members, DOWNLOADS):
            for _ in range(DOWNLOADS):
                try:
                    status, tar_bytes, said = await _get(bridge, spec.allocation_id, "/root/f")
                except ExecError as exc:  # the engine failing, in the middle of a swap
                    failed.append(str(exc))
                    continue
                finally:
                    _untouched(members)
                assert status == 0, said
                with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
                    member = tar.extractfile("f")
                    assert member is not None
                    assert member.read() == b"mine\n"
        assert not failed, failed[:3]
    finally:
        driver.remove(container_id)
        driver.close()


async def test_the_disk_guards_measure_while_the_container_swaps_etc_for_a_link_to_the_members_disk(
    vfs_engine: DockerEngine, tmp_path: Path
) -> None:
    """Tried: the disk guard's measure of the engine's files the container writes outside its
    layer (/etc/hosts, 3 KiB more written into it first), over and over, while /etc is swapped
    with a symlink to a directory of the member's machine. Before the fix the measure was the
    engine's stat of each path inside the container, which mounts the container's mounts
    first as a download did: `hostname` appeared in the member's directory at the 10th.
    Must hold: the member's directory holds what it held, nothing is mounted on it, and each
    measure still counts what the container wrote into /etc/hosts."""
    members = tmp_path / "members-dir"
    members.mkdir()
    (members / "hosts").write_text("the member's own\n")
    driver = DockerDriver(vfs_engine.url)
    script = "head -c 3072 /dev/zero >> /etc/hosts; exec sleep 1000"
    container_id = driver.run(container_spec(DEFAULT_TAG, HOST, command=["sh", "-c", script]))
    try:
        async with _swapping(vfs_engine, container_id, members, MEASURES):
            for _ in range(MEASURES):
                sizes = await asyncio.to_thread(driver.outside_layer_bytes, container_id)
                _untouched(members)
                assert set(sizes) == {"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"}, sizes
                assert sizes["/etc/hosts"] >= 3072, sizes
    finally:
        driver.remove(container_id)
        driver.close()
