"""Uploads that fit an allocation's disk bound but not what is left of it (issue 17: "a
transfer that would exceed it fails cleanly"): `potluck cp`, OpenSSH's `scp -O` (the legacy
protocol), and `scp` (its SFTP mode) and `sftp` served by hostd's own SFTP server, through
the real gateway to the real hostd and Docker engine.

Before the fix `potluck cp` and `scp -O` sent their bytes into the container until hostd's
disk guard saw the container past its bound and stopped the allocation: the user lost their
running work because of an upload; hostd's SFTP refused the write past the bound but left the
half-written file; an image's own sftp-server wrote the whole upload and the guard stopped the
allocation, and so did rsync.

What must hold instead: the transfer fails with a clear exit status (and, for `potluck cp`, a
message saying how much was needed and how much is left), the allocation
keeps running, the files it held before are intact, nothing half-written is left under the
destination's name (nor a temporary file beside it), and a small upload afterwards works.

The test pool's hostd measures its containers every half second (its default is 10 s), so a
container past its bound is stopped well within the seconds each test waits afterwards.
"""

import asyncio
import os
import re
import struct
import subprocess
import tarfile
from pathlib import Path

import asyncssh
import pytest

from potluck.localstack.test_image import DEFAULT_TAG
from tests.e2e import module_files as module_files_fixtures
from tests.e2e import test_file_transfer as transfer
from tests.e2e.conftest import Gatewayed, wait_for_status
from tests.fixtures.pool import allocation

MiB = 1 << 20
#: Where the uploads go, with the file the allocation held before them.
WORK = "/srv/work"
#: Many of hostd's disk measures here: a container past its bound is stopped by then.
GUARD_WAIT_S = 4.0
#: How long a container past its bound may run before the guard's measure fails it: many of
#: its measures, on a loaded machine.
GUARD_FAILS_WITHIN_S = 30.0


# One pool, gateway and hostd for the module's tests, each test's allocations gone after it.
module_files = module_files_fixtures.module_files
files = module_files_fixtures.files


async def half_full(g: Gatewayed, image: str) -> tuple[str, str]:
    """An interactive allocation with a disk bound of 64 MiB whose /srv/work holds 40 MiB already
    (/srv/work/earlier.bin): its id and that file's sha256."""
    alloc_id = await transfer.interactive(g, image, disk="64M")
    fill = f"dd if=/dev/urandom of={WORK}/earlier.bin bs=1M count=40 2>/dev/null"
    made = await g.ssh(alloc_id, f"mkdir -p {WORK} && {fill} && sync && sha256sum {WORK}/earlier.bin")
    assert made.returncode == 0, made.stderr
    return alloc_id, made.stdout.split()[0]


async def still_whole(g: Gatewayed, alloc_id: str, earlier: str) -> None:
    """The allocation runs, WORK/earlier.bin is what it was, and WORK holds nothing else (no
    partial upload, no temporary file of one)."""
    await asyncio.sleep(GUARD_WAIT_S)
    state = await allocation(g.pool.store, alloc_id)
    assert state is not None
    assert state.status == "running", g.pool.logs()
    left = await g.ssh(alloc_id, f"ls -A {WORK}; sha256sum {WORK}/earlier.bin")
    assert left.returncode == 0, left.stderr
    lines = left.stdout.splitlines()
    assert lines[:-1] == ["earlier.bin"], left.stdout
    assert lines[-1].split()[0] == earlier


def forty(tmp_path: Path) -> Path:
    local = tmp_path / "up.bin"
    local.write_bytes(os.urandom(40 * MiB))
    return local


