"""hostd's own SFTP server (images without an sftp-server) against a client that asks for too
much: many open files, huge reads, huge directories. What one session may make hostd hold
must stay bounded (helper_sftp.py), and the session must stay usable.

The client is asyncssh's (OpenSSH's `sftp` cannot be made to hold 100 files open or to ask for
16 MB in one read), through the real gateway to the real hostd and Docker engine; hostd's
memory and file descriptors are read from /proc.
"""

import asyncio
import hashlib
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import asyncssh
import pytest

from potluck.hostd.container_config import writable_bytes
from potluck.localstack.test_image import DEFAULT_TAG
from tests.e2e import module_files as module_files_fixtures
from tests.e2e import test_file_transfer as transfer
from tests.e2e.conftest import Gatewayed
from tests.fixtures import ssh as ssh_fixtures
from tests.fixtures.ssh import SshEnv

MiB = 1 << 20
#: Entries of the huge directory. Each costs hostd a stat exec in the container (6 ms in CI,
#: far more on a loaded machine): the 12,000 this was first took 60-130 s to list. With 4,000
#: the first READDIR's 128 names are still a thirtieth of the listing, and the listing's second
#: half (HALF on) is seconds of stat execs away when the first names are answered.
HUGE = 4000
HALF = HUGE // 2
ssh_env = ssh_fixtures.ssh_env
interactive = transfer.interactive


# One pool, gateway and hostd for the module's tests, each test's allocations gone after it.
module_files = module_files_fixtures.module_files
files = module_files_fixtures.files


@asynccontextmanager
async def sftp_client(g: Gatewayed, alloc_id: str) -> AsyncIterator[asyncssh.SFTPClient]:
    """asyncssh's SFTP client on a session through the gateway; the connection is dropped after."""
    conn = await asyncssh.connect(
        "127.0.0.1", g.ssh_port, username=alloc_id, client_keys=[str(g.key)], known_hosts=None
    )
    try:
        yield await conn.start_sftp_client()
    finally:
        conn.abort()


def hostd_pid(g: Gatewayed) -> int:
    assert g.host.process is not None
    assert g.host.process.pid is not None
    return int(g.host.process.pid)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.slow
async def test_many_open_files_hold_a_bounded_part_of_hostd(files: Gatewayed) -> None:
    """What is tried: in a busybox allocation, a 20 MB file; one SFTP session opens it 100
    times and reads a byte from each handle (before the fix each kept a `cat` streaming into a
    4 MB buffer in hostd: 200 handles took hostd past 890 MB and 230 descriptors). What must
    hold: the open past 64 is refused saying "too many open"; hostd's memory grows by less than
    64 MB and its descriptors by fewer than 20 while they are open; every handle still reads its
    right byte afterwards (streams ended to make room start again where they were); after
    closing one, another open works."""
    alloc_id = await interactive(files, DEFAULT_TAG)
    made = await files.ssh(alloc_id, "dd if=/dev/urandom of=/root/big bs=1M count=20 2>/dev/null && sync")
    assert made.returncode == 0, made.stderr
    pid = hostd_pid(files)
    async with sftp_client(files, alloc_id) as sftp:
        expected = await (await sftp.open("/root/big", "rb")).read(64 * 1024, 0)
        rss_before, fds_before = rss_kib(pid), fds(pid)
        handles = []
        refused: asyncssh.SFTPError | None = None
        for i in range(100):
            try:
                handle = await sftp.open("/root/big", "rb")
            except asyncssh.SFTPError as exc:
                refused = exc
                break
            assert await handle.read(1, i) == expected[i : i + 1]
            handles.append(handle)
        grown_kib, more_fds = rss_kib(pid) - rss_before, fds(pid) - fds_before

        assert refused is not None, f"{len(handles)} files opened with no refusal"
        assert "too many open" in str(refused.reason)
        assert 60 <= len(handles) <= 64
        assert grown_kib < 64 * 1024, f"hostd grew by {grown_kib} KiB"
        assert more_fds < 20, f"hostd holds {more_fds} more descriptors"
        for i, handle in enumerate(handles):
            assert await handle.read(2, 1000 + i) == expected[1000 + i : 1002 + i], i
        await handles[0].close()
        again = await sftp.open("/root/big", "rb")
        assert await again.read(3, 5) == expected[5:8]


