"""Files in and out with the user's own tools, through the real gateway and hostd: OpenSSH's
`scp` (its SFTP mode and `-O`), `sftp`, `rsync -e ssh`, and `potluck cp`.

Every transfer is checked by content: sha256 of each file here against `sha256sum` run in the
container (and back). The allocations are interactive (no command): they stay up on their own.
"""

import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import pytest

from potluck.localstack.test_image import DEFAULT_TAG
from potluck.user.client import Login
from tests.e2e import module_files as module_files_fixtures
from tests.e2e.conftest import Gatewayed
from tests.fixtures.pool import allocation

BIG = 100 * 1000 * 1000


# One pool, gateway and hostd for the module's tests, each test's allocations gone after it.
module_files = module_files_fixtures.module_files
files = module_files_fixtures.files


def _ssh_options(g: Gatewayed) -> list[str]:
    """A clean OpenSSH client: no user config, no agent, no prompt for the gateway's key."""
    return [
        "-F", "/dev/null",
        "-i", str(g.key),
        "-o", "IdentitiesOnly=yes",
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes",
        "-o", "LogLevel=ERROR",
    ]  # fmt: skip


async def run(argv: Sequence[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    return await asyncio.to_thread(
        subprocess.run, list(argv), capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


async def scp(g: Gatewayed, *args: str, legacy: bool = False) -> subprocess.CompletedProcess[str]:
    return await run(["scp", *(["-O"] if legacy else []), "-P", str(g.ssh_port), *_ssh_options(g), *args])


async def sftp(g: Gatewayed, alloc_id: str, batch: str) -> subprocess.CompletedProcess[str]:
    """`sftp -b -` with the commands in `batch` (it stops at the first that fails)."""
    argv = ["sftp", "-P", str(g.ssh_port), *_ssh_options(g), "-b", "-", f"{alloc_id}@127.0.0.1"]
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    return await asyncio.to_thread(
        subprocess.run, argv, input=batch, capture_output=True, text=True, env=env, timeout=300, check=False
    )


async def rsync(g: Gatewayed, *args: str) -> subprocess.CompletedProcess[str]:
    shell = " ".join(["ssh", "-p", str(g.ssh_port), *_ssh_options(g)])
    return await run(["rsync", "-a", "-e", shell, *args])


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def tree_sums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


async def remote_sums(g: Gatewayed, alloc_id: str, root: str) -> dict[str, str]:
    """{relative path: sha256} of every file under `root` in the container, by its own sha256sum."""
    done = await g.ssh(alloc_id, f"cd {root} && find . -type f -exec sha256sum {{}} +")
    assert done.returncode == 0, done.stderr
    sums = {}
    for line in done.stdout.splitlines():
        digest, _, name = line.partition("  ")
        sums[name.removeprefix("./")] = digest
    return sums


def make_big(path: Path) -> Path:
    with path.open("wb") as f:
        for _ in range(BIG // (1 << 20)):
            f.write(os.urandom(1 << 20))
        f.write(os.urandom(BIG % (1 << 20)))
    return path


def make_tree(root: Path) -> Path:
    """Nested folders, an empty file, a name with a space, a symlink within the tree."""
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "empty").write_bytes(b"")
    (root / "a" / "with space.txt").write_bytes(os.urandom(1000))
    for i in range(20):
        (root / "a" / "b" / f"f{i}.bin").write_bytes(os.urandom(i * 4099))
    (root / "a" / "b" / "c" / "deep.bin").write_bytes(os.urandom(300_000))
    return root


async def interactive(g: Gatewayed, image: str, disk: str = "1G") -> str:
    async with aiohttp.ClientSession() as http:
        return await g.allocate(http, command=None, image=image, disk=disk, memory="256M")


async def busybox_with(g: Gatewayed, script: str) -> str:
    """An interactive busybox allocation in which `script` ran (and succeeded): its id."""
    alloc_id = await interactive(g, DEFAULT_TAG)
    made = await g.ssh(alloc_id, script)
    assert made.returncode == 0, made.stderr
    return alloc_id


async def running_within(g: Gatewayed, alloc_id: str, kib: int, also: str = "") -> list[str]:
    """Assert that the allocation still runs and its /root holds less than `kib` KiB (`du`);
    the words `also` (a command run after it in the container) printed."""
    state = await allocation(g.pool.store, alloc_id)
    assert state is not None
    assert state.status == "running", g.pool.logs()
    used = await g.ssh(alloc_id, "du -s -k /root | cut -f1" + (f"; {also}" if also else ""))
    assert used.returncode == 0, used.stderr
    words = used.stdout.split()
    assert int(words[0]) < kib, used.stdout
    return words[1:]


@pytest.mark.slow
# Eight transfers of 100 MB and back through the gateway and hostd: past the suite's 180 s
# default on a loaded machine (181 s once), well within 600 s.
@pytest.mark.timeout(600)
async def test_scp_both_modes_sftp_and_rsync_into_the_default_image(
    files: Gatewayed, default_image: str, tmp_path: Path
) -> None:
    """What is tried: a 100 MB file and a directory tree up with scp (SFTP mode), scp -O, sftp and
    rsync, and back down the same ways. What must hold: every tool exits 0 and every file has
    the same sha256 here, in the container, and back here."""
    alloc_id = await interactive(files, default_image)
    big = make_big(tmp_path / "big.bin")
    tree = make_tree(tmp_path / "tree")
    want = sha256(big)
    target = f"{alloc_id}@127.0.0.1"

    steps = [
        ("scp", await scp(files, str(big), f"{target}:/root/scp.bin")),
        ("scp -O", await scp(files, str(big), f"{target}:/root/scp-o.bin", legacy=True)),
        ("sftp", await sftp(files, alloc_id, f"put {big} /root/sftp.bin\n")),
        ("rsync", await rsync(files, str(big), f"{target}:/root/rsync.bin")),
        ("scp -r", await scp(files, "-r", str(tree), f"{target}:/root/scp-tree")),
        ("scp -O -r", await scp(files, "-r", str(tree), f"{target}:/root/scp-o-tree", legacy=True)),
        ("rsync tree", await rsync(files, f"{tree}/", f"{target}:/root/rsync-tree")),
    ]
    for name, done in steps:
        assert done.returncode == 0, f"{name}: {done.stderr}\n{files.pool.logs()}"
    up = await remote_sums(files, alloc_id, "/root")
    for name in ("scp.bin", "scp-o.bin", "sftp.bin", "rsync.bin"):
        assert up[name] == want, name
    for prefix in ("scp-tree", "scp-o-tree", "rsync-tree"):
        assert {k.removeprefix(prefix + "/"): v for k, v in up.items() if k.startswith(prefix + "/")} == (
            tree_sums(tree)
        ), prefix

    down = tmp_path / "down"
    down.mkdir()
    back = [
        ("scp", await scp(files, f"{target}:/root/scp.bin", str(down / "scp.bin"))),
        ("scp -O", await scp(files, f"{target}:/root/scp-o.bin", str(down / "scp-o.bin"), legacy=True)),
        ("sftp", await sftp(files, alloc_id, f"get /root/sftp.bin {down / 'sftp.bin'}\n")),
        ("rsync", await rsync(files, f"{target}:/root/rsync.bin", str(down / "rsync.bin"))),
        ("scp -r", await scp(files, "-r", f"{target}:/root/scp-tree", str(down / "scp-tree"))),
        ("rsync tree", await rsync(files, f"{target}:/root/rsync-tree/", str(down / "rsync-tree"))),
    ]
    for name, done in back:
        assert done.returncode == 0, f"{name}: {done.stderr}"
    for name in ("scp.bin", "scp-o.bin", "sftp.bin", "rsync.bin"):
        assert sha256(down / name) == want, name
    assert tree_sums(down / "scp-tree") == tree_sums(tree)
    assert tree_sums(down / "rsync-tree") == tree_sums(tree)


def potluck(
    *args: str, env: dict[str, str], timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "potluck", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def logged_in(g: Gatewayed, tmp_path: Path) -> dict[str, str]:
    """The environment of a user logged in to this pool (their own client config)."""
    config = tmp_path / "client" / "client.toml"
    Login(g.pool.api, g.token, f"127.0.0.1:{g.ssh_port}").save(config)
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    return {**env, "POTLUCK_CONFIG": str(config)}


@pytest.mark.slow
@pytest.mark.parametrize("image", ["default", "busybox"])
async def test_potluck_cp_both_ways_files_and_directories(
    files: Gatewayed, default_image: str, tmp_path: Path, image: str
) -> None:
    """What is tried: `potluck cp` of a 100 MB file and of a directory tree into an allocation
    (into an existing folder, and as a new name), then back out (into a folder, and as a new
    name), piped (no terminal). What must hold: each exits 0, prints no progress bar, and
    the sha256 sums are the same here, in the container and back here."""
    alloc_id = await interactive(files, default_image if image == "default" else DEFAULT_TAG)
    env = logged_in(files, tmp_path)
    big = make_big(tmp_path / "big.bin")
    tree = make_tree(tmp_path / "tree")
    assert (await files.ssh(alloc_id, "mkdir -p /srv/in")).returncode == 0

    into = potluck("cp", "-i", str(files.key), str(big), f"{alloc_id}:/srv/in", env=env)
    renamed = potluck("cp", "-i", str(files.key), str(tree), f"{alloc_id}:/srv/tree2", env=env)
    tree_into = potluck("cp", "-i", str(files.key), str(tree), f"{alloc_id}:/srv/in/", env=env)

    for done in (into, renamed, tree_into):
        assert done.returncode == 0, done.stderr + files.pool.logs()
        assert done.stderr == ""
    sums = await remote_sums(files, alloc_id, "/srv")
    assert sums["in/big.bin"] == sha256(big)
    assert {k.removeprefix("tree2/"): v for k, v in sums.items() if k.startswith("tree2/")} == tree_sums(tree)
    assert {k.removeprefix("in/tree/"): v for k, v in sums.items() if k.startswith("in/tree/")} == (
        tree_sums(tree)
    )

    down = tmp_path / "down"
    down.mkdir()
    file_back = potluck("cp", "-i", str(files.key), f"{alloc_id}:/srv/in/big.bin", str(down), env=env)
    tree_back = potluck("cp", "-i", str(files.key), f"{alloc_id}:/srv/tree2", str(down / "t"), env=env)
    assert file_back.returncode == 0, file_back.stderr
    assert tree_back.returncode == 0, tree_back.stderr
    assert sha256(down / "big.bin") == sha256(big)
    assert tree_sums(down / "t") == tree_sums(tree)


@pytest.mark.slow
async def test_potluck_cp_of_a_missing_path_or_past_the_disk_bound_fails_cleanly(
    files: Gatewayed, tmp_path: Path
) -> None:
    """What is tried: `potluck cp` from a path the container does not have, to a folder it does
    not have, of 100 MB into an allocation whose disk bound is 64 MB, and to `-`. What must hold: each
    exits non-zero naming the path or the bound; the allocation still runs, and its container
    holds nothing of the refused copy."""
    alloc_id = await interactive(files, DEFAULT_TAG, disk="64M")
    env = logged_in(files, tmp_path)
    big = make_big(tmp_path / "big.bin")

    missing = potluck("cp", "-i", str(files.key), f"{alloc_id}:/no/such/file", str(tmp_path), env=env)
    small = tmp_path / "small.txt"
    small.write_text("small\n")
    no_folder = potluck("cp", "-i", str(files.key), str(small), f"{alloc_id}:/no/such/dir/x", env=env)
    too_big = potluck("cp", "-i", str(files.key), str(big), f"{alloc_id}:/root", env=env)
    missing_here = potluck("cp", "-i", str(files.key), str(tmp_path / "absent"), f"{alloc_id}:/root", env=env)
    to_stdout = potluck("cp", "-i", str(files.key), f"{alloc_id}:/etc/hostname", "-", env=env, cwd=tmp_path)

    # The exit codes `potluck cp --help` lists: 1 the allocation's side, 2 the local side.
    assert missing.returncode == 1, missing.stderr
    assert "/no/such/file: no such file or directory" in missing.stderr
    assert no_folder.returncode == 1, no_folder.stderr
    assert "/no/such/dir: no such directory" in no_folder.stderr
    assert too_big.returncode == 1, too_big.stderr
    assert "disk" in too_big.stderr
    assert missing_here.returncode == 2, missing_here.stderr
    assert "absent: no such file or directory here" in missing_here.stderr
    # `-` is docker cp's tar stream, not a file here called `-` (once written, and exit 0).
    assert to_stdout.returncode == 2, to_stdout.stderr
    assert "not supported" in to_stdout.stderr, to_stdout.stderr
    assert not (tmp_path / "-").exists()
    left = await files.ssh(alloc_id, "ls -A /root; du -s -k /root")
    assert left.returncode == 0, left.stderr
    assert "big.bin" not in left.stdout


@pytest.mark.slow
async def test_scp_and_sftp_into_a_busybox_image_without_an_sftp_server(
    files: Gatewayed, tmp_path: Path
) -> None:
    """What is tried: the busybox image (a shell and tar, no sftp-server, no scp): a 100 MB file
    and a directory tree up with scp (SFTP mode) and sftp, back down with both, then sftp's
    mkdir, rename, ls and rm. What must hold: each exits 0; the sha256 sums are the same here,
    in the container and back here; sftp's listing names the renamed file; the sessions are in
    the audit log as sftp sessions."""
    alloc_id = await interactive(files, DEFAULT_TAG)
    big = make_big(tmp_path / "big.bin")
    tree = make_tree(tmp_path / "tree")
    target = f"{alloc_id}@127.0.0.1"
    assert (await files.ssh(alloc_id, "command -v sftp-server scp; ls /usr/lib/openssh")).returncode != 0

    steps = [
        ("scp", await scp(files, str(big), f"{target}:/root/scp.bin")),
        ("sftp", await sftp(files, alloc_id, f"put {big} /root/sftp.bin\n")),
        ("scp -r", await scp(files, "-r", str(tree), f"{target}:/root/tree")),
    ]
    for name, done in steps:
        assert done.returncode == 0, f"{name}: {done.stderr}\n{files.pool.logs()}"
    up = await remote_sums(files, alloc_id, "/root")
    assert up["scp.bin"] == sha256(big)
    assert up["sftp.bin"] == sha256(big)
    assert {k.removeprefix("tree/"): v for k, v in up.items() if k.startswith("tree/")} == tree_sums(tree)

    down = tmp_path / "down"
    down.mkdir()
    back = [
        ("scp", await scp(files, f"{target}:/root/scp.bin", str(down / "scp.bin"))),
        ("sftp", await sftp(files, alloc_id, f"get /root/sftp.bin {down / 'sftp.bin'}\n")),
        ("scp -r", await scp(files, "-r", f"{target}:/root/tree", str(down / "tree"))),
    ]
    for name, done in back:
        assert done.returncode == 0, f"{name}: {done.stderr}\n{files.pool.logs()}"
    assert sha256(down / "scp.bin") == sha256(big)
    assert sha256(down / "sftp.bin") == sha256(big)
    assert tree_sums(down / "tree") == tree_sums(tree)

    batch = "mkdir /root/made\nrename /root/sftp.bin /root/made/moved.bin\nls /root/made\nrm /root/scp.bin\n"
    managed = await sftp(files, alloc_id, batch)
    assert managed.returncode == 0, managed.stderr
    assert "moved.bin" in managed.stdout
    left = await files.ssh(alloc_id, "ls /root /root/made")
    assert "scp.bin" not in left.stdout
    assert "moved.bin" in left.stdout
    records = await files.pool.store.read_all(0, limit=100_000)
    started = [r.data for r in records if r.type == "SessionStarted" and r.data.get("alloc_id") == alloc_id]
    assert sum(1 for s in started if s.get("command") == "sftp") >= 5


@pytest.mark.slow
async def test_sftp_into_busybox_cannot_leave_the_container_and_names_missing_paths(
    files: Gatewayed, tmp_path: Path
) -> None:
    """What is tried: through hostd's SFTP, get of a path that does not exist, of /etc/hostname,
    and of an absolute symlink to it. What must hold: the missing path fails saying so; what
    comes back both times is the container's own file, not the host's (hostd never reads
    the host's files: the container resolves every path itself)."""
    alloc_id = await busybox_with(files, "ln -s /etc/hostname /root/link")

    missing = await sftp(files, alloc_id, f"get /no/such/file {tmp_path / 'x'}\n")
    assert missing.returncode != 0
    assert "not found" in missing.stderr.lower() or "no such file" in missing.stderr.lower()

    got = await sftp(
        files, alloc_id, f"get /etc/hostname {tmp_path / 'hostname'}\nget /root/link {tmp_path / 'link'}\n"
    )
    assert got.returncode == 0, got.stderr
    inside = (await files.ssh(alloc_id, "cat /etc/hostname")).stdout
    assert inside != Path("/etc/hostname").read_text()
    assert (tmp_path / "hostname").read_text() == inside
    assert (tmp_path / "link").read_text() == inside


@pytest.mark.slow
async def test_sftp_past_the_disk_bound_fails_cleanly_and_the_container_stays_within_it(
    files: Gatewayed, tmp_path: Path
) -> None:
    """What is tried: hostd's SFTP (busybox image) put of 100 MB into an allocation whose disk
    bound is 64 MB. What must hold: sftp fails; afterwards (longer than hostd's disk check
    interval) the allocation still runs and what was written is below the bound."""
    alloc_id = await interactive(files, DEFAULT_TAG, disk="64M")
    big = make_big(tmp_path / "big.bin")

    put = await sftp(files, alloc_id, f"put {big} /root/big.bin\n")
    await asyncio.sleep(2)

    assert put.returncode != 0
    await running_within(files, alloc_id, 64 * 1024)


@pytest.mark.slow
async def test_potluck_cp_of_a_folders_contents_dot_dot_and_hard_links_land_under_the_destination(
    files: Gatewayed, tmp_path: Path
) -> None:
    """What is tried: in the container, /out with `.git/hooks/post-checkout`, a file `a`, a hard
    link `b` to it and an empty `sub`; from a git work tree here, `potluck cp ALLOC:/out/.`,
    `/out/./` and `/out//.` each to a new folder, `/out/.` into an existing one,
    `/out/sub/..` to a new folder, and `/out` to another. What must hold: each exits 0; each
    destination holds /out's files (a and b one inode), the `..` one as the destination itself,
    not as `out`; the git work tree gains nothing (no hook planted) and nothing else lands
    beside the destinations."""
    alloc_id = await busybox_with(
        files,
        "mkdir -p /out/.git/hooks /out/sub && echo x > /out/.git/hooks/post-checkout "
        "&& echo a > /out/a && ln /out/a /out/b",
    )
    env = logged_in(files, tmp_path)
    work = tmp_path / "work"
    (work / ".git" / "hooks").mkdir(parents=True)
    (work / "existing").mkdir()
    key = str(files.key)

    copies = {
        "r1": potluck("cp", "-i", key, f"{alloc_id}:/out/.", str(work / "r1"), env=env),
        "r2": potluck("cp", "-i", key, f"{alloc_id}:/out/./", str(work / "r2"), env=env),
        "r3": potluck("cp", "-i", key, f"{alloc_id}:/out//.", str(work / "r3"), env=env),
        "existing": potluck("cp", "-i", key, f"{alloc_id}:/out/.", str(work / "existing"), env=env),
        "r4": potluck("cp", "-i", key, f"{alloc_id}:/out/sub/..", str(work / "r4"), env=env),
        "z1": potluck("cp", "-i", key, f"{alloc_id}:/out", str(work / "z1"), env=env),
    }

    for name, done in copies.items():
        assert done.returncode == 0, f"{name}: {done.stderr}"
    assert sorted(p.name for p in work.iterdir()) == [".git", "existing", "r1", "r2", "r3", "r4", "z1"]
    assert list((work / ".git" / "hooks").iterdir()) == []
    for name in copies:
        landed = work / name
        assert (landed / ".git" / "hooks" / "post-checkout").read_text() == "x\n", name
        assert (landed / "a").read_text() == "a\n", name
        assert (landed / "a").stat().st_ino == (landed / "b").stat().st_ino, name
        assert (landed / "sub").is_dir(), name


@pytest.mark.slow
async def test_potluck_cp_keeps_names_that_differ_only_by_case_where_the_filesystem_tells_them_apart(
    files: Gatewayed, tmp_path: Path
) -> None:
    """What is tried: in the container (as a hostile image could leave it), /out with `Makefile`
    and `makefile`, and `d/A`, a link to `..`, beside a folder `d/a` holding `x`: the layout that
    on a filesystem folding names (macOS's) would write `d/a/x` one level up, through the link,
    which tar_guard refuses there. Here (Linux: names are not folded) `potluck cp ALLOC:/out`.
    What must hold: exit 0, and every entry lands as it was, each spelling its own."""
    alloc_id = await busybox_with(
        files,
        "mkdir -p /out/d/a && echo M > /out/Makefile && echo m > /out/makefile "
        "&& ln -s .. /out/d/A && echo x > /out/d/a/x",
    )
    env = logged_in(files, tmp_path)

    done = potluck("cp", "-i", str(files.key), f"{alloc_id}:/out", str(tmp_path / "got"), env=env)

    assert done.returncode == 0, done.stderr
    got = tmp_path / "got"
    assert (got / "Makefile").read_text() == "M\n"
    assert (got / "makefile").read_text() == "m\n"
    assert os.readlink(got / "d" / "A") == ".."
    assert (got / "d" / "a" / "x").read_text() == "x\n"
    assert not list(tmp_path.glob(".potluck-cp.*"))


@pytest.mark.slow
async def test_hostds_sftp_follows_hostile_links_and_fifos_only_inside_the_container(
    files: Gatewayed, tmp_path: Path
) -> None:
    """Tried, through hostd's own SFTP (the busybox image, no sftp-server): links planted in the
    container to a directory of the member's machine (absolute), to /proc/1/root and to
    `../../../../../..`; a put, a rename and a symlink made through them; a get of the
    container's /etc/passwd through /proc/1/root and through a link sftp made; `cd` up the
    `..` chain.
    Must hold: the member's directory stays empty and the member's /tmp gets nothing; what
    lands, lands in the container (at its /tmp through the `..` chain); what comes back is the
    container's file; `..` ends at the container's /."""
    members = tmp_path / "members-dir"
    members.mkdir()
    name = f"escaped-{os.getpid()}-{id(members)}"
    local = tmp_path / "local.txt"
    local.write_text("from the user\n")
    alloc_id = await busybox_with(
        files,
        f"ln -s {members} /root/hostdir && ln -s /proc/1/root /root/p1 && "
        "ln -s ../../../../../.. /root/up && echo kept > /root/kept",
    )
    batch = (
        f"-put {local} /root/hostdir/planted\n"
        f"-rename /root/kept /root/hostdir/renamed\n"
        f"-symlink /etc/passwd /root/hostdir/link\n"
        f"put {local} /root/up/tmp/{name}\n"
        f"get /root/p1/etc/passwd {tmp_path / 'p1-passwd'}\n"
        f"symlink /etc/passwd /root/made\n"
        f"get /root/made {tmp_path / 'made-passwd'}\n"
        "cd /root/up\n"
        "pwd\n"
    )
    done = await sftp(files, alloc_id, batch)
    assert done.returncode == 0, done.stderr
    assert "Remote working directory: /\n" in done.stdout, done.stdout
    assert os.listdir(members) == []
    assert not Path("/tmp", name).exists()
    inside = await files.ssh(alloc_id, f"cat /tmp/{name} /root/kept /etc/passwd")
    assert inside.returncode == 0, inside.stderr
    passwd = inside.stdout.split("kept\n", 1)[1]
    assert inside.stdout.startswith("from the user\nkept\n"), inside.stdout
    assert (tmp_path / "p1-passwd").read_text() == passwd
    assert (tmp_path / "made-passwd").read_text() == passwd
    assert passwd != Path("/etc/passwd").read_text()


@pytest.mark.slow
async def test_potluck_cp_out_of_a_running_allocation_reads_inside_it_and_ends_on_devices_and_fifos(
    files: Gatewayed, tmp_path: Path
) -> None:
    """Tried: `potluck cp` out of a running busybox allocation (read by tar inside the
    container) of /dev/zero, of a FIFO nobody writes to, of a folder holding a link to the
    container's / , of `LINK/` (a link to a folder, with a trailing `/`) and of `LINK/.`, and of
    a file named `-x` with a newline in its folder's name.
    Must hold: the device, the FIFO and the folder with the link out end (nothing waits on the
    FIFO) with a non-zero exit naming the entry, and nothing of them lands here; `LINK/` is
    refused saying to ask for `LINK/.`, which copies what the folder holds; the odd names land
    with their content."""
    alloc_id = await busybox_with(
        files,
        'mkfifo /root/fifo && mkdir -p /root/out /root/real "/root/new\nline" && ln -s / /root/out/root '
        '&& echo real > /root/real/f && ln -s real /root/lnk && echo dash > "/root/new\nline/-x"',
    )
    env = logged_in(files, tmp_path)

    def cp_out(path: str, dst: Path) -> subprocess.CompletedProcess[str]:
        return potluck("cp", "-i", str(files.key), f"{alloc_id}:{path}", str(dst), env=env)

    for path in ("/dev/zero", "/root/fifo", "/root/out"):
        dst = tmp_path / f"got-{path.rsplit('/', 1)[1]}"
        done = await asyncio.to_thread(cp_out, path, dst)
        assert done.returncode != 0, (path, done.stdout)
        assert "refused" in done.stderr, (path, done.stderr)
        assert not dst.exists(), path
    linked = await asyncio.to_thread(cp_out, "/root/lnk/", tmp_path / "lnk")
    assert linked.returncode != 0
    assert "/root/lnk/: a link to a directory: ask for /root/lnk/." in linked.stderr, linked.stderr
    held = await asyncio.to_thread(cp_out, "/root/lnk/.", tmp_path / "held")
    assert held.returncode == 0, held.stderr
    assert (tmp_path / "held" / "f").read_text() == "real\n"
    odd = await asyncio.to_thread(cp_out, "/root/new\nline", tmp_path / "odd")
    assert odd.returncode == 0, odd.stderr
    assert (tmp_path / "odd" / "-x").read_text() == "dash\n"