@pytest.mark.slow
@pytest.mark.parametrize("image", ["default", "busybox"])
async def test_potluck_cp_past_what_is_left_of_the_disk_bound_fails_cleanly(
    files: Gatewayed, default_image: str, tmp_path: Path, image: str
) -> None:
    """What is tried: `potluck cp` of a 40 MiB file, and of a directory holding one, into an
    allocation whose disk bound is 64 MiB and which holds 40 MiB already: each fits the bound,
    not what is left of it (before the fix the container's tar wrote it and hostd's disk guard
    stopped the allocation). What must hold: each exits 1 saying how many bytes it needed and
    how many are left, and that nothing was copied; the allocation still runs, its earlier file
    is intact and nothing else is in /srv/work; a small file is copied in afterwards."""
    alloc_id, earlier = await half_full(files, default_image if image == "default" else DEFAULT_TAG)
    env = transfer.logged_in(files, tmp_path)
    local = forty(tmp_path)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "inside.bin").write_bytes(local.read_bytes())
    key = str(files.key)

    as_file = transfer.potluck("cp", "-i", key, str(local), f"{alloc_id}:{WORK}/up.bin", env=env)
    into_dir = transfer.potluck("cp", "-i", key, str(local), f"{alloc_id}:{WORK}", env=env)
    a_folder = transfer.potluck("cp", "-i", key, str(folder), f"{alloc_id}:{WORK}/", env=env)

    for done in (as_file, into_dir, a_folder):
        assert done.returncode == 1, done.stderr + files.pool.logs()
        said = re.search(
            r"needs (\d+) bytes of disk .* has (\d+) left of the \d+ bytes its files may take", done.stderr
        )
        assert said is not None, done.stderr
        assert int(said[1]) > 40 * MiB > int(said[2]), done.stderr
        assert "nothing was copied" in done.stderr, done.stderr
    await still_whole(files, alloc_id, earlier)
    small = tmp_path / "small.txt"
    small.write_text("small\n")
    fine = transfer.potluck("cp", "-i", key, str(small), f"{alloc_id}:{WORK}/", env=env)
    assert fine.returncode == 0, fine.stderr
    assert (await files.ssh(alloc_id, f"cat {WORK}/small.txt")).stdout == "small\n"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tool", "image"),
    [
        ("scp -O", "default"),
        ("scp", "default"),
        ("sftp", "default"),
        ("rsync", "default"),
        ("scp", "busybox"),
        ("sftp", "busybox"),
    ],
)
async def test_ssh_tools_past_what_is_left_of_the_disk_bound_fail_cleanly(
    files: Gatewayed, default_image: str, tmp_path: Path, tool: str, image: str
) -> None:
    """What is tried: the user's own tool uploads a 40 MiB file into an allocation whose disk
    bound is 64 MiB and which holds 40 MiB already: `scp -O` into the default image (its own
    scp runs the protocol's sink; before the fix it wrote the whole file and hostd's disk guard
    stopped the allocation), `scp` (SFTP mode) and `sftp` into the default image (its own
    sftp-server, hostd filtering its stream), `rsync -e ssh` into the default image (its own
    rsync, hostd counting its input; before the fix each wrote the whole file and the guard
    stopped the allocation), `scp` and `sftp` into busybox (hostd's own SFTP server; before the fix
    the refused upload left a half-written file under its name). What must hold: the tool
    exits non-zero, and through the image's sftp-server says how much the write needed and how
    much is left (rsync: how much was left, and that the upload was cut off); the allocation
    still runs, its earlier file is intact and no part of the upload is left in WORK (nor
    rsync's temporary file); a small upload with the same tool works afterwards."""
    alloc_id, earlier = await half_full(files, default_image if image == "default" else DEFAULT_TAG)
    local = forty(tmp_path)
    small = tmp_path / "small.txt"
    small.write_text("small\n")
    target = f"{alloc_id}@127.0.0.1"

    async def upload(path: Path) -> subprocess.CompletedProcess[str]:
        if tool == "sftp":
            return await transfer.sftp(files, alloc_id, f"put {path} {WORK}/{path.name}\n")
        if tool == "rsync":
            return await transfer.rsync(files, str(path), f"{target}:{WORK}/{path.name}")
        return await transfer.scp(files, str(path), f"{target}:{WORK}/{path.name}", legacy=tool == "scp -O")

    refused = await upload(local)

    assert refused.returncode != 0, refused.stderr
    if tool == "rsync":
        said = re.search(
            r"has (\d+) bytes left of the \d+ bytes its files may take .* it was cut off", refused.stderr
        )
        assert said is not None, refused.stderr
        assert int(said[1]) < 40 * MiB, refused.stderr
    elif image == "default" and tool != "scp -O":
        said = re.search(
            r"disk bound is reached: this needs (\d+) bytes more, (\d+) are left", refused.stderr
        )
        assert said is not None, refused.stderr
        assert int(said[1]) > int(said[2]), refused.stderr
    await still_whole(files, alloc_id, earlier)
    fine = await upload(small)
    assert fine.returncode == 0, fine.stderr
    assert (await files.ssh(alloc_id, f"cat {WORK}/small.txt")).stdout == "small\n"


