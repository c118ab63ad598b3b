"""An upload (`potluck-archive put`, what `potluck cp LOCAL ALLOC:DST` runs) that hostd ends
before it lands leaves nothing in the container, on a real engine and hostd's real exec bridge.

The copy is unpacked into a temporary directory beside its place; when hostd ends the copy's
processes (its stream sent more than it said, or its session was lost), the script's trap
removes that directory, unless the trap is itself killed when the grace hostd gives the
processes runs out. In CI (a loaded machine) the trap's `rm` was killed with them, and the
`.potluck-cp.*` directory stayed, holding what had been unpacked, after the user had been told
nothing was copied. These tests give the processes no grace at all, so the trap never gets to
run: what must hold is that hostd, which names the directory, removes it once they have ended.
"""

import asyncio
import io
import os
import tarfile

import pytest

from potluck.hostd.container_upload import PUT_REFUSED, STREAM_SLACK, ArchivePut, open_upload
from potluck.hostd.docker_driver import DockerDriver
from potluck.hostd.exec_bridge import ExecBridge
from potluck.localstack import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG
from tests.fixtures.docker import container_spec
from tests.fixtures.exec_output import EXEC_WAIT_S, ExecOutput, bridge_output

HOST = "host-upload-discard"
MiB = 1 << 20
#: Where the copies go: a directory only they write into.
DST = "/srv/in/"
#: What the client says its copy needs: far less than it sends.
SAID = 8192


@pytest.fixture
def running(docker_driver: DockerDriver) -> str:
    """A running busybox allocation (256 MiB disk bound) with an empty DST: its id (the
    driver's fixture removes it)."""
    spec = container_spec(DEFAULT_TAG, HOST, command=["sh", "-c", f"mkdir -p {DST} && exec sleep 1000"])
    docker_driver.run(spec)
    return spec.allocation_id


def _tar_of(size: int) -> bytes:
    """A tar stream of one file `lie.bin` of `size` random bytes."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("lie.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    return out.getvalue()


def _graceless(engine: DockerEngine, *, host_signals: bool = True) -> ExecBridge:
    """hostd's bridge, killing a session's processes as soon as it hangs them up (from this
    machine, or with `kill` run in the container as a hostd that may not signal them does)."""
    return ExecBridge(
        engine.url, HOST, kill_grace_s=0.0, host_signals=host_signals, disk_bound_of=lambda _: 256 * MiB
    )


async def _left_in_dst(bridge: ExecBridge, alloc_id: str) -> list[str]:
    listed = await bridge_output(bridge, alloc_id, ["sh", "-c", f"ls -A {DST}; echo end"])
    names = listed.decode().split()
    assert names[-1] == "end", listed
    return names[:-1]


async def test_an_upload_cut_for_sending_more_than_it_said_leaves_no_temporary_directory(
    docker_engine: DockerEngine, running: str
) -> None:
    """Tried: a put that says it needs 8 KiB, then sends the tar of a 4 MiB file in 64 KiB
    pieces, through a bridge that kills the copy's processes the moment it hangs them up.
    Must hold: the copy exits PUT_REFUSED and says it was cut off; once it has, DST holds
    nothing; a copy that fits then lands. (Here the script often sees its input end and
    removes the directory itself before hostd's signals come: this failed in CI only, under
    load, with the signals arriving while it removed. The lost session below is the same
    removal without that head start.)"""
    bridge = _graceless(docker_engine)
    stream = _tar_of(4 * MiB)
    process = await open_upload(bridge, running, ArchivePut(SAID, DST, "lie.bin"), {})
    said = ExecOutput()
    try:
        process.attach(said)
        for at in range(0, SAID + STREAM_SLACK + 64 * 1024, 64 * 1024):
            process.write(stream[at : at + 64 * 1024])
            await asyncio.sleep(0.01)  # let tar take some of it first
        async with asyncio.timeout(EXEC_WAIT_S):
            await said.ended.wait()
        status = await process.wait_exit()
    finally:
        process.close()

    assert status == PUT_REFUSED, said.err
    assert b"more than the 8192 bytes it said it needs" in said.err, said.err
    assert await _left_in_dst(bridge, running) == []
    small = _tar_of(1000)
    fits = await open_upload(bridge, running, ArchivePut(64 * 1024, DST, "lie.bin"), {})
    landed = ExecOutput()
    try:
        fits.attach(landed)
        fits.write(small)
        fits.write_eof()
        async with asyncio.timeout(EXEC_WAIT_S):
            await landed.ended.wait()
        assert await fits.wait_exit() == 0, landed.err
    finally:
        fits.close()
    assert await _left_in_dst(bridge, running) == ["lie.bin"]


@pytest.mark.parametrize("host_signals", [True, False], ids=["signalled-from-host", "signalled-inside"])
async def test_an_upload_whose_session_is_lost_leaves_no_temporary_directory(
    docker_engine: DockerEngine, running: str, host_signals: bool
) -> None:
    """Tried: a put of a 4 MiB file (said as such), of which 1 MiB is sent before its session
    is lost (what the gateway link does then: terminate the process), through a bridge that
    kills the copy's processes the moment it hangs them up. Must hold: once the termination
    has returned, the copy's processes have ended and DST holds nothing (before the fix:
    `.potluck-cp.*`)."""
    bridge = _graceless(docker_engine, host_signals=host_signals)
    stream = _tar_of(4 * MiB)
    process = await open_upload(bridge, running, ArchivePut(5 * MiB, DST, "lie.bin"), {})
    said = ExecOutput()
    try:
        process.attach(said)
        for at in range(0, MiB, 64 * 1024):
            process.write(stream[at : at + 64 * 1024])
            await asyncio.sleep(0.01)
        # It is unpacking: under load the copy's script may not have made its directory yet
        # (seen in a full run), so the test waits for it rather than reading once.
        async with asyncio.timeout(EXEC_WAIT_S):
            while not (names := await _left_in_dst(bridge, running)):
                await asyncio.sleep(0.05)
        assert [n[:12] for n in names] == [".potluck-cp."], names
        await process.terminate()
    finally:
        process.close()

    assert await _left_in_dst(bridge, running) == []
    ps = await bridge_output(bridge, running, ["ps", "-o", "args"])
    assert b"tar" not in ps, ps
