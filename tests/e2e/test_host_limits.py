"""Limits that hold: what a placed container tries, and what must stop it."""

import asyncio
import ctypes
import io
import itertools
import os
import re
import tarfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import docker
import pytest

from potluck.contracts.allocation_events import AllocationSpec
from potluck.hostd.container_config import (
    MEMLOCK,
    MSGQUEUE,
    NOFILE_HARD,
    NOFILE_SOFT,
    NPROC,
    OOM_SCORE_ADJ,
    SIGPENDING,
    create_kwargs,
)
from potluck.hostd.docker_driver import DockerDriver, LimitsNotApplied, create_container
from potluck.hostd.layer_walks import next_walk_in
from potluck.hostd.seccomp_profile import PROFILE as SECCOMP_PROFILE
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG, import_rootfs, rootfs_tarball
from potluck.readmodels.allocations import AllocationState
from tests.e2e.conftest import start_laptop, wait_for_status
from tests.e2e.syscall_probe import holder, probe, probe_i386
from tests.fixtures.docker import container_spec
from tests.fixtures.pool import EnrolledHost, Pool, allocation, place, spec
from tests.helpers import json_log, wait_until

VOLUME_IMAGE = "potluck-volume:1"
VOLUME_FILES_IMAGE = "potluck-volume-files:1"
HEALTHCHECK_IMAGE = "potluck-healthcheck:1"
WORKDIR_IMAGE = "potluck-workdir:1"


@asynccontextmanager
async def _running(
    pool: Pool, laptop: EnrolledHost, engine: DockerEngine, alloc_id: str, wanted: AllocationSpec
) -> AsyncIterator[tuple[DockerDriver, str]]:
    """Place `wanted` as `alloc_id` on the laptop, wait until it runs: a driver of its engine
    and the container's id."""
    await place(pool.store, laptop.host_id, alloc_id, wanted)
    await wait_for_status(pool, alloc_id, "running")
    driver = DockerDriver(engine.url)
    try:
        [container] = [c for c in driver.list_managed(laptop.host_id) if c.allocation_id == alloc_id]
        yield driver, container.container_id
    finally:
        driver.close()


async def _until(driver: DockerDriver, cid: str, test: list[str], what: str, timeout: float) -> None:
    """Wait until `test ...` succeeds in the container; fail saying `what` never happened."""
    deadline = time.monotonic() + timeout
    while driver.exec_run(cid, ["test", *test]).exit_code != 0:
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


async def test_a_memory_hog_is_oom_killed_and_reported(pool: Pool, laptop: EnrolledHost) -> None:
    """64 MB placed, 256 MB allocated: the kernel kills it and the log records an OOM exit."""
    hog = spec(memory=64 << 20, command=["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"])
    await place(pool.store, laptop.host_id, "hog", hog)
    await wait_for_status(pool, "hog", "exited")
    state = await allocation(pool.store, "hog")
    assert state is not None
    assert state.oom_killed is True
    assert state.exit_code == 137