@pytest.mark.slow
async def test_an_upload_that_sends_more_than_it_said_is_cut_off(files: Gatewayed, tmp_path: Path) -> None:
    """What is tried: a client that says its copy needs 8 KiB (`potluck-archive put 8192`, what
    `potluck cp` sends) and then sends the tar of a 40 MiB file, into a busybox allocation whose
    disk bound is 64 MiB and which holds 40 MiB already: an upload cannot be used to pass the
    bound by saying little. What must hold: hostd cuts the stream off, the session exits 1
    saying so; the allocation still runs, its earlier file is intact and nothing of the copy is
    left in WORK (nor its temporary directory)."""
    alloc_id, earlier = await half_full(files, DEFAULT_TAG)
    local = forty(tmp_path)
    archive = tmp_path / "up.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(local, arcname="lie.bin")
    argv = files.ssh_argv(alloc_id, f"potluck-archive put 8192 {WORK}/lie.bin lie.bin")

    with archive.open("rb") as stdin:
        done = await asyncio.to_thread(
            subprocess.run,
            argv,
            stdin=stdin,
            capture_output=True,
            env=files.ssh_env(),
            timeout=120,
            check=False,
        )

    assert done.returncode == 1, done.stderr
    assert b"more than the 8192 bytes it said it needs" in done.stderr, done.stderr
    await still_whole(files, alloc_id, earlier)


@pytest.mark.slow
async def test_potluck_cp_counts_what_is_left_as_the_disk_guard_counts_it(
    files: Gatewayed, tmp_path: Path
) -> None:
    """What is tried: a busybox allocation (disk bound 64 MiB) holding 40 MiB in one file and
    4,000 empty files elsewhere, which the engine's layer size leaves out but hostd's disk guard
    counts (a block each, 16 MB: disk_bound.py), so about 10 MB are left; then `potluck cp` of a
    20 MiB file (before the fix hostd measured only the layer's size, saw 24 MiB left, let the
    copy through, and the guard stopped the allocation). What must hold: the copy exits 1 saying
    what it needs and what is left, less than it needs; the allocation still runs, its earlier
    file is intact and nothing of the copy is left in WORK; a 2 MiB copy then lands."""
    alloc_id, earlier = await half_full(files, DEFAULT_TAG)
    made = await files.ssh(alloc_id, "mkdir /srv/many && cd /srv/many && seq 1 4000 | xargs touch")
    assert made.returncode == 0, made.stderr
    env = transfer.logged_in(files, tmp_path)
    twenty = tmp_path / "twenty.bin"
    twenty.write_bytes(os.urandom(20 * MiB))
    two = tmp_path / "two.bin"
    two.write_bytes(os.urandom(2 * MiB))
    key = str(files.key)

    refused = transfer.potluck("cp", "-i", key, str(twenty), f"{alloc_id}:{WORK}/", env=env)

    assert refused.returncode == 1, refused.stderr + files.pool.logs()
    said = re.search(r"needs (\d+) bytes of disk .* has (\d+) left", refused.stderr)
    assert said is not None, refused.stderr
    assert int(said[2]) < 12 * MiB, refused.stderr
    await still_whole(files, alloc_id, earlier)
    fine = transfer.potluck("cp", "-i", key, str(two), f"{alloc_id}:{WORK}/", env=env)
    assert fine.returncode == 0, fine.stderr
    assert (await files.ssh(alloc_id, f"sha256sum < {WORK}/two.bin")).stdout.split()[0] == transfer.sha256(
        two
    )


def _sftp_packet(kind: int, *fields: bytes) -> bytes:
    body = bytes([kind]) + b"".join(fields)
    return struct.pack(">I", len(body)) + body


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


async def _read_packet(reader: "asyncssh.SSHReader[bytes]") -> bytes:
    async with asyncio.timeout(30):
        (length,) = struct.unpack(">I", await reader.readexactly(4))
        return await reader.readexactly(length)


