"""The default image's cache in ~/.cache/potluck keeps one build, not every build ever made."""

import fcntl
from pathlib import Path

import pytest

from potluck.localstack.default_image import cache_dir, prune_older_builds

CURRENT = "bookworm-aaaaaaaaaaaa"
OLD = "bookworm-bbbbbbbbbbbb"
BUSY = "bullseye-cccccccccccc"
SUFFIXES = (".tar", ".tar.sha256", ".tar.gz", ".tar.gz.sha256", ".tar.gz.partial", ".lock")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = cache_dir()
    folder.mkdir(parents=True)
    for key in (CURRENT, OLD, BUSY):
        for suffix in SUFFIXES:
            (folder / f"rootfs-{key}{suffix}").write_bytes(b"x" * 2048)
    (folder / "unrelated.txt").write_text("the user's own\n")
    return folder


def test_older_builds_go_the_current_one_a_busy_one_and_other_files_stay(cache: Path) -> None:
    """Tried: pruning after a build of CURRENT, while another process holds BUSY's lock and one
    reads OLD's tarball. Must hold: OLD's files are gone but its lock file (a builder waiting on
    it keeps it), the reader still reads all of it, CURRENT's and BUSY's files and a file not
    of the cache's are untouched, and what was removed is named."""
    said: list[str] = []
    busy_lock, old_tarball = cache / f"rootfs-{BUSY}.lock", cache / f"rootfs-{OLD}.tar"
    with busy_lock.open("a") as busy, old_tarball.open("rb") as reading:
        fcntl.flock(busy, fcntl.LOCK_EX)
        removed = prune_older_builds(CURRENT, said.append)
        assert reading.read() == b"x" * 2048

    assert sorted(p.name for p in removed) == sorted(f"rootfs-{OLD}{s}" for s in SUFFIXES if s != ".lock")
    left = {p.name for p in cache.iterdir()}
    assert {f"rootfs-{key}{s}" for key in (CURRENT, BUSY) for s in SUFFIXES} <= left
    assert f"rootfs-{OLD}.lock" in left
    assert not any(name.startswith(f"rootfs-{OLD}.tar") for name in left)
    assert "unrelated.txt" in left
    assert len(said) == len(removed)
    assert all("older build" in line for line in said)


def test_a_build_left_without_a_lock_file_is_removed_too(cache: Path) -> None:
    """Tried: an older build's tarball with no lock file beside it (as a build killed before its
    lock was written would leave). Must hold: it is removed like any other older build."""
    stray = cache / "rootfs-buster-dddddddddddd.tar"
    stray.write_bytes(b"old")
    prune_older_builds(CURRENT)
    assert not stray.exists()
    assert (cache / f"rootfs-{CURRENT}.tar").exists()


def test_nothing_to_prune_removes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tried: pruning with no cache folder at all. Must hold: nothing removed, no error."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "none"))
    assert prune_older_builds(CURRENT) == []
