"""`potluck cp ALLOC:PATH LOCAL` on crafted streams: where a download lands (docker cp's rules)
and which tar entries it refuses (potluck/user/copy.py, landing.py, tar_guard.py).

`copy()` runs whole, with its ssh session replaced by `cat` of a tar written here: either the
tar the Docker engine's archive API makes of a folder standing for the container (`engine_tar`,
which names entries as the engine does: `out/...`, or `./...` for `PATH/.`), or a hostile one
crafted entry by entry. Each test checks what is on disk afterwards, beside the destination too.
"""

import io
import os
import posixpath
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

import potluck.user.copy as copy_module
import potluck.user.landing as landing_module
from potluck.user.copy import CopyFailed, copy
from potluck.user.landing import folds_names

Serve = Callable[[bytes], list[str]]


def engine_tar(root: Path, request: str) -> bytes:
    """What the engine's archive API sends for `request` in a container whose `/` is `root`:
    the path cleaned by name; a last `.` names the entries `.` and `./...`."""
    contents = request.rstrip("/").rpartition("/")[2] == "."
    path = posixpath.normpath("/" + request)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(root / path.lstrip("/")), arcname="." if contents else posixpath.basename(path))
    return buf.getvalue()


def crafted(*entries: tuple[str, str, str]) -> bytes:
    """A tar of (name, kind, data): kind `file` (data: content), `dir`, `sym` or `hard` (data:
    the target), `fifo`, `chr`."""
    types = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE}
    types |= {"fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE, "file": tarfile.REGTYPE}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.type = types[kind]
            info.mode = 0o755 if kind == "dir" else 0o644
            if kind in ("sym", "hard"):
                info.linkname = data
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data.encode()))
            else:
                tar.addfile(info)
    return buf.getvalue()


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Serve:
    """serve(tar): the next download receives `tar`; returns the list the paths asked for go to."""
    asked: list[str] = []
    stream = tmp_path / "stream.tar"

    def ssh_command(alloc_id: str, identity: str | None, argv: list[str]) -> list[str]:
        asked.append(argv[-1])
        return ["cat", str(stream)]

    def serving(data: bytes) -> list[str]:
        stream.write_bytes(data)
        return asked

    monkeypatch.setattr(copy_module, "ssh_command", ssh_command)
    monkeypatch.setattr(copy_module, "readable", lambda alloc_id: None)
    return serving


@pytest.fixture
def container(tmp_path: Path) -> Path:
    """The container's `/`: /out with a git hook, a file, a hard link to it, a relative link to
    it and an empty folder; /tmp/hard with a file and a hard link to it."""
    root = tmp_path / "container"
    (root / "out" / ".git" / "hooks").mkdir(parents=True)
    (root / "out" / ".git" / "hooks" / "post-checkout").write_text("#!/bin/sh\necho pwned\n")
    (root / "out" / "sub").mkdir()
    (root / "out" / "a").write_text("a\n")
    os.link(root / "out" / "a", root / "out" / "b")
    (root / "out" / "l").symlink_to("a")
    (root / "tmp" / "hard").mkdir(parents=True)
    (root / "tmp" / "hard" / "a").write_text("x\n")
    os.link(root / "tmp" / "hard" / "a", root / "tmp" / "hard" / "b")
    return root


@pytest.fixture
def here(tmp_path: Path) -> Path:
    """The user's working directory: a git work tree, empty but for .git."""
    work = tmp_path / "here"
    (work / ".git" / "hooks").mkdir(parents=True)
    return work


