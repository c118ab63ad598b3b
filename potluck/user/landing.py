"""Where `potluck cp ALLOC:PATH LOCAL` puts what it fetched: docker cp's rules, all or nothing.

The source, as `docker cp` reads it: PATH is taken from the container's `/`,
its `..` resolved by name (`/out/sub/..` is `/out`, as the engine resolves
it too), and a last `.` (`/out/.`, `/out/./`, `/out//.`) means the contents
of that directory, not the directory itself. `/` is always its contents (it
has no name). The engine is asked for the cleaned path, so the tar's top entry
has a name known beforehand (`out`, or `.` for contents); tar_guard holds
every entry to it.

The destination, as `docker cp` documents it; everything lands under the
path the user named, never beside it:

- a file: into DST when DST is a directory (as DST/NAME); over DST when DST is
  a file; as DST when DST does not exist (its parent must; a DST ending in `/`
  that does not exist is an error, as a file cannot make a directory);
- a directory: into DST when DST is a directory (as DST/NAME); as DST when DST
  does not exist (its parent must); an error when DST is a file;
- a directory's contents (`PATH/.`): into DST when DST is a directory, else
  as for a directory.

Into an existing directory, what is there merges as `docker cp` merges it:
directories into directories, a file over a file or a link; a directory over a
file, or a file over a directory, is an error.

All or nothing: the stream is unpacked into a new temporary directory
(`.potluck-cp.*`, inside the target directory when the copy merges into one,
beside the target otherwise, so on the same filesystem), every entry checked
before it is written. Only when the whole stream arrived, was accepted, and
the far end said it succeeded, is it moved into place: one rename when the
target did not exist, else a check of every clash first and then renames,
entry by entry. A refused entry, a broken stream or a failure at the far end
leave the destination as it was; the temporary directory is removed in every
case. (A rename failing midway through a merge, which needs an error of the
filesystem itself, can leave the merge half done.)
"""

import os
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from potluck.user.tar_guard import EntryGuard, Refused

__all__ = ["Landing", "NotPlaced", "Source", "folds_names"]

_TOP = "copy"  # the top's name inside the temporary directory


