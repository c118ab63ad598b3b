"""What an entry of a downloaded tar may be, checked before it is written: pure, no files.

`potluck cp ALLOC:PATH LOCAL` unpacks a tar that the Docker engine makes, but
that passes through hostd on a member's machine: a member could send any tar.
tarfile's `data` filter alone does not hold against that on every Python
(CVE-2025-4517, -4138, -4330: realpath giving up on long nested names through
symlinks, fixed in 3.11.13 and 3.12.11), so each entry is checked here first,
on its names alone, and the filter stays as a second line.

The rules (an entry failing one is Refused, naming it and why):

- Its name, with `.` and empty components dropped (`./a//b` is `a/b`), is the
  expected top (`out`, or the empty name for "the contents of", the engine's
  `.`) or lies under it. No absolute name, no `..` component. The first entry
  is the top itself; nothing lies under a top that is not a directory.
- No name twice, and no entry lies under an earlier entry that is not a
  directory (a symlink, a file, a hard link): nothing is written through a
  link the archive made. A name that is implicitly a directory (something
  lay under it) may later only be a directory.
- A symbolic link's target is relative, made of `..` components first and
  names after (`../../lib/x`, not `a/../../x`: where a `..` after a name leads
  depends on whether that name is itself a link, which the archive may decide
  later), and its leading `..` stay inside the copy: from `out/a/l`, at most
  one. Every directory on an entry's path is a real one (rule above), so each
  link, however chained, resolves inside the copy. A link at the top itself
  would point beside the copy and is refused.
- A hard link's target is a regular file (or a hard link to one) that came
  earlier in the same archive, under the same top.
- Directories, regular files and these links only: devices, fifos and
  anything else are refused.

On a destination whose filesystem folds names (macOS's and Windows' by
default: `A` and `a` are one file there, and so are a name's NFC and NFD
spellings), names are compared folded (`fold=True`: NFC, then casefold), so
that two spellings of one name are one entry for every rule above: else `A`,
a link, and `a/...` the directories the rules take for real ones, would go
through it, and a link's `..` would climb from a place other than the one
checked (out of the copy).

The checked entry comes back as its path relative to the top (`""` for the
top), and a hard link's target the same way, so the caller renames both alike.
"""

import tarfile
import unicodedata
from dataclasses import dataclass

__all__ = ["Checked", "EntryGuard", "Refused", "archive_name", "link_target"]


class Refused(Exception):
    """An entry that is not written; `entry` is its name as the archive gives it."""

    def __init__(self, entry: str, reason: str) -> None:
        super().__init__(f"{entry!r} {reason}")
        self.entry = entry
        self.reason = reason


@dataclass(frozen=True)
class Checked:
    rel: str  # the entry's path under the top, "" for the top
    link_rel: str | None = None  # a hard link's target, the same way