@pytest.mark.slow
async def test_a_hostile_sftp_client_of_the_images_sftp_server_is_answered_and_hostd_goes_on(
    files: Gatewayed, default_image: str, tmp_path: Path
) -> None:
    """What is tried: a hand-rolled SFTP client (asyncssh's session, raw bytes) on the default
    image's own sftp-server: it writes to a handle no open gave it, asks the server to copy
    data itself (copy-data, which would write without the bytes passing hostd), then announces
    a packet of 4 GiB. What must hold: the server's VERSION, as the client gets it, offers no
    copy-data; the write is answered FAILURE ("no such handle") and the copy OP_UNSUPPORTED,
    each by hostd; the huge packet ends the session, hostd saying why on its stderr, without
    hostd buffering it; then hostd serves the allocation on: an sftp put lands whole."""
    alloc_id = await transfer.interactive(files, default_image, disk="64M")

    async with asyncssh.connect(
        "127.0.0.1",
        files.ssh_port,
        username=alloc_id,
        client_keys=[str(files.key)],
        known_hosts=None,
        agent_path=None,
        config=None,
    ) as conn:
        writer, reader, errors = await conn.open_session(subsystem="sftp", encoding=None)
        writer.write(_sftp_packet(1, struct.pack(">I", 3)))
        version = await _read_packet(reader)
        unknown_write = _sftp_packet(
            6, struct.pack(">I", 7), _string(b"\0\0\0\x63"), struct.pack(">Q", 0), _string(b"x" * 1000)
        )
        writer.write(unknown_write)
        refused_write = await _read_packet(reader)
        copy = _sftp_packet(
            200,
            struct.pack(">I", 8),
            _string(b"copy-data"),
            _string(b"h1"),
            struct.pack(">QQ", 0, 0),
            _string(b"h2"),
            struct.pack(">Q", 0),
        )
        writer.write(copy)
        refused_copy = await _read_packet(reader)
        writer.write(struct.pack(">I", 0xFFFFFFF0) + b"\x03" + b"\0" * 4096)
        async with asyncio.timeout(30):
            rest = await reader.read()
            said = (await errors.read()).decode()

    assert version[0] == 2, version
    assert b"copy-data" not in version, version
    assert b"posix-rename@openssh.com" in version, version
    kind, request_id, code = struct.unpack_from(">BII", refused_write)
    assert (kind, request_id, code) == (101, 7, 4), refused_write
    assert b"no such handle" in refused_write, refused_write
    kind, request_id, code = struct.unpack_from(">BII", refused_copy)
    assert (kind, request_id, code) == (101, 8, 8), refused_copy
    assert b"copy-data is not offered here" in refused_copy, refused_copy
    assert rest == b"", rest
    assert f"a packet of {0xFFFFFFF0} bytes, more than" in said, said
    local = tmp_path / "after.bin"
    local.write_bytes(os.urandom(3 * MiB))
    put = await transfer.sftp(files, alloc_id, f"put {local} /root/after.bin\n")
    assert put.returncode == 0, put.stderr
    landed = await files.ssh(alloc_id, "sha256sum < /root/after.bin")
    assert landed.stdout.split()[0] == transfer.sha256(local)


@pytest.mark.slow
async def test_rsync_compression_is_refused_and_an_update_of_a_file_lands_whole(
    files: Gatewayed, default_image: str, tmp_path: Path
) -> None:
    """What is tried: `rsync -z` of a file into the default image (compressed bytes do not bound
    what the receiving rsync writes; before the fix it ran), then plain rsync of a 3 MiB file,
    then of a changed copy over it (hostd runs the receiver with --whole-file, so the file
    already there is no basis that a few bytes rebuild). What must hold: `rsync -z` fails
    saying to run it without -z, and writes nothing; each plain upload lands with the local
    file's checksum."""
    alloc_id = await transfer.interactive(files, default_image, disk="64M")
    local = tmp_path / "data.bin"
    local.write_bytes(os.urandom(3 * MiB))
    made = await files.ssh(alloc_id, "mkdir /srv/up")
    assert made.returncode == 0, made.stderr
    target = f"{alloc_id}@127.0.0.1:/srv/up/data.bin"

    compressed = await transfer.rsync(files, "-z", str(local), target)

    assert compressed.returncode != 0, compressed.stderr
    assert "run rsync without -z" in compressed.stderr, compressed.stderr
    assert (await files.ssh(alloc_id, "ls -A /srv/up")).stdout.split() == [], "rsync -z wrote"
    first = await transfer.rsync(files, str(local), target)
    assert first.returncode == 0, first.stderr
    changed = bytearray(local.read_bytes())
    changed[MiB : MiB + 16] = os.urandom(16)
    local.write_bytes(bytes(changed))
    second = await transfer.rsync(files, str(local), target)
    assert second.returncode == 0, second.stderr
    landed = await files.ssh(alloc_id, "sha256sum < /srv/up/data.bin")
    assert landed.stdout.split()[0] == transfer.sha256(local)