class NotPlaced(Exception):
    """The copy cannot land where it was asked to (docker cp's error cases); `usage` when the
    user's arguments alone say so."""

    def __init__(self, message: str, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


@dataclass(frozen=True)
class Source:
    """A path in the container, cleaned: `request` is what the engine is asked for, `top` the
    name its tar's top entry has ("" for the contents of a directory: the engine's `.`)."""

    request: str
    top: str
    contents: bool

    @classmethod
    def parse(cls, path: str) -> "Source":
        parts: list[str] = []
        for part in path.split("/"):
            if part == "..":
                if parts:
                    parts.pop()
            elif part not in ("", "."):
                parts.append(part)
        last = path.rstrip("/").rpartition("/")[2]
        if not parts or last == ".":
            return cls("/" + "/".join([*parts, "."]), "", True)
        # A trailing `/` still says "a directory": the engine refuses a file then.
        return cls("/" + "/".join(parts) + ("/" if path.endswith("/") else ""), parts[-1], False)


def folds_names(directory: Path) -> bool:
    """Whether the filesystem of `directory` (empty, ours) takes two spellings of a name for one
    file: another case (macOS's and Windows' default), or another Unicode normalisation
    (macOS's). tar_guard then compares names folded; so it does when it cannot tell."""
    try:
        for made, other in (
            ("potluck-probe-a", "POTLUCK-PROBE-A"),
            ("potluck-probe-\u00e9", "potluck-probe-e\u0301"),
        ):
            probe = directory / made
            probe.touch()
            try:
                if os.path.lexists(directory / other):
                    return True
            finally:
                probe.unlink()
    except (OSError, UnicodeError):
        return True
    return False


def _is_dir(path: Path) -> bool:
    """A real directory (not a link to one)."""
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except FileNotFoundError:
        return False


class Landing:
    """One download's way in: `unpack` a tar, then `place` it; `close` always."""

    def __init__(self, source: Source, target: Path, asserts_dir: bool) -> None:
        self.source = source
        self.shown = target
        dst = Path(os.path.realpath(target)) if target.is_symlink() else target
        if dst.is_dir():
            self.final = dst if source.contents else dst / source.top
        else:
            parent = dst.parent if str(dst.parent) else Path(".")
            if not parent.is_dir():
                raise NotPlaced(f"{parent}: no such directory here", usage=True)
            self.final = dst
        self.asserts_dir = asserts_dir and not dst.exists()
        self.merge = _is_dir(self.final)
        beside = self.final if self.merge else self.final.parent
        self.tmp = Path(tempfile.mkdtemp(prefix=".potluck-cp.", dir=beside))
        self.guard = EntryGuard(source.top, fold=folds_names(self.tmp))
        self.directories: list[tarfile.TarInfo] = []

    def unpack(self, tar: tarfile.TarFile) -> None:
        """Every entry checked (tar_guard.Refused names the first that is not) and written under
        the temporary directory, tarfile's `data` filter as a second line."""
        for member in tar:
            name = member.name
            checked = self.guard.check(member)
            if member.islnk() and checked.link_rel is not None:
                member.linkname = _under(checked.link_rel)
            member.name = _under(checked.rel)
            if checked.rel == "":
                self._top_fits(member)
            try:
                tar.extract(member, path=self.tmp, set_attrs=not member.isdir(), filter="data")
            except tarfile.FilterError as exc:
                raise Refused(name, f"was refused by tarfile's data filter ({exc})") from exc
            if member.isdir():
                self.directories.append(member)
        if self.guard.top_is_dir is None:
            raise NotPlaced("the archive had no entries")
        # Directories' times last, deepest first, as tarfile's extractall does.
        for member in sorted(self.directories, key=lambda m: m.name, reverse=True):
            os.utime(self.tmp / member.name, (member.mtime, member.mtime))

    def _top_fits(self, top: tarfile.TarInfo) -> None:
        what = self.source.request.removesuffix("/.").rstrip("/") or "/"
        if self.source.contents and not top.isdir():
            raise NotPlaced(f"{what} is not a directory: `PATH/.` copies a directory's contents")
        if not top.isdir() and self.asserts_dir:
            raise NotPlaced(f"{self.shown}: no such directory here (a file cannot make one)", usage=True)
        if os.path.lexists(self.final) and not self.merge and top.isdir():
            raise NotPlaced(f"{self.final}: cannot copy a directory ({what}) over a file or link")
        if self.merge and not top.isdir():
            raise NotPlaced(f"{self.final}: cannot copy a file ({what}) over a directory")

    def place(self) -> None:
        """Moves what was unpacked into place: all clashes are checked before anything moves."""
        top = self.tmp / _TOP
        clashes = list(self._clashes(top, self.final))
        if clashes:
            raise NotPlaced(f"nothing was copied: {'; '.join(clashes[:5])}")
        self._move(top, self.final)

    def _clashes(self, src: Path, dst: Path) -> "list[str]":
        if not os.path.lexists(dst):
            return []
        src_dir, dst_dir = _is_dir(src), _is_dir(dst)
        if src_dir and dst_dir:
            found = []
            for child in sorted(os.listdir(src)):
                if dst / child == self.tmp:
                    found.append(f"{dst / child}: the copy's own temporary directory")
                    continue
                found.extend(self._clashes(src / child, dst / child))
            return found
        if src_dir != dst_dir:
            there, copied = ("a directory", "a file") if dst_dir else ("a file", "a directory")
            return [f"{dst}: cannot overwrite {there} with {copied}"]
        return []

    def _move(self, src: Path, dst: Path) -> None:
        if _is_dir(src) and _is_dir(dst):
            for child in os.listdir(src):
                self._move(src / child, dst / child)
            return
        os.replace(src, dst)

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _under(rel: str) -> str:
    return f"{_TOP}/{rel}" if rel else _TOP