async def test_a_fork_bomb_stops_at_the_pids_limit(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    """A fork bomb fills its pids limit and no more; the engine and new work still run.

    The shell forks its `sleep` and one subshell that runs the bomb, and then only waits (a
    builtin): once the bomb has filled the limit, a shell still needing a fork would fail and end
    the container, which is the limit working but leaves nothing to read. (The bomb run by the
    shell itself needed its second fork after the first had started bombing: on a loaded machine
    the limit was full by then and the container ended with 2.)"""
    bomb = spec(pids_limit=32, command=["sh", "-c", "sleep 3600 & (b() { b | b & }; b) & wait"])
    async with _running(pool, laptop, docker_engines[0], "bomb", bomb) as (driver, cid):
        cgroup = Path(f"/sys/fs/cgroup/pids/potluck/{cid}")  # the pool's own parent
        assert int((cgroup / "pids.max").read_text()) == 32
        # pids.events counts the forks the limit refused: the bomb reached the limit and was
        # stopped there, rather than the shell ending on its own.
        seen, refused = [], 0
        deadline = time.monotonic() + 15
        while refused == 0 and time.monotonic() < deadline:
            seen.append(int((cgroup / "pids.current").read_text()))
            refused = int((cgroup / "pids.events").read_text().split()[1])
            await asyncio.sleep(0.05)
        assert refused > 0, f"no fork was refused at the limit; processes seen: {seen}"
        assert max(seen) <= 32, seen
        assert driver.ping()
        await place(pool.store, laptop.host_id, "after-bomb", spec())
        await wait_for_status(pool, "after-bomb", "running")
        bombed = await allocation(pool.store, "bomb")
        assert bombed is not None
        assert bombed.status == "running"  # held at its limit, not ended


async def test_limits_are_in_the_containers_cgroup_and_inspect_shows_no_privileges(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    limited = spec(cpus=0.5, memory=96 << 20, pids_limit=100)
    async with _running(pool, laptop, docker_engines[0], "limited", limited) as (driver, cid):
        read = driver.exec_run(
            cid,
            [
                "cat",
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes",
                "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
                "/sys/fs/cgroup/cpu/cpu.cfs_period_us",
                "/sys/fs/cgroup/pids/pids.max",
            ],
        )
        memory, memsw, quota, period, pids = read.output.decode().split()
        assert int(memory) == 96 << 20
        assert memsw == memory or memsw == "9223372036854771712"  # memsw may be unaccounted on this kernel
        assert int(quota) / int(period) == 0.5
        assert int(pids) == 100
        inspect = driver.inspect(cid)
        host_config = inspect["HostConfig"]
        assert host_config["Privileged"] is False
        assert host_config["CapDrop"] == ["ALL"]
        assert "NET_RAW" not in (host_config["CapAdd"] or [])
        assert "SYS_ADMIN" not in (host_config["CapAdd"] or [])
        assert "no-new-privileges" in host_config["SecurityOpt"]
        assert host_config["NetworkMode"] == "none"
        assert not host_config["Binds"]
        # The mounts: the static busybox helper, read-only in a read-only directory (helper.py),
        # and, made without the engine's network code, hostd's /etc/hosts, read-only (no_network.py).
        assert inspect["Config"]["NetworkDisabled"] is True
        assert sorted((m["Destination"], m["RW"]) for m in inspect["Mounts"]) == [
            ("/.potluck", False),
            ("/.potluck/busybox", False),
            ("/etc/hosts", False),
        ]
        assert not host_config["Devices"]
        assert host_config["PidMode"] == ""
        assert host_config["IpcMode"] in ("private", "")
        assert host_config["Memory"] == host_config["MemorySwap"] == 96 << 20
        assert inspect["Config"]["Labels"]["potluck.allocation"] == "limited"


async def _stopped_at_its_disk_bound(
    pool: Pool, host_id: str, alloc_id: str, wanted: AllocationSpec
) -> AllocationState:
    """Place `wanted` on the host: the disk guard must stop it (failed, disk_limit_exceeded)."""
    await place(pool.store, host_id, alloc_id, wanted)
    await wait_for_status(pool, alloc_id, "failed", timeout=90)
    state = await allocation(pool.store, alloc_id)
    assert state is not None
    assert state.reason == "disk_limit_exceeded", state
    return state


async def test_writing_past_the_disk_bound_stops_the_container(pool: Pool, laptop: EnrolledHost) -> None:
    """No engine quota on this filesystem: hostd measures the writable layer and stops it."""
    writer = spec(disk=16 << 20, command=["sh", "-c", "dd if=/dev/zero of=/fill bs=1M count=48; sleep 3600"])
    await _stopped_at_its_disk_bound(pool, laptop.host_id, "writer", writer)


async def test_a_steady_writer_is_caught_past_its_bound_between_two_rounds_of_the_disk_check(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """Tried: disk checked every 6 s; a container writes 1 MiB every quarter second to 104 MiB
    against a 96 MiB bound, then deletes the file: it is past its bound for about 2 s, which
    rounds 6 s apart miss two times out of three. Must hold: the guard, having seen the
    container write toward its bound, measured it again sooner (disk_bound.next_measure_in)
    and stopped it with disk_limit_exceeded."""
    timing = {"heartbeat_interval_s": pool.liveness[0], "drain_grace_s": 2, "disk_check_interval_s": 6}
    host = await start_laptop(pool, docker_engines[0], "steady-writer-host", timing=timing)
    write = (
        "i=0; while [ $i -lt 104 ]; do dd if=/dev/zero bs=1M count=1 >> /fill 2>/dev/null; "
        "i=$((i+1)); sleep 0.25; done; rm /fill; sleep 3600"
    )
    await _stopped_at_its_disk_bound(
        pool, host.host_id, "steady", spec(disk=96 << 20, command=["sh", "-c", write])
    )


BURST_BOUND = 1 << 30
BURST_MIB = 6144
#: What a burst may write past its bound: about a second of writing (the guard reads the write
#: counters every SOONEST_MEASURE_S), measure and stop included, at the fastest a container
#: wrote here (into the page cache: 1.3 GB/s measured; the disk itself is far slower).
BURST_PAST = 2 << 30


async def test_a_burst_after_a_quiet_spell_is_stopped_within_about_a_second_of_writing_past_its_bound(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """Found: the guard measures a container again sooner only from the rate it saw between two
    measures; one that sat idle (a rate of 0) and then wrote in a burst was seen at its next
    regular round alone: with `--disk 1G` and the default 10 s, `dd` of 8 GB ended `wrote
    2135953571 bytes`, a gigabyte past the bound (on a fast disk, tens of them).
    What is tried: the disk checked every 60 s (no regular round comes during the burst, so
    what stops it is the guard seeing it sooner); a container with a 1 GiB bound sleeps 5 s
    after its start (measured then, idle), then writes 6 GiB with `dd` as fast as it can.
    What must hold: it fails with disk_limit_exceeded, its detail saying it wrote less than
    its bound and BURST_PAST. Measured here: before the write counters (write_activity.py)
    the whole 6 GiB was written (6442455203 bytes) before the guard looked; with them, 1.14
    to 1.48 GB over four runs."""
    timing = {"heartbeat_interval_s": pool.liveness[0], "drain_grace_s": 2, "disk_check_interval_s": 60}
    donate = {"cpus": 2, "memory": "2G", "disk": "8G"}
    host = await start_laptop(pool, docker_engines[0], "burst-host", timing=timing, donate=donate)
    burst = f"sleep 5; dd if=/dev/zero of=/burst bs=1M count={BURST_MIB}; sleep 3600"
    state = await _stopped_at_its_disk_bound(
        pool, host.host_id, "burst", spec(disk=BURST_BOUND, command=["sh", "-c", burst])
    )
    assert state.detail is not None
    wrote = re.match(r"wrote (\d+) bytes", state.detail)
    assert wrote is not None, state.detail
    assert int(wrote[1]) < BURST_BOUND + BURST_PAST, state.detail


async def test_files_deleted_and_held_open_count_against_the_disk_bound(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """Found: the disk guard walks the container's layer, and a file removed while a process
    holds it open is in no directory, its blocks still taken on the member's disk: a container
    with a 64 MiB bound wrote five files of 40 MiB, removing each after writing it, its shell
    holding them all open, and ran on at 0 bytes, holding 200 MiB (nothing kept it from filling
    the disk so). Tried: the same, the disk checked every 2 s. Must hold: the allocation fails
    with disk_limit_exceeded (the blocks of deleted files its processes hold count)."""
    timing = {"heartbeat_interval_s": pool.liveness[0], "disk_check_interval_s": 2}
    host = await start_laptop(pool, docker_engines[0], "held-files-host", timing=timing)
    hold = (
        'for n in 3 4 5 6 7; do eval "exec $n>/big$n"; '
        "dd if=/dev/zero bs=1M count=40 of=/big$n conv=notrunc 2>/dev/null; rm /big$n; done; sleep 3600"
    )
    await _stopped_at_its_disk_bound(
        pool, host.host_id, "held", spec(disk=64 << 20, command=["sh", "-c", hold])
    )


# The C library's mmap: Python's mmap object keeps a descriptor of its own.
MAP_AND_REMOVE = """
import ctypes, mmap, os, time
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
c = ctypes
libc.mmap.argtypes = [c.c_void_p, c.c_size_t, c.c_int, c.c_int, c.c_int, c.c_long]
for n in range(5):
    fd = os.open(f"/big{n}", os.O_RDWR | os.O_CREAT)
    os.write(fd, bytes(40 << 20))
    assert libc.mmap(None, 40 << 20, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0) not in (None, 2**64 - 1)
    os.close(fd)
    os.unlink(f"/big{n}")
print("held", flush=True)
time.sleep(3600)
"""


async def test_files_deleted_and_held_by_a_mapping_alone_count_against_the_disk_bound(
    pool: Pool, docker_engines: list[DockerEngine], default_image: str
) -> None:
    """Tried: a container with a 64 MiB bound writes five files of 40 MiB, maps each, closes
    it and removes it: no descriptor and no directory holds them, the process's mappings do,
    and their blocks stay taken on the member's disk. Must hold: the allocation fails with
    disk_limit_exceeded (the blocks of deleted files its processes map count)."""
    timing = {"heartbeat_interval_s": pool.liveness[0], "disk_check_interval_s": 2}
    host = await start_laptop(
        pool, docker_engines[0], "mapped-files-host", timing=timing, allowed_images=[default_image]
    )
    wanted = spec(
        image=default_image, disk=64 << 20, memory=256 << 20, command=["python3", "-c", MAP_AND_REMOVE]
    )
    await _stopped_at_its_disk_bound(pool, host.host_id, "mapped", wanted)


async def test_filling_the_members_disk_with_empty_directories_and_files_stops_the_container(
    pool: Pool, laptop: EnrolledHost
) -> None:
    """Tried: a container with a 16 MiB disk bound makes 6000 empty directories and 6000 empty
    files in its layer. The engine's SizeRw counts neither directories nor empty files (0 bytes
    for all of them), but on the member's disk each is an inode, and each directory a block of
    its own: 6000 directories are 24 MiB of ext4, a few million exhaust its inodes. Must hold:
    each entry of the layer counts against the bound as a block, so the allocation fails with
    disk_limit_exceeded, its detail saying how many files and directories it made."""
    fill = "mkdir /d /f && cd /d && mkdir $(seq 6000) && cd /f && touch $(seq 6000) && sleep 3600"
    state = await _stopped_at_its_disk_bound(
        pool, laptop.host_id, "inodes", spec(disk=16 << 20, command=["sh", "-c", fill])
    )
    assert state.detail is not None
    assert "more than its disk bound of 16777216" in state.detail, state.detail
    assert "files and directories" in state.detail, state.detail


def _layer_counts(log_path: Path, alloc_id: str) -> list[tuple[datetime, int, float]]:
    """hostd's counts of the allocation's layer entries, from its log: when each ended, how
    many entries it found, how long it took."""
    return [
        (datetime.fromisoformat(entry["timestamp"]), int(entry["entries"]), float(entry["seconds"]))
        for entry in json_log(log_path, "hostd.layer_counted")
        if entry.get("alloc_id") == alloc_id
    ]


async def _counted(
    log_path: Path, alloc_id: str, found: Callable[[list[tuple[datetime, int, float]]], bool], what: str
) -> list[tuple[datetime, int, float]]:
    """hostd's counts of the allocation's layer entries (`_layer_counts`), once `found` holds of
    them; fails saying `what` was never counted."""
    await wait_until(
        lambda: found(_layer_counts(log_path, alloc_id)), 90, f"a count of the layer {what} in {log_path}"
    )
    return _layer_counts(log_path, alloc_id)


@pytest.mark.slow
async def test_the_engines_costly_count_of_a_layer_is_spaced_out_and_nothing_is_stopped_on_an_old_one(
    pool: Pool, docker_engines: list[DockerEngine], default_image: str
) -> None:
    """Found: the engine counts a container's layer entries (what the disk guard holds empty
    files and directories to) by walking the container's whole filesystem beside the image's,
    about 0.7 s of its CPU for the default image, and the guard had it done at every round:
    in a pool checking every 0.5 s the engine walked without a pause, a core of the member's
    machine gone for as long as the allocation lived (7 % of one at the default 10 s).
    Tried, on a hostd checking every 0.5 s, a default-image allocation with a 64 MiB bound:
    (1) 6000 empty directories made after its first count; (2) once a count saw them, they
    are removed and a 44 MiB file written (with the 6000 directories still counted, 24 MiB,
    64 MiB would be passed); (3) 30 MiB more, past the bound by its bytes alone. Must hold: each count
    stands for at least twenty times its cost (layer_walks.py: 5 % of the time) or the
    regular interval, (1) is seen by a later count all the same, (2) leaves the allocation
    running (a stop is decided on a count of now), (3) stops it with disk_limit_exceeded at
    a round that counted nothing (bytes are measured every round)."""
    engine = docker_engines[0]
    pool.log_level = "DEBUG"  # the counts are logged at debug
    timing = {"heartbeat_interval_s": pool.liveness[0], "disk_check_interval_s": 0.5}
    host = await start_laptop(pool, engine, "walks-host", timing=timing, allowed_images=[default_image])
    assert host.process is not None
    log_path = host.process.log_path
    wanted = spec(image=default_image, disk=64 << 20, memory=256 << 20)
    async with _running(pool, host, engine, "walked", wanted) as (driver, cid):
        await _counted(log_path, "walked", bool, "once it ran")
        made = driver.exec_run(cid, ["sh", "-c", "mkdir /d && cd /d && mkdir $(seq 6000)"])
        assert made.exit_code == 0, made.output
        counts = await _counted(
            log_path, "walked", lambda counts: any(c[1] >= 6000 for c in counts), "with the 6000 directories"
        )
        for (end, _, cost), (next_end, _, next_cost) in itertools.pairwise(counts):
            # From start to start: the log says when each count ended and how long it took.
            spacing = (next_end - end).total_seconds() - next_cost + cost
            assert spacing >= next_walk_in(cost, 0.5) - 0.05, counts

        seen = len(counts)
        refill = driver.exec_run(cid, ["sh", "-c", "rm -rf /d && dd if=/dev/zero of=/f bs=1M count=44"])
        assert refill.exit_code == 0, refill.output
        deadline = time.monotonic() + 30
        while (state := await allocation(pool.store, "walked")) is not None and state.status == "running":
            recounted = [c for c in _layer_counts(log_path, "walked")[seen:] if c[1] < 100]
            if recounted and (datetime.now(UTC) - recounted[0][0]).total_seconds() > 2:
                break  # counted anew, and four rounds since: nothing was stopped on the old count
            assert time.monotonic() < deadline, "the layer was not counted again once it emptied"
            await asyncio.sleep(0.2)
        assert state is not None
        assert state.status == "running", (state, pool.logs())

        seen = len(_layer_counts(log_path, "walked"))
        more = driver.exec_run(cid, ["sh", "-c", "dd if=/dev/zero of=/g bs=1M count=30"])
        # All of it written; the guard, checking every 0.5 s, may stop the container before the
        # exec has returned (its shell killed: 137), as a full run saw. The stop's reason is
        # what is checked below.
        assert b"30+0 records out" in more.output, more.output
        assert more.exit_code in (0, 137), more.output
        await wait_for_status(pool, "walked", "failed", timeout=30)
    state = await allocation(pool.store, "walked")
    assert state is not None
    assert state.reason == "disk_limit_exceeded", state
    # Stopped on its bytes: the only count since, if any, is the one its stop was decided on.
    assert len(_layer_counts(log_path, "walked")) <= seen + 1


async def test_a_container_cannot_allocate_disk_past_the_end_of_its_files(
    pool: Pool, docker_engines: list[DockerEngine], default_image: str
) -> None:
    """Found: the disk guard counts what the layer's files say they hold (the engine's SizeRw,
    their sizes), and fallocate's KEEP_SIZE allocates blocks past a file's end, its size still 0:
    a container with a 64 MiB bound took 200 MiB of the member's disk (`fallocate -n`) and ran
    on, measured at 0 bytes, through several rounds of the guard. Tried: in a placed container
    of that bound, util-linux's `fallocate -n` (KEEP_SIZE) and `fallocate -z -n` (ZERO_RANGE with
    it) of 200 MiB on an empty file; then, on another file, a plain fallocate of 1 MiB and a
    punched hole over it (PUNCH_HOLE | KEEP_SIZE). Must hold: the first two are refused
    (EPERM, Potluck's seccomp profile) and the empty file holds no block; the plain allocation
    (which shows in the file's size) and the hole are let through."""
    host = await start_laptop(pool, docker_engines[0], "fallocate-host", allowed_images=[default_image])
    wanted = spec(image=default_image, disk=64 << 20)
    async with _running(pool, host, docker_engines[0], "fallocate", wanted) as (driver, cid):
        for flags in ("-n", "-z -n"):
            kept = driver.exec_run(cid, ["sh", "-c", f"touch /blob && fallocate {flags} -l 200M /blob"])
            assert kept.exit_code != 0, (flags, kept.output)
            assert b"Operation not permitted" in kept.output, (flags, kept.output)
            blocks = driver.exec_run(cid, ["stat", "-c", "%s %b", "/blob"])
            assert blocks.output.decode().split() == ["0", "0"], (flags, blocks.output)
        plain = driver.exec_run(cid, ["sh", "-c", "fallocate -l 1M /plain && stat -c %s /plain"])
        assert (plain.exit_code, plain.output.decode().strip()) == (0, str(1 << 20)), plain.output
        punched = driver.exec_run(cid, ["sh", "-c", "fallocate -p -o 0 -l 1M /plain && stat -c %b /plain"])
        assert (punched.exit_code, punched.output.decode().strip()) == (0, "0"), punched.output


async def test_an_images_health_check_is_not_run_by_the_members_engine(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """Tried: an image whose HEALTHCHECK runs every second; the engine runs each check itself,
    outside the allocation's CPU quota and the pool's cgroup. Must hold: the allocation runs,
    its container has the checks turned off (read back before it started), and the engine
    keeps no health state for it, so it never ran one."""
    engine = docker_engines[0]
    client = docker.DockerClient(base_url=engine.url)
    try:
        dockerfile = f"FROM {DEFAULT_TAG}\nHEALTHCHECK --interval=1s --timeout=1s CMD true\n"
        await asyncio.to_thread(
            client.images.build, fileobj=io.BytesIO(dockerfile.encode()), tag=HEALTHCHECK_IMAGE
        )
        host = await pool.enroll("laptop-healthcheck")
        pool.write_config(host, engine, allowed_images=[DEFAULT_TAG, "potluck-healthcheck:*"])
        pool.start_hostd(host)
        await pool.wait_for_host(host.host_id, "active")
        await place(pool.store, host.host_id, "checked", spec(image=HEALTHCHECK_IMAGE))
        await wait_for_status(pool, "checked", "running")
        [container] = client.containers.list(filters={"label": "potluck.allocation=checked"})
        assert container.attrs["Config"]["Healthcheck"]["Test"] == ["NONE"]
        assert "Health" not in container.attrs["State"]
    finally:
        client.close()


async def test_writing_past_the_disk_bound_through_the_engines_own_files_stops_the_container(
    pool: Pool, laptop: EnrolledHost
) -> None:
    """Tried: a container with a 16 MiB disk bound and no network writes 9 MiB into each of
    /etc/resolv.conf (in its layer: made without the engine's network code, no_network.py) and
    /etc/hostname, a file the engine keeps outside the container's layer (bind-mounted
    read-write), so that no file and not the layer alone is past the bound. (Its /etc/hosts is
    hostd's, read-only; with a network of its own the engine keeps all three outside, which
    test_docker_driver measures.) Must hold: the 18 MiB together count against it, and the
    allocation fails with disk_limit_exceeded, its detail naming where the bytes went."""
    files = ("/etc/resolv.conf", "/etc/hostname")
    fill = "; ".join(f"dd if=/dev/zero bs=1M count=9 >> {path}" for path in files)
    await place(
        pool.store,
        laptop.host_id,
        "etc-writer",
        spec(disk=16 << 20, command=["sh", "-c", f"{fill}; sleep 3600"]),
    )
    await wait_for_status(pool, "etc-writer", "failed")
    state = await allocation(pool.store, "etc-writer")
    assert state is not None
    assert state.reason == "disk_limit_exceeded"
    assert state.detail is not None
    assert "more than its disk bound of 16777216" in state.detail
    assert "to /etc/hostname" in state.detail, state.detail


async def test_files_processes_syscalls_and_volumes_are_bounded_before_anything_runs(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """Inside a placed container, `ulimit` reads back our open-files and processes limits (not
    the engine's million) and seccomp is on: `unshare -U`, which the engine's profile blocks,
    fails, while the same container made with seccomp=unconfined can call it. An image with a
    VOLUME line is refused from its own inspect: the allocation fails with limits_not_applied,
    and the engine never started a container for it nor made a volume."""
    engine = docker_engines[0]
    import_rootfs(engine.url, rootfs_tarball(), VOLUME_IMAGE, changes=["VOLUME /data", 'CMD ["/bin/sh"]'])
    host = await pool.enroll("laptop-bounded")
    pool.write_config(host, engine, allowed_images=[DEFAULT_TAG, "potluck-volume:*"])
    pool.start_hostd(host)
    await pool.wait_for_host(host.host_id, "active")
    client = docker.DockerClient(base_url=engine.url)
    driver = DockerDriver(engine.url)
    try:
        volumes_before = {v.name for v in client.volumes.list()}
        since = int(time.time()) - 1
        await place(pool.store, host.host_id, "bounded", spec())
        await place(pool.store, host.host_id, "volume", spec(image=VOLUME_IMAGE))
        await wait_for_status(pool, "bounded", "running")
        await wait_for_status(pool, "volume", "failed")

        [container] = [c for c in driver.list_managed(host.host_id) if c.allocation_id == "bounded"]
        # stdout and stderr arrive in frames of their own: read the limits and the refusal apart.
        probe = ["sh", "-c", "ulimit -n; ulimit -Hn; ulimit -u; grep Seccomp: /proc/self/status"]
        # runc before 1.1.13 races with its own Go runtime over RLIMIT_NOFILE on exec (runc#4195):
        # once in thousands of execs the soft limit is runc's (the hard one, 4096; seen once in a
        # full run). Debian 12's runc 1.1.5 has it and hostd cannot set an exec's limits, so the
        # soft limit must match on one of a few execs, as in test_ssh_gateway's session test.
        for _ in range(4):
            limits = driver.exec_run(container.container_id, probe).output.decode().splitlines()
            nofile, nofile_hard, nproc, seccomp = limits
            if int(nofile) == NOFILE_SOFT:
                break
        assert (int(nofile), int(nofile_hard), int(nproc)) == (NOFILE_SOFT, NOFILE_HARD, NPROC)
        assert seccomp.split() == ["Seccomp:", "2"]  # 2: a filter is on
        blocked = driver.exec_run(container.container_id, ["unshare", "-U", "true"])
        assert blocked.exit_code != 0
        assert "Operation not permitted" in blocked.output.decode()
        # The control: the same container without the profile gets through, so seccomp is what stopped it.
        assert container.spec is not None
        control = replace(container.spec, allocation_id="seccomp-control", host_id="control")
        kwargs = create_kwargs(control, disk_quota=False)
        kwargs["security_opt"] = [*kwargs["security_opt"], "seccomp=unconfined"]
        unconfined = create_container(client, kwargs)
        try:
            unconfined.start()
            assert driver.exec_run(unconfined.id or "", ["unshare", "-U", "true"]).exit_code == 0
        finally:
            unconfined.remove(force=True)

        state = await allocation(pool.store, "volume")
        assert state is not None
        assert state.reason == "limits_not_applied"
        assert state.detail is not None
        assert f"the image {VOLUME_IMAGE} declares VOLUME /data" in state.detail, state.detail
        assert "rebuild the image without VOLUME lines" in state.detail, state.detail
        starts = [
            e
            for e in driver.events(host.host_id, since=since, until=int(time.time()) + 1)
            if e["action"] == "start"
        ]
        assert [e["allocation_id"] for e in starts] == ["bounded"]
        assert {v.name for v in client.volumes.list()} == volumes_before
        assert "volume" not in {c.allocation_id for c in driver.list_managed(host.host_id)}
    finally:
        driver.close()
        client.close()


def test_a_container_with_an_anonymous_volume_takes_it_along_when_hostd_removes_it(
    docker_driver: DockerDriver, docker_engines: list[DockerEngine]
) -> None:
    """An image's VOLUME is refused from the image's inspect, but hostd creates the container by
    the image's name afterwards, and the name may have moved meanwhile (a pull of the same name,
    for another allocation, from a registry answering it with another image): the engine then
    makes an anonymous volume, copying the image's files at that path into it, outside the
    container's layer and its disk bound. Tried: containers of an allocation made from an image
    whose VOLUME holds files (its /bin), as such a race would make them; hostd's read-back of
    the limits of one (which refuses it, its mounts not ours, and removes it), and hostd's
    removal of the other (a release). Must hold: both are gone, and the engine holds no volume
    it did not hold before (the engine keeps a container's anonymous volumes unless they are
    removed with it, for ever, on the member's disk)."""
    engine = docker_engines[0]
    import_rootfs(
        engine.url, rootfs_tarball(), VOLUME_FILES_IMAGE, changes=["VOLUME /bin", 'CMD ["/bin/sh"]']
    )
    client = docker.DockerClient(base_url=engine.url)
    try:
        volumes_before = {v.name for v in client.volumes.list()}
        made = []
        for alloc_id in ("volume-checked", "volume-released"):
            wanted = container_spec(VOLUME_FILES_IMAGE, "laptop-volumes", allocation_id=alloc_id)
            kwargs = create_kwargs(wanted, disk_quota=False, hardware=docker_driver.hardware())
            made.append((wanted, create_container(client, kwargs).id or ""))
        assert len({v.name for v in client.volumes.list()} - volumes_before) == 2
        (checked, checked_id), (_, released_id) = made
        with pytest.raises(LimitsNotApplied):
            docker_driver.verify_limits(checked_id, checked)
        docker_driver.remove(released_id)
        assert not {checked_id, released_id} & {c.id for c in client.containers.list(all=True)}
        assert {v.name for v in client.volumes.list()} == volumes_before
    finally:
        client.close()


async def test_no_process_of_a_container_dumps_core_nor_may_raise_its_core_limit(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    """A core dump goes where the member's machine says (kernel.core_pattern): a file, or a pipe
    to a helper (systemd-coredump, apport) that runs as root on the member's machine, outside
    the container's cgroup and disk bound. Tried: the container's command raises its core limit
    (`ulimit -c unlimited`) and crashes a child with SIGSEGV; a later exec (what a session runs)
    tries to raise the limit too. Must hold: the core limit is 1 byte, soft and hard (0 stops a
    core file but not a pipe helper; 1 is the kernel's sign to start none), in the container
    and in the exec, raising it fails in both, and the crash left no core file."""
    crash = (
        "mkdir -p /crash && cd /crash && (ulimit -c unlimited 2>/dev/null; echo $? > /crash.raised; "
        'exec sh -c "kill -SEGV \\$\\$"); sleep 3600'
    )
    crasher = spec(command=["sh", "-c", crash])
    async with _running(pool, laptop, docker_engines[0], "crasher", crasher) as (driver, cid):
        await _until(driver, cid, ["-e", "/crash.raised"], "the command never got to its crash", 15)
        assert driver.exec_run(cid, ["cat", "/crash.raised"]).output.decode().strip() != "0"
        assert driver.exec_run(cid, ["ls", "-A", "/crash"]).output.decode() == ""
        # 1 byte, soft and hard, as the kernel shows it (the shell's `ulimit -c` counts blocks).
        limits = driver.exec_run(cid, ["grep", "core file size", "/proc/self/limits"]).output.decode().split()
        assert limits[-3:] == ["1", "1", "bytes"], limits
        assert driver.exec_run(cid, ["sh", "-c", "ulimit -c 1"]).exit_code != 0
        assert driver.inspect(cid)["HostConfig"]["Ulimits"] is not None
        assert {"Name": "core", "Soft": 1, "Hard": 1} in driver.inspect(cid)["HostConfig"]["Ulimits"]


async def test_a_container_cannot_use_up_what_the_members_root_shares_with_it(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    """The kernel counts queued signals and POSIX message-queue bytes per user of the machine,
    and a container's root is the machine's: a container that queued 96,000 signals to a
    stopped process of its own (found: the machine's root then had none left, so no root
    process of the member's could create a POSIX timer or queue a real-time signal) left
    nothing to the member's daemons and the other containers. Tried: 3000 real-time signals
    queued to a stopped process of the container's. Must hold: the container's limits on
    pending signals, message-queue bytes and locked memory are hostd's (read in its command's process and in
    an exec, as a session's), and no more signals than that limit were queued."""
    # Queued only once the sleep has stopped: a real-time signal whose default action ends a
    # process, sent while the process still runs (on the other core, on its way to stop), ends
    # it at once (the kernel's complete_signal), and there would be nothing left to read.
    queue = (
        "sleep 3600 & p=$!; kill -STOP $p; "
        "until grep -q '^State:.*stopped' /proc/$p/status; do sleep 0.05; done; "
        "i=0; while [ $i -lt 3000 ]; do kill -40 $p 2>/dev/null; "
        "i=$((i+1)); done; grep SigQ: /proc/$p/status > /queued; sleep 3600"
    )
    signaller = spec(command=["sh", "-c", queue])
    async with _running(pool, laptop, docker_engines[0], "signaller", signaller) as (driver, cid):
        await _until(driver, cid, ["-s", "/queued"], "the container never got its signals queued", 30)
        queued, limit = driver.exec_run(cid, ["cat", "/queued"]).output.decode().split()[1].split("/")
        # SigQ counts the signals pending for the user across the machine (the container's root
        # is the machine's), and the kernel queues its own (a SIGCHLD, a SIGKILL) past the
        # limit: another root process's at that moment shows as one more (seen: 1025/1024).
        assert int(limit) == SIGPENDING
        assert SIGPENDING <= int(queued) <= SIGPENDING + 16, (queued, limit)
        for limits in ("/proc/1/limits", "/proc/self/limits"):
            text = driver.exec_run(cid, ["cat", limits]).output.decode()
            rows = {line[:26].strip(): line[26:].split()[:2] for line in text.splitlines()[1:]}
            assert rows["Max pending signals"] == [str(SIGPENDING)] * 2, text
            assert rows["Max msgqueue size"] == [str(MSGQUEUE)] * 2, text
            assert rows["Max locked memory"] == [str(MEMLOCK)] * 2, text


async def test_an_image_starting_in_the_kernels_file_systems_is_refused_before_anything_runs(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """Tried: an image whose WORKDIR is /proc/self/fd/7, the way runc before 1.1.12
    (CVE-2024-21626) started a container in a directory of the member's machine through a
    descriptor it had not closed yet. Must hold: hostd refuses it from the image's inspect,
    whatever runc the member has: the allocation fails with limits_not_applied naming the
    WORKDIR, and the engine never created a container for it."""
    engine = docker_engines[0]
    import_rootfs(
        engine.url, rootfs_tarball(), WORKDIR_IMAGE, changes=["WORKDIR /proc/self/fd/7", 'CMD ["/bin/sh"]']
    )
    host = await start_laptop(
        pool, engine, "laptop-workdir", allowed_images=[DEFAULT_TAG, "potluck-workdir:*"]
    )
    driver = DockerDriver(engine.url)
    try:
        since = int(time.time()) - 1
        await place(pool.store, host.host_id, "workdir", spec(image=WORKDIR_IMAGE))
        await wait_for_status(pool, "workdir", "failed")
        state = await allocation(pool.store, "workdir")
        assert state is not None
        assert state.reason == "limits_not_applied", (state.reason, state.detail)
        assert state.detail is not None
        assert f"the image {WORKDIR_IMAGE} starts in /proc/self/fd/7 (WORKDIR)" in state.detail, state.detail
        events = driver.events(host.host_id, since=since, until=int(time.time()) + 1)
        assert [e for e in events if e["allocation_id"] == "workdir"] == []
        assert "workdir" not in {c.allocation_id for c in driver.list_managed(host.host_id)}
    finally:
        driver.close()


async def test_when_the_members_machine_runs_out_of_memory_a_containers_processes_go_first(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    """The kernel's OOM killer, when the whole machine runs out of memory (not a container's own
    limit), kills the process of the highest score; at the engine's default (0) a container's
    processes and the member's own stood alike, by size alone. Tried: the container's command
    and a later exec (what a session runs) read their score and try to shield themselves
    (-1000, what the member's own daemons may have). Must hold: both have the highest score
    (OOM_SCORE_ADJ, 1000), neither could go below 0, and inspect shows it. (Where the engine
    runs with CAP_SYS_RESOURCE, as it does on a member's machine, the kernel also refuses any
    lowering at all: the engine's write sets the floor, oom_score_adj_min; this test machine's
    engine lacks the capability, so its floor stays the parent's 0.)"""
    shield = (
        "cat /proc/self/oom_score_adj > /score; (echo -1000 > /proc/self/oom_score_adj) 2>/dev/null; "
        "echo $? > /shielded; sleep 3600"
    )
    first = spec(command=["sh", "-c", shield])
    async with _running(pool, laptop, docker_engines[0], "oom-first", first) as (driver, cid):
        await _until(driver, cid, ["-s", "/shielded"], "the command never tried to shield itself", 30)
        assert driver.exec_run(cid, ["cat", "/score"]).output.decode().split() == [str(OOM_SCORE_ADJ)]
        assert driver.exec_run(cid, ["cat", "/shielded"]).output.decode().split() != ["0"]
        assert driver.exec_run(cid, ["cat", "/proc/1/oom_score_adj"]).output.decode().split() == ["1000"]
        # The refusal's words kept off the output: stdout and stderr come as one stream, in no
        # fixed order between the two (once, "sh: write error" came before the score).
        lower = "cat /proc/self/oom_score_adj; (echo -1 > /proc/self/oom_score_adj) 2>/dev/null"
        in_exec = driver.exec_run(cid, ["sh", "-c", lower])
        assert in_exec.exit_code != 0
        assert in_exec.output.decode().split()[0] == "1000", in_exec.output
        assert driver.inspect(cid)["HostConfig"]["OomScoreAdj"] == OOM_SCORE_ADJ


async def test_containers_run_with_potlucks_seccomp_profile_whatever_the_engines_default_allows(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    """Found: this machine's engine (Debian's Docker 20.10.24) has a default seccomp profile
    that lets a container set up io_uring and open AF_VSOCK sockets (which reach the machine's
    virtual machines, and other containers over vsock loopback, network or not), both blocked
    by newer Docker's. Tried: in a placed container, by an exec as a session's, each of those
    calls, AF_ALG and a user namespace, with static probes that exit with the call's errno
    (syscall_probe.py); and calls every program makes. Must hold: the container was created
    with Potluck's profile (seccomp_profile.py, read back in inspect); io_uring_setup, the
    AF_VSOCK, AF_ALG sockets and unshare(CLONE_NEWUSER) fail with EPERM (io_uring_setup with
    no arguments would say EFAULT, a vsock socket succeed, were they let through); clone3 says
    ENOSYS (so that the C library uses clone); an AF_INET socket and getpid succeed."""
    calls = {
        "io_uring_setup": (425, 0, 0),
        "socket_vsock": (41, 40, 1, 0),
        "socket_alg": (41, 38, 5, 0),
        "unshare_user": (272, 0x10000000),
        "clone3": (435, 0, 0),
        "socket_inet": (41, 2, 1, 0),
        "getpid": (39,),
    }
    async with _running(pool, laptop, docker_engines[0], "seccomp", spec()) as (driver, cid):
        client = docker.DockerClient(base_url=docker_engines[0].url)
        try:
            tar = io.BytesIO()
            with tarfile.open(fileobj=tar, mode="w") as archive:
                for name, (number, *args) in calls.items():
                    program = probe(number, *args)
                    info = tarfile.TarInfo(f"probe/{name}")
                    info.size, info.mode = len(program), 0o755
                    archive.addfile(info, io.BytesIO(program))
            assert client.api.put_archive(cid, "/", tar.getvalue())
        finally:
            client.close()
        errno_of = {name: driver.exec_run(cid, [f"/probe/{name}"]).exit_code for name in calls}
        assert errno_of == {
            "io_uring_setup": 1,
            "socket_vsock": 1,
            "socket_alg": 1,
            "unshare_user": 1,
            "clone3": 38,
            "socket_inet": 0,
            "getpid": 0,
        }
        assert "seccomp=" + SECCOMP_PROFILE in driver.inspect(cid)["HostConfig"]["SecurityOpt"]


async def test_a_container_cannot_listen_to_the_members_device_events(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    """Found: the kernel sends each device event of the machine (uevents: a USB device plugged
    in, each change of the battery's, with its model and serial number) to every network
    namespace of the machine's user namespace, a container's without a network among them, to
    any user that opens a netlink socket of those events; a container's uid 1000 read them as
    they came. Tried: in a placed container, by an exec as uid 1000 (a session's user) and as
    its root, busybox's `uevent`, which opens that socket and listens; static probes opening it
    through the 64-bit and the i386 syscall tables (syscall_probe.py), and a netlink socket of
    routing's through both; then `ip addr`, which reads the container's interfaces over
    routing's. Must hold: `uevent` fails at once, its socket refused (EPERM, by Potluck's
    seccomp profile), and so do both probes of the device events', for both users, while
    routing's sockets open and `ip addr` lists the container's loopback."""
    af_netlink, sock_dgram, uevents, routing = 16, 2, 15, 0
    calls = {
        "uevent_64": probe(41, af_netlink, sock_dgram, uevents),
        "uevent_i386": probe_i386(359, af_netlink, sock_dgram, uevents),
        "route_64": probe(41, af_netlink, sock_dgram, routing),
        "route_i386": probe_i386(359, af_netlink, sock_dgram, routing),
    }
    async with _running(pool, laptop, docker_engines[0], "uevents", spec()) as (driver, cid):
        client = docker.DockerClient(base_url=docker_engines[0].url)
        try:
            assert client.api.put_archive(cid, "/", _programs(calls))
        finally:
            client.close()
        for user in ("1000:1000", ""):
            # Let through, `uevent` would listen until the timeout ends it (status 143).
            listen = driver.exec_run(cid, ["timeout", "5", "uevent", "true"], user=user)
            assert listen.exit_code == 1, (user, listen)
            assert b"Operation not permitted" in listen.output, (user, listen.output)
            errno_of = {name: driver.exec_run(cid, [f"/probe/{name}"], user=user).exit_code for name in calls}
            assert errno_of == {"uevent_64": 1, "uevent_i386": 1, "route_64": 0, "route_i386": 0}, user
        interfaces = driver.exec_run(cid, ["ip", "addr"], user="1000:1000")
        assert interfaces.exit_code == 0, interfaces.output
        assert b"127.0.0.1" in interfaces.output, interfaces.output


def _machine_inotify_errno() -> int:
    """What this machine's user (the tests' own, root where the engines run rootful) gets asking
    for an inotify instance: 0 when it gets one (closed again), else the errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(0)
    if fd < 0:
        return ctypes.get_errno()
    os.close(fd)
    return 0


async def test_a_container_cannot_take_the_machines_inotify_instances(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    """Found: the kernel counts inotify instances per user of the machine (128 in all by
    default), and a container's count is its user's of the machine (its root is the machine's
    root; on an engine with userns-remap it is the engine's root, the owner of the container's
    user namespace, as well): a container's root held all 128, and the machine's root was then
    refused one (EMFILE), on a remapped engine as on this one. Tried: in a placed container, a
    static program asking for an inotify instance 200 times and holding what it got, as its
    root; then static probes of inotify_init and inotify_init1, through the 64-bit and the i386
    syscall tables, as its root and as uid 1000 (a session's user). Must hold: the holder got
    none, and while it waits this machine's user (the engine's root here) still gets an
    instance; every probe fails with ENOSYS (as on a kernel without inotify, which `tail -f`
    and polling file watchers fall back from)."""
    enosys = 38
    probes = {
        "init_64": probe(253),
        "init1_64": probe(294, 0),
        "init_i386": probe_i386(291),
        "init1_i386": probe_i386(332, 0),
    }
    async with _running(pool, laptop, docker_engines[0], "inotify", spec()) as (driver, cid):
        client = docker.DockerClient(base_url=docker_engines[0].url)
        try:
            assert client.api.put_archive(cid, "/", _programs({**probes, "holder": holder(294, 200)}))
            started = client.api.exec_create(cid, ["/probe/holder"])
            client.api.exec_start(started["Id"], detach=True)
        finally:
            client.close()
        # Paused (syscall 34) once it has asked 200 times; whatever it got, it holds.
        paused = ["sh", "-c", "grep -q '^34 ' /proc/$(pidof holder)/syscall"]
        deadline = time.monotonic() + 30
        while driver.exec_run(cid, paused).exit_code != 0:
            assert time.monotonic() < deadline, "the holder never paused"
            await asyncio.sleep(0.2)
        held = driver.exec_run(cid, ["sh", "-c", "ls -l /proc/$(pidof holder)/fd | grep -c inotify"])
        assert held.output.decode().strip() == "0", held.output
        assert _machine_inotify_errno() == 0
        for user in ("1000:1000", ""):
            errno_of = {
                name: driver.exec_run(cid, [f"/probe/{name}"], user=user).exit_code for name in probes
            }
            assert errno_of == dict.fromkeys(probes, enosys), user


def _programs(programs: dict[str, bytes]) -> bytes:
    """A tar of `programs`, each executable by anyone, under probe/."""
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as archive:
        for name, program in programs.items():
            info = tarfile.TarInfo(f"probe/{name}")
            info.size, info.mode = len(program), 0o755
            archive.addfile(info, io.BytesIO(program))
    return tar.getvalue()