@pytest.mark.slow
async def test_a_read_asking_for_more_than_hostd_buffers_returns_what_it_may(
    files: Gatewayed, tmp_path: Path
) -> None:
    """What is tried: one SFTP read of 16 MB at once from a 20 MB file (before the fix the
    session hung for good: hostd waited for more than it lets the container send). What must
    hold: the read answers within 30 s with at most 4 MB, the file's first bytes; a whole
    download of the file by asyncssh's own reads (short reads taken in their stride) has the
    same sha256 as the container's file."""
    alloc_id = await interactive(files, DEFAULT_TAG)
    made = await files.ssh(
        alloc_id, "dd if=/dev/urandom of=/root/big bs=1M count=20 2>/dev/null && sha256sum /root/big"
    )
    assert made.returncode == 0, made.stderr
    want = made.stdout.split()[0]
    async with sftp_client(files, alloc_id) as sftp:
        handle = await sftp.open("/root/big", "rb")
        assert handle._handle is not None
        async with asyncio.timeout(30):
            # One request of 16 MB, as a client may send (the file object would split it).
            data = await sftp._handler.read(handle._handle, 0, 16 * MiB)
        assert 0 < len(data) <= 4 * MiB
        await sftp.get("/root/big", str(tmp_path / "big"))
    assert hashlib.sha256((tmp_path / "big").read_bytes()).hexdigest() == want


