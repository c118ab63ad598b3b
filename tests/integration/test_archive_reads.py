"""Reading a running allocation's files out (`potluck-archive get PATH`, what `potluck cp
ALLOC:PATH .` runs) while the container swaps paths under the reader.

The engine is a real private dockerd with the vfs storage driver: there (as on btrfs, zfs, and
overlayfs with redirect_dir) root in a container may rename its own /etc, which the engine's
archive walked into from the member's side (container_archive.py).
"""

import asyncio
import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from potluck.hostd.docker_driver import DockerDriver
from potluck.hostd.exec_bridge import ExecBridge
from potluck.hostd.reserved_commands import ArchiveGet, open_reserved
from potluck.localstack import DockerEngine, build_test_image
from potluck.localstack.test_image import DEFAULT_TAG
from tests.fixtures.docker import container_spec
from tests.fixtures.exec_output import EXEC_WAIT_S

HOST = "host-a"
#: Downloads made while the container swaps: an engine that mounts through /etc is caught
#: within a few dozen (18 and 30 in two runs before the fix).
ROUNDS = 150


class _Received:
    """A session's output: its stdout (the tar), its stderr, its end."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.ended = asyncio.Event()

    def exec_data(self, data: bytes, stderr: bool) -> None:
        (self.err if stderr else self.out).extend(data)

    def exec_eof(self) -> None:
        self.ended.set()

    def exec_pause(self) -> None:
        pass

    def exec_resume(self) -> None:
        pass


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
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(path) in line]


async def _get(bridge: ExecBridge, alloc_id: str, path: str) -> tuple[int | None, bytes, str]:
    process = await open_reserved(bridge, alloc_id, ArchiveGet(path))
    received = _Received()
    try:
        process.attach(received)
        process.write_eof()
        async with asyncio.timeout(EXEC_WAIT_S):
            await received.ended.wait()
        status = await process.wait_exit()
    finally:
        process.close()
    return status, bytes(received.out), received.err.decode(errors="replace")


async def test_a_download_while_the_container_swaps_etc_for_a_link_to_the_members_disk(
    vfs_engine: DockerEngine, tmp_path: Path
) -> None:
    """Tried: in a running allocation, root swaps /etc, in a loop, with a symlink to a directory
    of the member's machine (which holds a file `hosts`), while its user downloads /root/f again
    and again. Before the fix hostd had the engine read the file: the engine resolved where the
    container's /etc/hosts, /etc/resolv.conf and /etc/hostname go inside the container's root,
    then mounted them there following the path again, as root, in its own mount namespace;
    the swap in between made it create `resolv.conf` in the member's directory (18 downloads
    in) and mount the container's writable file over the member's.
    Must hold: every download is the container's file; the member's directory holds what it
    held, and nothing is mounted on it."""
    members = tmp_path / "members-dir"
    members.mkdir()
    (members / "hosts").write_text("the member's own\n")
    driver = DockerDriver(vfs_engine.url)
    spec = container_spec(DEFAULT_TAG, HOST, command=["sleep", "1000"])
    container_id = driver.run(spec)
    client = docker.DockerClient(base_url=vfs_engine.url)
    try:
        container = client.containers.get(container_id)
        swap = (
            f"echo mine > /root/f; ln -s {members} /etcx; "
            "while :; do mv /etc /etc.d; mv /etcx /etc; mv /etc /etcx; mv /etc.d /etc; done"
        )
        await asyncio.to_thread(container.exec_run, ["sh", "-c", swap], detach=True)
        bridge = ExecBridge(vfs_engine.url, HOST)
        for _ in range(ROUNDS):
            status, tar_bytes, said = await _get(bridge, spec.allocation_id, "/root/f")
            assert sorted(os.listdir(members)) == ["hosts"], (os.listdir(members), said)
            assert (members / "hosts").read_text() == "the member's own\n"
            assert not _mounts_under(members)
            assert status == 0, said
            with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
                member = tar.extractfile("f")
                assert member is not None
                assert member.read() == b"mine\n"
    finally:
        for line in _mounts_under(members):  # what an engine that failed this left mounted
            await asyncio.to_thread(subprocess.run, ["umount", "-l", line.split()[4]], check=False)
        await asyncio.to_thread(client.containers.get(container_id).remove, force=True)
        client.close()
        driver.close()