def archive_name(name: str) -> tuple[str, ...]:
    """An archive path's components, `.` and empty ones dropped; ValueError on an absolute path
    or a `..` component."""
    if name.startswith("/"):
        raise ValueError("is an absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise ValueError("has a `..` component")
    return parts


def link_target(depth: int, target: str) -> None:
    """ValueError unless a symbolic link `depth` directories below the top, pointing at `target`,
    stays inside the copy whatever its names turn out to be (see the module's rules)."""
    if not target:
        raise ValueError("is a symbolic link with an empty target")
    if target.startswith("/"):
        raise ValueError(f"is a symbolic link to an absolute path ({target}), outside the copy")
    parts = [p for p in target.split("/") if p not in ("", ".")]
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    if ".." in parts[ups:]:
        raise ValueError(
            f"is a symbolic link to {target}, with `..` after a name: where it leads depends on what "
            "that name is, so it is not followed"
        )
    if ups > depth:
        raise ValueError(f"is a symbolic link to {target}, which points out of the copy")


class EntryGuard:
    """Checks the entries of one archive in order; `top` is the name the archive's top entry
    must have ("" for the engine's `.`)."""

    def __init__(self, top: str, fold: bool = False) -> None:
        self.fold = fold
        self.top = self._key(archive_name(top))
        self.seen: dict[tuple[str, ...], bytes] = {}  # entry -> its type, as checked
        self.implicit: set[tuple[str, ...]] = set()  # directories something lay under
        self.top_is_dir: bool | None = None

    def check(self, member: tarfile.TarInfo) -> Checked:
        """The entry's place under the top; Refused (naming the entry) when it may not be written."""
        name = member.name
        try:
            spelled = archive_name(name)
        except ValueError as exc:
            raise Refused(name, str(exc)) from None
        parts = self._key(spelled)
        rel = spelled[len(self.top) :]
        self._under_top(name, parts)
        if self.top_is_dir is None:
            if rel:
                raise Refused(name, "comes before the top entry of the copy")
            self.top_is_dir = member.isdir()
        elif not self.top_is_dir:
            raise Refused(name, "follows a top entry that is not a directory")
        if parts in self.seen:
            raise Refused(name, "appears twice in the archive")
        for n in range(len(self.top) + 1, len(parts)):
            kind = self.seen.get(parts[:n])
            if kind is not None and kind != tarfile.DIRTYPE:
                made = "/".join(spelled[:n])
                raise Refused(name, f"lies under {made!r}, which the archive made a {_KINDS[kind]}")
        if parts in self.implicit and not member.isdir():
            raise Refused(name, "would replace a directory the archive already filled")
        checked = self._by_type(member, name, rel)
        self.seen[parts] = _kind(member)
        self.implicit.update(parts[:n] for n in range(len(self.top) + 1, len(parts)))
        return checked

    def _key(self, parts: tuple[str, ...]) -> tuple[str, ...]:
        """The components as the destination's filesystem tells names apart."""
        if not self.fold:
            return parts
        return tuple(unicodedata.normalize("NFC", p).casefold() for p in parts)

    def _under_top(self, name: str, parts: tuple[str, ...]) -> None:
        if parts[: len(self.top)] != self.top:
            expected = "/".join(self.top) or "."
            raise Refused(name, f"lies outside {expected!r}, the path asked for")

    def _by_type(self, member: tarfile.TarInfo, name: str, rel: tuple[str, ...]) -> Checked:
        if member.isdir() or member.isreg():
            return Checked("/".join(rel))
        if member.issym():
            if not rel:
                why = "at the top: it would point beside the copy"
                raise Refused(name, f"is a symbolic link to {member.linkname} {why}")
            try:
                link_target(len(rel) - 1, member.linkname)
            except ValueError as exc:
                raise Refused(name, str(exc)) from None
            return Checked("/".join(rel))
        if member.islnk():
            return Checked("/".join(rel), self._hard_link(member, name))
        device = member.ischr() or member.isblk()
        what = "a fifo" if member.isfifo() else "a device" if device else "of a type"
        raise Refused(name, f"is {what} that is never copied (only files, directories and links are)")

    def _hard_link(self, member: tarfile.TarInfo, name: str) -> str:
        target = member.linkname
        try:
            spelled = archive_name(target)
        except ValueError as exc:
            raise Refused(name, f"is a hard link to {target!r}, which {exc}") from None
        parts = self._key(spelled)
        is_file = self.seen.get(parts) in (tarfile.REGTYPE, tarfile.LNKTYPE)
        if parts[: len(self.top)] != self.top or not is_file:
            why = "not a regular file copied before it in this archive"
            raise Refused(name, f"is a hard link to {target!r}, {why}")
        return "/".join(spelled[len(self.top) :])


def _kind(member: tarfile.TarInfo) -> bytes:
    if member.isdir():
        return tarfile.DIRTYPE
    return tarfile.REGTYPE if member.isreg() else member.type


_KINDS = {tarfile.REGTYPE: "file", tarfile.SYMTYPE: "symbolic link", tarfile.LNKTYPE: "hard link"}