@pytest.mark.slow
async def test_a_huge_directory_is_listed_as_it_is_read(files: Gatewayed) -> None:
    """What is tried: a directory of 4,000 files with 200-character names (a listing of about
    1 MB in 32 READDIRs, its entries stat'ed one by one) read through one SFTP session with
    OPENDIR and READDIR; once the first READDIR has answered, the second half of the files
    (2001-4000, last in the listing's order) is removed from another session, then the rest is
    read (before the fix the whole listing was collected in hostd before the first READDIR
    answered).
    What must hold: the first READDIR answers with at most 128 names; every file of the first
    half comes back, each once, and none of the second half: the listing was still being read
    in the container when its first names were answered (a listing collected before the first
    answer names all 4,000). Not timed: stat'ing the 1,870-odd names between takes far longer
    than one `rm` (seconds against a fraction of one)."""
    alloc_id = await interactive(files, DEFAULT_TAG, disk="1G")
    pad = "n" * (200 - len(str(HUGE)))
    made = await files.ssh(
        alloc_id,
        f"mkdir /root/huge && cd /root/huge && seq -w 1 {HUGE} | sed 's/^/{pad}/' | xargs touch "
        "&& ls | wc -l",
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == str(HUGE)
    async with sftp_client(files, alloc_id) as sftp:
        # The handler's requests, one READDIR at a time (SFTPClient.listdir reads them all).
        handler = sftp._handler
        handle = await handler.opendir(b"/root/huge")
        names, _ = await handler.readdir(handle)
        removed = await files.ssh(
            alloc_id,
            f"cd /root/huge && seq -w {HALF + 1} {HUGE} | sed 's/^/{pad}/' | xargs rm -f && ls | wc -l",
            timeout=120,
        )
        assert removed.returncode == 0, removed.stderr
        assert removed.stdout.strip() == str(HALF)
        seen = [n.filename for n in names]
        while True:
            try:
                more, _ = await handler.readdir(handle)
            except asyncssh.SFTPEOFError:
                break
            seen.extend(n.filename for n in more)
        await handler.close(handle)
    assert 0 < len(names) <= 128
    listed = sorted(n for n in seen if n not in (b".", b".."))
    left = [f"{pad}{i:0{len(str(HUGE))}d}".encode() for i in range(1, HALF + 1)]
    assert listed == left, (
        f"{len(listed)} names listed of the {HALF} left; of those removed: "
        f"{[n for n in listed if n not in left][:2]!r}"
    )


@pytest.mark.slow
async def test_a_write_while_hostd_holds_no_spec_says_why_and_reading_works(ssh_env: SshEnv) -> None:
    """What is tried: hostd's SFTP into a busybox allocation whose spec this hostd does not hold
    (as a hostd that started and has not yet heard from the allocator: ssh_env's link is given
    no specs), a file opened for writing and written. What must hold: the write is refused
    saying hostd does not know the disk bound yet, never that the bound is reached (before the
    fix: "the allocation's disk bound is reached"); no file is left (before a later fix, the
    open made an empty one); reading a file of the container still works in that session."""
    host = ssh_env.hosts[0]
    await ssh_env.place_running(host, "nospec1")
    await ssh_env.wait_reachable("nospec1")
    conn = await asyncssh.connect(
        "127.0.0.1",
        ssh_env.port,
        username="nospec1",
        client_keys=[str(ssh_env.key("alice"))],
        known_hosts=None,
    )
    try:
        sftp = await conn.start_sftp_client()
        with pytest.raises(asyncssh.SFTPError) as refused:
            async with sftp.open("/tmp/new.bin", "wb") as f:
                await f.write(b"x" * 1000)
        hostname = await (await sftp.open("/etc/hostname", "r")).read()
    finally:
        conn.abort()
    assert "does not know its disk bound" in str(refused.value.reason)
    assert "reached" not in str(refused.value.reason)
    inside = await ssh_env.in_container(
        host, "nospec1", "cat /etc/hostname; [ -e /tmp/new.bin ] && echo left || echo none"
    )
    assert inside.splitlines() == [hostname.strip(), "none"]


@pytest.mark.slow
@pytest.mark.parametrize("image", ["busybox", "default"])
async def test_two_sessions_writing_at_once_share_the_disk_bound(
    files: Gatewayed, default_image: str, tmp_path: Path, image: str
) -> None:
    """What is tried: hostd's SFTP (busybox image), and the default image's own sftp-server
    that hostd filters, with a disk bound of 64 MB: two sessions at once each put 40 MB (before
    the fix each was allowed all that was left, so together they wrote 80 MB and hostd's disk
    guard stopped the allocation; into the default image nothing was counted at all). What must
    hold: at least one put fails; afterwards (longer than hostd's disk check interval) the
    allocation still runs and what the two wrote together is below the bound; a third session
    then writes a small file fine."""
    alloc_id = await interactive(files, default_image if image == "default" else DEFAULT_TAG, disk="64M")
    local = tmp_path / "forty.bin"
    local.write_bytes(os.urandom(40 * MiB))

    async def put(name: str) -> BaseException | None:
        async with sftp_client(files, alloc_id) as sftp:
            try:
                await sftp.put(str(local), f"/root/{name}")
            except asyncssh.SFTPError as exc:
                return exc
        return None

    outcomes = await asyncio.gather(put("a.bin"), put("b.bin"))
    await asyncio.sleep(3)

    assert any(isinstance(o, asyncssh.SFTPError) for o in outcomes), outcomes
    await transfer.running_within(files, alloc_id, 64 * 1024)
    async with sftp_client(files, alloc_id) as sftp, sftp.open("/root/small.txt", "w") as f:
        await f.write("small\n")
    assert (await files.ssh(alloc_id, "cat /root/small.txt")).stdout == "small\n"


@pytest.mark.slow
@pytest.mark.parametrize("image", ["busybox", "default"])
async def test_growing_a_file_by_truncate_counts_against_the_disk_bound(
    files: Gatewayed, default_image: str, image: str
) -> None:
    """What is tried: hostd's SFTP (busybox image), and the default image's own sftp-server
    that hostd filters, with a disk bound of 64 MB: a file made, then grown to
    90 MB by SETSTAT size (a hole: no block taken, but its size counts where hostd's disk guard
    measures) and written with 90 MB of data from its start (before the fix neither was
    counted: the guard saw 94 MB and stopped the allocation). What must hold: the growing is
    refused as past the bound; a growth that fits (10 MB) is allowed; afterwards (longer than
    hostd's disk check interval) the allocation still runs and the container's files take less
    than the bound."""
    alloc_id = await interactive(files, default_image if image == "default" else DEFAULT_TAG, disk="64M")
    chunk = os.urandom(MiB)
    async with sftp_client(files, alloc_id) as sftp:
        await (await sftp.open("/root/holes.bin", "wb")).close()

        async def grow_and_fill() -> None:
            await sftp.setstat("/root/holes.bin", asyncssh.SFTPAttrs(size=90 * MiB))
            handle = await sftp.open("/root/holes.bin", "r+b")
            for i in range(90):
                await handle.write(chunk, i * MiB)

        with pytest.raises(asyncssh.SFTPError) as refused:
            await grow_and_fill()
        await sftp.setstat("/root/holes.bin", asyncssh.SFTPAttrs(size=10 * MiB))
    await asyncio.sleep(3)

    assert "disk bound" in str(refused.value.reason)
    assert await transfer.running_within(files, alloc_id, 64 * 1024, "stat -c %s /root/holes.bin") == [
        str(10 * MiB)
    ]


@pytest.mark.slow
async def test_writing_into_the_images_own_files_counts_their_copy_into_the_layer(
    files: Gatewayed, default_image: str
) -> None:
    """Tried: the default image's own sftp-server, hostd filtering its stream, with a disk bound
    of 24 MiB: one byte written at the start of each of the image's largest files (over 40 MiB
    together), each opened for writing without emptying it. The engine copies each whole into
    the container's layer at the open (before the fix hostd counted the one byte: the layer
    grew by 32 MB and hostd's disk guard stopped the allocation). What must hold: the opens
    past what is left are refused saying the disk bound is reached and how much the copy
    needs; afterwards (longer than hostd's disk check interval) the allocation still runs, and
    a file refused was not copied up (the image's bytes are still there)."""
    alloc_id = await interactive(files, default_image, disk="24M")
    listed = await files.ssh(
        alloc_id, "find /usr -xdev -type f -size +1M -links 1 -exec stat -c '%s %n' {} + | sort -rn"
    )
    assert listed.returncode == 0, listed.stderr
    paths, total = [], 0
    for line in listed.stdout.splitlines():
        size, name = line.split(" ", 1)
        paths.append(name)
        total += int(size)
        if total > 40 * MiB:
            break
    assert total > 40 * MiB, listed.stdout
    refused: dict[str, str] = {}
    async with sftp_client(files, alloc_id) as sftp:
        for path in paths:
            try:
                async with sftp.open(path, "r+b") as f:
                    await f.write(b"x", 0)
            except asyncssh.SFTPError as exc:
                refused[path] = str(exc.reason)
    await asyncio.sleep(3)

    assert refused, "every copy was let through"
    for reason in refused.values():
        assert "disk bound is reached: this needs" in reason, refused
    await transfer.running_within(files, alloc_id, 24 * 1024)
    last = next(iter(reversed(refused)))
    head = await files.ssh(alloc_id, f"head -c 1 {last} | od -An -c")
    assert head.stdout.strip() != "x", head.stdout


@pytest.mark.slow
async def test_hostds_own_sftp_counts_the_copy_of_an_images_file_written_into(files: Gatewayed) -> None:
    """Tried: hostd's own SFTP server (the busybox image, which has no sftp-server), a disk
    of 16 MiB (its files' bound: all but its log's part) of which about half of /bin/busybox's
    size is left: /bin/busybox (the
    image's, about 2 MB) opened for writing without emptying it and one byte written into it
    (the byte it held: the engine copies the whole file into the container's layer at that
    write; before the fix nothing was counted, the write was let through and the layer grew
    by the whole file past what was left); then one byte written the same way into the 14 MB
    file the container made itself. What must hold: the write into the image's file is
    refused saying the disk bound is reached and how much it needs (the file's size); the
    write into the container's own file (already in its layer: nothing copied) is let
    through; the allocation still runs."""
    alloc_id = await interactive(files, DEFAULT_TAG, disk="16M")
    size = await files.ssh(alloc_id, "stat -L -c %s /bin/busybox")
    assert size.returncode == 0, size.stderr
    busybox = int(size.stdout)
    fill = writable_bytes(16 * MiB) - MiB - busybox // 2 - 64 * 1024
    made = await files.ssh(alloc_id, f"head -c {fill} /dev/zero > /root/fill && sync")
    assert made.returncode == 0, made.stderr

    async with sftp_client(files, alloc_id) as sftp:
        async with sftp.open("/bin/busybox", "r+b") as f:
            last = await f.read(1, busybox - 1)
            with pytest.raises(asyncssh.SFTPError) as refused:
                await f.write(last, busybox - 1)
        async with sftp.open("/root/fill", "r+b") as f:
            await f.write(b"\0", 0)
    await asyncio.sleep(3)

    assert "disk bound is reached" in str(refused.value.reason), refused.value.reason
    assert f"needs {busybox} bytes" in str(refused.value.reason), refused.value.reason
    await transfer.running_within(files, alloc_id, 16 * 1024)


@pytest.mark.slow
@pytest.mark.parametrize("image", ["busybox", "default"])
async def test_an_upload_refused_while_hostd_holds_no_spec_leaves_no_file_behind(
    ssh_env: SshEnv, default_image: str, tmp_path: Path, image: str
) -> None:
    """Tried: OpenSSH's scp (its SFTP mode), sftp's put and, into the default image, `scp -O`,
    each of a new file and over a file the container held, into an allocation whose spec this
    hostd does not hold (ssh_env's link is given none, as a hostd that started a moment ago and
    has not heard from the allocator): the busybox image is served by hostd's own SFTP server,
    the default image by its own sftp-server behind hostd's filter and by its scp behind hostd's
    sink. Must hold: each upload fails; afterwards no new file is in the container (before the
    fix, hostd's own SFTP server made, or emptied, the file at the open, then refused the
    write: an empty file was left), and each file that was there holds what it held."""
    host = ssh_env.hosts[0]
    alloc_id = f"nospecup{image[0]}"
    await ssh_env.place_running(host, alloc_id, image=default_image if image == "default" else DEFAULT_TAG)
    await ssh_env.wait_reachable(alloc_id)
    kept = ["kept-scp.txt", "kept-sftp.txt"] + (["kept-scp-o.txt"] if image == "default" else [])
    made = " && ".join(f"printf 'before\\n' > /srv/up/{name}" for name in kept)
    await ssh_env.in_container(host, alloc_id, f"mkdir -p /srv/up && {made}")
    local = tmp_path / "up.bin"
    local.write_bytes(os.urandom(4096))
    target = f"{alloc_id}@127.0.0.1:/srv/up"

    async def scp(name: str, *, legacy: bool = False) -> subprocess.CompletedProcess[str]:
        return await transfer.run(
            [
                "scp",
                *(["-O"] if legacy else []),
                *ssh_env.openssh_options(port_flag="-P"),
                str(local),
                f"{target}/{name}",
            ],
            timeout=120,
        )

    async def sftp_put(name: str) -> subprocess.CompletedProcess[str]:
        argv = ["sftp", *ssh_env.openssh_options(port_flag="-P"), "-b", "-", f"{alloc_id}@127.0.0.1"]
        env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
        return await asyncio.to_thread(
            subprocess.run,
            argv,
            input=f"put {local} /srv/up/{name}\n",
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    # At once: each refusal comes after hostd waited a while for the bound.
    uploads = {
        "scp, a new file": scp("new-scp.bin"),
        "scp, over a file": scp("kept-scp.txt"),
        "sftp put, a new file": sftp_put("new-sftp.bin"),
        "sftp put, over a file": sftp_put("kept-sftp.txt"),
    }
    if image == "default":
        uploads["scp -O, a new file"] = scp("new-scp-o.bin", legacy=True)
        uploads["scp -O, over a file"] = scp("kept-scp-o.txt", legacy=True)
    results = dict(zip(uploads, await asyncio.gather(*uploads.values()), strict=True))
    for what, done in results.items():
        assert done.returncode != 0, f"{what}: {done.stdout} {done.stderr}"
    left = await ssh_env.in_container(
        host, alloc_id, 'cd /srv/up && for f in *; do printf \'%s=\' "$f"; cat "$f"; done'
    )
    assert sorted(left.splitlines()) == sorted(f"{name}=before" for name in kept), (left, results)


@pytest.mark.slow
async def test_a_fifo_nobody_writes_to_holds_up_only_the_read_of_it(files: Gatewayed) -> None:
    """Tried: through hostd's own SFTP (busybox image), a read of a FIFO in the container that
    nothing writes to; meanwhile another session lists and reads; then a process in the
    container writes a line into the FIFO.
    Must hold: the read waits (hostd is not held up: the other session gets its answers), and
    then returns the line written."""
    alloc_id = await transfer.busybox_with(files, "mkfifo /root/fifo && echo other > /root/other")
    async with sftp_client(files, alloc_id) as client:
        fifo = await client.open("/root/fifo", "rb")
        reading = asyncio.ensure_future(fifo.read(100))
        async with sftp_client(files, alloc_id) as other:
            assert sorted(await other.listdir("/root")) == [".", "..", "fifo", "other"]
            async with other.open("/root/other", "rb") as f:
                assert cast(bytes, await f.read()) == b"other\n"
        assert not reading.done()
        wrote = await files.ssh(alloc_id, "echo through the fifo > /root/fifo")
        assert wrote.returncode == 0, wrote.stderr
        assert cast(bytes, await reading) == b"through the fifo\n"