def tree(root: Path) -> dict[str, str]:
    """Every path under `root`: file contents, `-> target` for links, `/` for folders."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[rel] = "/"
        else:
            found[rel] = path.read_text(errors="replace")
    return found


OUT = {
    ".git": "/",
    ".git/hooks": "/",
    ".git/hooks/post-checkout": "#!/bin/sh\necho pwned\n",
    "a": "a\n",
    "b": "a\n",
    "l": "-> a",
    "sub": "/",
}


@pytest.mark.parametrize("path", ["/out/.", "/out/./", "/out//.", "out/."])
def test_the_contents_of_a_folder_land_in_the_destination_never_beside_it(
    serve: Serve, container: Path, here: Path, path: str
) -> None:
    """What is tried: `potluck cp ALLOC:/out/. here/results` (and `/out/./`, `/out//.`, a relative
    `out/.`), the engine naming its entries `./...`, /out holding `.git/hooks/post-checkout`.
    What must hold: the engine is asked for `/out/.`; /out's contents are in here/results; the
    git work tree beside it gains nothing (no hook is planted)."""
    asked = serve(engine_tar(container, "/out/."))

    copy(f"a1b2:{path}", str(here / "results"), None)

    assert asked == ["/out/."]
    assert tree(here / "results") == OUT
    assert sorted(p.name for p in here.iterdir()) == [".git", "results"]
    assert list((here / ".git" / "hooks").iterdir()) == []


def test_the_contents_of_a_folder_merge_into_an_existing_destination_all_or_nothing(
    serve: Serve, container: Path, here: Path
) -> None:
    """What is tried: `potluck cp ALLOC:/out/. here/results` when here/results exists with a file
    of its own, an older `a`, and a file `sub` where /out has a folder; then again once that
    `sub` is gone. What must hold: the first copy exits 1 naming the clash and leaves results
    exactly as it was (no `a` replaced, nothing added); the second merges (its own file kept,
    `a` replaced); nothing lands beside results and no temporary folder is left."""
    results = here / "results"
    results.mkdir()
    (results / "mine.txt").write_text("mine\n")
    (results / "a").write_text("old\n")
    (results / "sub").write_text("a file\n")
    serve(engine_tar(container, "/out/."))

    with pytest.raises(CopyFailed, match="cannot overwrite a file with a directory") as failed:
        copy("a1b2:/out/.", str(results), None)

    assert failed.value.code == 1
    assert tree(results) == {"a": "old\n", "mine.txt": "mine\n", "sub": "a file\n"}
    (results / "sub").unlink()
    copy("a1b2:/out/.", str(results), None)
    assert tree(results) == {**OUT, "mine.txt": "mine\n"}
    assert sorted(p.name for p in here.iterdir()) == [".git", "results"]


def test_dot_dot_in_the_source_is_resolved_by_name_and_lands_as_the_destination(
    serve: Serve, container: Path, here: Path
) -> None:
    """What is tried: `potluck cp ALLOC:/out/sub/.. here/results` (results does not exist). What
    must hold: as docker cp, the engine is asked for `/out` and /out lands as here/results,
    not as here/out."""
    asked = serve(engine_tar(container, "/out"))

    copy("a1b2:/out/sub/..", str(here / "results"), None)

    assert asked == ["/out"]
    assert tree(here / "results") == OUT
    assert sorted(p.name for p in here.iterdir()) == [".git", "results"]


def test_hard_links_are_renamed_with_their_target(serve: Serve, container: Path, here: Path) -> None:
    """What is tried: `potluck cp ALLOC:/tmp/hard here/z1` where /tmp/hard/b is a hard link to
    /tmp/hard/a, so the stream's `hard/b` links to `hard/a`. What must hold: no error; z1/a and
    z1/b are one file (one inode) with its content."""
    serve(engine_tar(container, "/tmp/hard"))

    copy("a1b2:/tmp/hard", str(here / "z1"), None)

    assert tree(here / "z1") == {"a": "x\n", "b": "x\n"}
    assert (here / "z1" / "a").stat().st_ino == (here / "z1" / "b").stat().st_ino


def test_a_folder_onto_an_existing_file_is_refused_and_the_file_kept(
    serve: Serve, container: Path, here: Path
) -> None:
    """What is tried: `potluck cp ALLOC:/out here/results` where here/results is a file. What
    must hold: as docker cp, exit code 1 saying a directory cannot go over a file; the file is
    as it was and nothing else is written here."""
    (here / "results").write_text("keep\n")
    serve(engine_tar(container, "/out"))

    with pytest.raises(CopyFailed, match="cannot copy a directory") as failed:
        copy("a1b2:/out", str(here / "results"), None)

    assert failed.value.code == 1
    assert (here / "results").read_text() == "keep\n"
    assert sorted(p.name for p in here.iterdir()) == [".git", "results"]


def test_a_stream_that_fails_midway_leaves_nothing(
    serve: Serve, container: Path, here: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What is tried: the far end sends all of /out, then exits with status 3 (the session
    failed). What must hold: exit code 1; neither results nor any temporary folder is here."""
    serve(engine_tar(container, "/out"))
    stream = tmp_path / "stream.tar"
    monkeypatch.setattr(
        copy_module, "ssh_command", lambda *_: ["sh", "-c", f"cat {stream}; echo broken >&2; exit 3"]
    )

    with pytest.raises(CopyFailed, match="broken") as failed:
        copy("a1b2:/out", str(here / "results"), None)

    assert failed.value.code == 1
    assert sorted(p.name for p in here.iterdir()) == [".git"]


