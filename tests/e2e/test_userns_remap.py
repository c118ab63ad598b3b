"""A member's engine started with `userns-remap`: root in the container is not root here, and
hostd places, checks and serves a container there as on any engine.

The engine is a private dockerd of this test's own (as tests/fixtures/docker.py starts them),
with `"userns-remap": "default"` in its daemon.json. dockerd maps root to the subordinate ids
of the user `dockremap`; when this machine has none, the test adds the user and its ranges
(`useradd --system dockremap`, `dockremap:<start>:65536` in /etc/subuid and /etc/subgid) and
says so on stderr. Both stay: other runs, and dockerd, look for them there. It also gives
others `o+x` on the directories above the engine's data-root, which dockerd requires of a
remapped data-root.
"""

import fcntl
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from potluck.hostd.docker_driver import DockerDriver
from potluck.localstack import DockerEngine, LocalStackError, build_test_image, ensure_docker_installed
from potluck.localstack.test_image import DEFAULT_TAG
from tests.e2e.conftest import Gatewayed, member, start_gatewayed, start_laptop, wait_for_status
from tests.e2e.test_file_transfer import scp, sftp
from tests.fixtures.pool import EnrolledHost, Pool, allocation, place, spec

REMAP_USER = "dockremap"
#: Where the test puts dockremap's ids when it has to: past the ranges useradd hands out.
REMAP_START = 231072
REMAP_COUNT = 65536


def _has_range(path: Path) -> bool:
    return path.exists() and any(line.split(":")[0] == REMAP_USER for line in path.read_text().splitlines())