@pytest.mark.slow
@pytest.mark.parametrize("tool", ["scp", "sftp", "scp -O"])
async def test_sending_a_file_again_over_itself_fits_where_it_fits_once(
    files: Gatewayed, default_image: str, tmp_path: Path, tool: str
) -> None:
    """Tried: into the default image (its own sftp-server, hostd filtering its stream; its own
    scp for `scp -O`, hostd reading its control lines) with a disk bound of 64 MiB, a 40 MiB
    file sent, then sent again to the same name: by `scp` twice (OpenSSH's scp writes over the
    file without emptying it), by `sftp` with two `put`s in one session (it empties the file at
    the open), by `scp -O` twice (the sink writes over the file in place). The layer holds the
    file once, but before the fix its bytes were counted twice: the second `scp` was refused
    ("needs 41943040 bytes more, 24088392 are left"), and so were the second `put` and the
    second `scp -O`. What must hold: every transfer exits 0,
    the file in the container is the one sent, and afterwards (longer than hostd's disk check
    interval) the allocation still runs."""
    alloc_id = await transfer.interactive(files, default_image, disk="64M")
    local = forty(tmp_path)
    target = f"{WORK}/up.bin"
    made = await files.ssh(alloc_id, f"mkdir -p {WORK}")
    assert made.returncode == 0, made.stderr

    if tool.startswith("scp"):
        legacy = tool == "scp -O"
        sent = [
            await transfer.scp(files, str(local), f"{alloc_id}@127.0.0.1:{target}", legacy=legacy)
            for _ in range(2)
        ]
    else:
        sent = [await transfer.sftp(files, alloc_id, f"put {local} {target}\nput {local} {target}\n")]

    for done in sent:
        assert done.returncode == 0, done.stderr + files.pool.logs()
    await asyncio.sleep(GUARD_WAIT_S)
    state = await allocation(files.pool.store, alloc_id)
    assert state is not None
    assert state.status == "running", files.pool.logs()
    held = await files.ssh(alloc_id, f"sha256sum {target}")
    assert held.stdout.split()[0] == transfer.sha256(local), held.stdout


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ssh cat", "rsync --rsync-path"])
async def test_a_command_writing_past_the_disk_bound_is_stopped_by_the_disk_guard_saying_why(
    files: Gatewayed, default_image: str, tmp_path: Path, how: str
) -> None:
    """Tried: 100 MiB sent into an allocation whose disk bound is 64 MiB by commands hostd does
    not watch as transfers: `ssh ID@gateway 'cat > FILE' < LOCAL`, and rsync with a
    `--rsync-path` of the user's own (`cd / && rsync`: what runs is a shell command, not
    `rsync --server`, so its input is not counted). What bounds them is hostd's disk guard,
    which measures at intervals: a command may finish writing before it is measured (seen with
    the rsync), so the guard is the backstop, not a clean failure. What must hold: afterwards
    (within many of the guard's measures) the allocation is failed for `disk_limit_exceeded`,
    its detail saying what it wrote against its bound of 64 MiB; a command cut off by it said
    on stderr that the allocation is now failed; a later session says why nothing runs
    there."""
    alloc_id = await transfer.interactive(files, default_image, disk="64M")
    local = tmp_path / "hundred.bin"
    local.write_bytes(os.urandom(100 * MiB))

    if how == "ssh cat":
        argv = files.ssh_argv(alloc_id, "cat > /root/hundred.bin")
        with local.open("rb") as stdin:
            done = await asyncio.to_thread(
                subprocess.run, argv, stdin=stdin, capture_output=True, text=True,
                env=files.ssh_env(), timeout=120, check=False,
            )  # fmt: skip
    else:
        done = await transfer.rsync(
            files, "--rsync-path=cd / && rsync", str(local), f"{alloc_id}@127.0.0.1:/root/hundred.bin"
        )

    if done.returncode != 0:
        assert f"allocation {alloc_id} is now failed" in done.stderr, done.stderr
    # Until the guard's measure fails it (no fixed wait: its end is what the test looks for).
    await wait_for_status(files.pool, alloc_id, "failed", timeout=GUARD_FAILS_WITHIN_S)
    state = await allocation(files.pool.store, alloc_id)
    assert state is not None
    assert (state.status, state.reason) == ("failed", "disk_limit_exceeded"), files.pool.logs()
    assert state.detail is not None
    assert f"more than its disk bound of {64 * MiB}" in state.detail, state.detail
    later = await files.ssh(alloc_id, "true")
    assert later.returncode != 0
    assert "failed (disk_limit_exceeded)" in later.stderr, later.stderr