def nested_symlink_attack(top: str, dest: Path) -> bytes:
    """CVE-2025-4517's tar (CPython's test_realpath_limit_attack) under `top`: nested long folder
    names, a one-letter link to each, a link whose expansion passes PATH_MAX (so realpath
    stops checking), `escape` through it to the parent, then a hard link and files through
    `escape`."""
    steps = "abcdefghijklmnop"
    max_path = os.pathconf(dest, "PC_PATH_MAX")
    component = "d" * ((max_path - len(str(dest)) - 1) // (len(steps) + 1))
    entries: list[tuple[str, str, str]] = [(top, "dir", "")]
    path = top
    for step in steps:
        entries.append((f"{path}/{component}", "dir", ""))
        entries.append((f"{path}/{step}", "sym", component))
        path = f"{path}/{component}"
    linkpath = top + "/" + "/".join(steps) + "/" + "l" * 254
    entries.append((linkpath, "sym", "/".join([".."] * len(steps))))
    entries.append((f"{top}/escape", "sym", linkpath.removeprefix(top + "/") + "/.."))
    entries.append((f"{top}/flaglink", "hard", f"{top}/escape/flag"))
    entries.append((f"{top}/escape/newfile", "file", "new"))
    return crafted(*entries)


def hostile(*entries: tuple[str, str, str]) -> bytes:
    """A stream for `/out`: its top, a good file, then `entries`."""
    return crafted(("out", "dir", ""), ("out/ok", "file", "ok"), *entries)


REFUSED = [
    pytest.param(hostile(("/etc/evil", "file", "x")), "/etc/evil", id="absolute"),
    pytest.param(hostile(("out/../evil", "file", "x")), "out/../evil", id="dot-dot"),
    pytest.param(hostile(("./evil", "file", "x")), "./evil", id="dot-slash-outside-the-top"),
    pytest.param(hostile(("other/evil", "file", "x")), "other/evil", id="another-top"),
    pytest.param(hostile(("out/l", "sym", "/etc/passwd")), "out/l", id="absolute-link"),
    pytest.param(hostile(("out/l", "sym", "../here/.git")), "out/l", id="link-out"),
    pytest.param(
        hostile(("out/s", "sym", "."), ("out/l", "sym", "s/../evil")), "out/l", id="link-through-a-link"
    ),
    pytest.param(
        hostile(("out/sub", "dir", ""), ("out/d", "sym", "sub"), ("out/d/evil", "file", "x")),
        "out/d/evil",
        id="through-an-archive-link",
    ),
    pytest.param(hostile(("out/h", "hard", "etc/passwd")), "out/h", id="hard-link-outside"),
    pytest.param(hostile(("out/s", "sym", "ok"), ("out/h", "hard", "out/s")), "out/h", id="hard-to-symlink"),
    pytest.param(hostile(("out/f", "fifo", "")), "out/f", id="fifo"),
    pytest.param(hostile(("out/null", "chr", "")), "out/null", id="device"),
    pytest.param(hostile(("out/d", "dir", ""), ("out/d", "sym", "..")), "out/d", id="twice"),
    pytest.param(crafted(("out", "sym", "../here/.git")), "out", id="link-at-the-top"),
]


@pytest.mark.parametrize(("stream", "entry"), REFUSED)
def test_a_hostile_entry_ends_the_copy_naming_it_and_nothing_is_written(
    serve: Serve, here: Path, tmp_path: Path, stream: bytes, entry: str
) -> None:
    """What is tried: a stream for `potluck cp ALLOC:/out here/results` with a good entry and then
    a hostile one: an absolute name, a `..`, a name outside the top `out` (`./`, another top), a
    link to an absolute path or out of the copy, a link whose `..` comes after a link of the
    archive, a file written through a link of the archive, a hard link outside or to a link, a
    fifo, a device, a name twice, a link as the top. What must hold: exit code 1, the error
    names the entry and says it was refused and nothing was copied; nothing is written here or
    anywhere in the test's folder (not even the good entry)."""
    serve(stream)
    before = tree(tmp_path)

    with pytest.raises(CopyFailed) as failed:
        copy("a1b2:/out", str(here / "results"), None)

    assert failed.value.code == 1
    assert f"the entry {entry!r}" in str(failed.value)
    assert "refused" in str(failed.value)
    assert "nothing was copied" in str(failed.value)
    assert tree(tmp_path) == before


def test_a_cve_2025_4517_nested_symlink_tar_is_refused_before_anything_is_written(
    serve: Serve, here: Path, tmp_path: Path
) -> None:
    """What is tried: CVE-2025-4517's tar (nested long folder names with a link to each, whose
    expansion overflows realpath so that tarfile's data filter stops checking on an unfixed
    Python), for `potluck cp ALLOC:/out here/results`. What must hold: exit code 1 naming the
    first entry that goes through a link of the archive; no `newfile` or `flag` anywhere and
    nothing at all written in the test's folder."""
    serve(nested_symlink_attack("out", here))
    before = tree(tmp_path)

    with pytest.raises(CopyFailed) as failed:
        copy("a1b2:/out", str(here / "results"), None)

    assert failed.value.code == 1
    assert "the entry 'out/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/" in str(failed.value)
    assert "which the archive made a symbolic link" in str(failed.value)
    assert tree(tmp_path) == before
    assert not list(tmp_path.parent.glob("**/newfile"))


def test_links_chained_inside_the_copy_are_kept(serve: Serve, here: Path) -> None:
    """What is tried: the contents of a folder (`ALLOC:/out/.`, entries `./...`) with a chain of
    relative links that stays inside: l1 -> l2 -> sub/f, and sub/up -> ../l1. What must hold:
    exit 0; the links are there as sent, and reading through them gives sub/f's content."""
    serve(
        crafted(
            (".", "dir", ""),
            ("./l1", "sym", "l2"),
            ("./l2", "sym", "sub/f"),
            ("./sub", "dir", ""),
            ("./sub/f", "file", "f\n"),
            ("./sub/up", "sym", "../l1"),
        )
    )

    copy("a1b2:/out/.", str(here / "results"), None)

    results = here / "results"
    links = {"l1": "-> l2", "l2": "-> sub/f", "sub/up": "-> ../l1"}
    assert tree(results) == {**links, "sub": "/", "sub/f": "f\n"}
    assert (results / "sub" / "up").read_text() == "f\n"


# Names that a folding filesystem (macOS's, Windows') takes for one: `d/A` a link to `..`, then
# `d/a/...` goes through it there, one level up from where the rules placed it; three levels
# of it climb out of the copy.
FOLDED_ALIASES = [
    pytest.param(
        hostile(("out/d", "dir", ""), ("out/d/A", "sym", ".."), ("out/d/a", "dir", "")),
        "out/d/a",
        id="case",
    ),
    pytest.param(
        hostile(("out/d", "dir", ""), ("out/d/\u00e9", "sym", ".."), ("out/d/e\u0301/x", "file", "x")),
        "out/d/e\u0301/x",
        id="unicode-normalisation",
    ),
]


@pytest.mark.parametrize(("stream", "entry"), FOLDED_ALIASES)
def test_two_spellings_of_a_name_are_one_entry_where_the_filesystem_folds_names(
    serve: Serve, here: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream: bytes, entry: str
) -> None:
    """What is tried: a download, onto a destination whose filesystem folds names (as macOS's
    does: told so here, this machine's does not), of a stream where `out/d/A` is a link to `..`
    and then `out/d/a` is a folder or has a file under it (the same path there, through the
    link), by case and by Unicode normalisation. What must hold: exit code 1 naming the second
    spelling and that it lies under a link or appears twice; nothing written anywhere."""
    monkeypatch.setattr(landing_module, "folds_names", lambda directory: True)
    serve(stream)
    before = tree(tmp_path)

    with pytest.raises(CopyFailed) as failed:
        copy("a1b2:/out", str(here / "results"), None)

    assert failed.value.code == 1
    assert f"the entry {entry!r}" in str(failed.value)
    assert "symbolic link" in str(failed.value) or "appears twice" in str(failed.value)
    assert tree(tmp_path) == before


def test_names_differing_by_case_both_land_where_the_filesystem_tells_them_apart(
    serve: Serve, here: Path, tmp_path: Path
) -> None:
    """What is tried: on this machine's filesystem (which tells `A` from `a`), the probe, then a
    download of a folder holding `Makefile` and `makefile` and a link `d/A -> ..` beside a
    folder `d/a`. What must hold: the probe says it does not fold names, and everything lands
    as it was, each spelling its own entry."""
    assert not folds_names(tmp_path)
    serve(
        crafted(
            ("out", "dir", ""),
            ("out/Makefile", "file", "M"),
            ("out/makefile", "file", "m"),
            ("out/d", "dir", ""),
            ("out/d/A", "sym", ".."),
            ("out/d/a", "dir", ""),
        )
    )

    copy("a1b2:/out", str(here / "results"), None)

    assert tree(here / "results") == {
        "Makefile": "M",
        "makefile": "m",
        "d": "/",
        "d/A": "-> ..",
        "d/a": "/",
    }