def _ensure_remap_user() -> None:
    """dockremap and its subordinate ids, as `userns-remap: default` needs them; under a lock,
    since pytest-xdist's workers may each start such an engine at once."""
    with Path("/tmp/potluck-dockremap.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _add_remap_user()


def _add_remap_user() -> None:
    if subprocess.run(["id", REMAP_USER], capture_output=True, check=False).returncode != 0:
        print(f"test_userns_remap: adding the system user {REMAP_USER}", file=sys.stderr)
        subprocess.run(["useradd", "--system", "--no-create-home", REMAP_USER], check=True)
    for path in (Path("/etc/subuid"), Path("/etc/subgid")):
        if not _has_range(path):
            entry = f"{REMAP_USER}:{REMAP_START}:{REMAP_COUNT}"
            print(f"test_userns_remap: adding {entry} to {path}", file=sys.stderr)
            with path.open("a") as f:
                f.write(f"{REMAP_USER}:{REMAP_START}:{REMAP_COUNT}\n")


@pytest.fixture(scope="module")
def remapped_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    """A private dockerd started with `userns-remap: default` and the busybox test image."""
    try:
        ensure_docker_installed()
        _ensure_remap_user()
        engine = DockerEngine(tmp_path_factory.mktemp("docker-userns"))
        # The remapped root must pass through every directory above its data-root (dockerd
        # refuses to start otherwise); pytest makes its temporary directories 0700.
        for directory in (engine.workdir, *engine.workdir.parents):
            directory.chmod(directory.stat().st_mode | 0o001)
        engine.config_file.write_text('{"userns-remap": "default"}\n')
        engine.start()
    except (LocalStackError, subprocess.CalledProcessError, OSError) as exc:
        pytest.fail(f"cannot start a Docker engine with userns-remap: {exc}", pytrace=False)
    try:
        build_test_image(engine.url, DEFAULT_TAG)
        yield engine
    finally:
        engine.stop()


@pytest.fixture
async def remapped(pool: Pool, remapped_engine: DockerEngine, tmp_path: Path) -> Gatewayed:
    return await start_gatewayed(pool, remapped_engine, tmp_path)


def _first_subordinate_uid() -> int:
    [start] = [
        int(line.split(":")[1])
        for line in Path("/etc/subuid").read_text().splitlines()
        if line.split(":")[0] == REMAP_USER
    ][:1]
    return start


def test_the_engine_facts_say_the_engine_remaps(remapped_engine: DockerEngine) -> None:
    """Tried: hostd's driver reads the facts of an engine started with userns-remap. Must hold:
    they say `remap` (what hostd registers, and `potluck host status` shows)."""
    with DockerDriver(remapped_engine.url) as driver:
        assert driver.engine_facts().user_namespaces == "remap"


async def test_a_container_placed_on_a_remapping_engine_runs_as_an_unprivileged_uid_and_takes_files(
    remapped: Gatewayed, tmp_path: Path
) -> None:
    """Tried: an allocation placed through the allocator on a hostd whose engine remaps users;
    `cat /proc/self/uid_map` over SSH; a file up and back with sftp and a directory tree up
    with scp (both served by the helper busybox mounted at /.potluck, the image having no
    sftp-server). Must hold: it runs (hostd's read-back of every limit accepted
    the container), root in it maps to dockremap's first subordinate uid, not 0, the file
    comes back as it went, and the tree lands owned by the container's root."""
    async with aiohttp.ClientSession() as http:
        alloc_id = await remapped.allocate(http, command=None)
    shown = await remapped.ssh(alloc_id, "cat /proc/self/uid_map; id -u")
    assert shown.returncode == 0, (shown.stderr, remapped.pool.logs())
    first, *_, uid = shown.stdout.split("\n")[:-1]
    inside, outside, count = (int(n) for n in first.split())
    assert (inside, uid) == (0, "0"), shown.stdout
    assert outside == _first_subordinate_uid(), f"uid 0 in the container is uid {outside} outside"
    assert outside != 0
    assert count <= REMAP_COUNT, shown.stdout
    sent = tmp_path / "up.txt"
    sent.write_text("through the helper, under a user namespace\n")
    back = tmp_path / "back.txt"
    moved = await sftp(remapped, alloc_id, f"put {sent} /tmp/up.txt\nget /tmp/up.txt {back}\n")
    assert moved.returncode == 0, (moved.stdout, moved.stderr)
    assert back.read_text() == sent.read_text()
    tree = tmp_path / "tree"
    (tree / "deeper").mkdir(parents=True)
    (tree / "deeper" / "leaf.txt").write_text("a directory made by the helper\n")
    copied = await scp(remapped, "-r", str(tree), f"{alloc_id}@127.0.0.1:/tmp/tree")
    assert copied.returncode == 0, copied.stderr
    leaf = "/tmp/tree/deeper/leaf.txt"
    landed = await remapped.ssh(alloc_id, f"cat {leaf}; stat -c %u {leaf}")
    assert landed.stdout == "a directory made by the helper\n0\n", landed
    assert _said_at_start(remapped.pool, "laptop-a") == {"level": "info", "user_namespaces": "remap"}
    assert _status_user_namespaces(remapped.host) == "remap"


async def test_writing_past_the_disk_bound_on_a_remapping_engine_stops_the_container(
    pool: Pool, remapped_engine: DockerEngine
) -> None:
    """Tried: a container on the remapping engine (its layers under the data-root's
    `<uid>.<gid>/` directory, owned by the remapped root) writes 48 MiB past a 16 MiB disk
    bound. Must hold: hostd still finds and measures its writable layer and stops it as
    `disk_limit_exceeded`."""
    host = await start_laptop(pool, remapped_engine)
    writer = spec(disk=16 << 20, command=["sh", "-c", "dd if=/dev/zero of=/fill bs=1M count=48; sleep 3600"])
    await place(pool.store, host.host_id, "writer", writer)
    await wait_for_status(pool, "writer", "failed")
    state = await allocation(pool.store, "writer")
    assert state is not None
    assert state.reason == "disk_limit_exceeded", state


async def test_a_hostd_on_a_plain_engine_warns_that_root_in_its_containers_is_root_here(
    pool: Pool, laptop: EnrolledHost
) -> None:
    """Tried: hostd started on an engine without userns-remap (the session's plain engine), then
    `potluck host status`. Must hold: hostd's start logged one warning saying root in a container
    is root on this machine and pointing at README, and the status the member reads says `off`."""
    said = _said_at_start(pool, "laptop-a")
    assert (said["level"], said["user_namespaces"]) == ("warning", "off"), said
    assert "root on this machine" in str(said["meaning"]), said
    assert "README" in str(said["hint"]), said
    assert _status_user_namespaces(laptop) == "off"


def _said_at_start(pool: Pool, name: str) -> dict[str, object]:
    """hostd's one `hostd.engine_user_namespaces` line, without its timestamp."""
    lines = (pool.workdir / f"hostd-{name}.log").read_text().splitlines()
    said = [e for e in map(json.loads, lines) if e.get("event") == "hostd.engine_user_namespaces"]
    assert len(said) == 1, said
    return {k: v for k, v in said[0].items() if k not in ("event", "timestamp")}


def _status_user_namespaces(host: EnrolledHost) -> object:
    shown = member(host, "status")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)["engine"]["user_namespaces"]
