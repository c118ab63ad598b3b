"""`potluck cp SRC DST`: files and directories into and out of an allocation, through the gateway.

One side is `ALLOC:PATH` (as `docker cp` and `kubectl cp` write it), the
other a local path. The copy is a tar stream over one exec session of the
user's own `ssh` (the same invocation as `potluck ssh`: their key, Potluck's
known_hosts; remote.py), audited like any session. Into an allocation, it
needs nothing in the image but `sh` and `tar` (busybox has both), and the
container's own tar writes the files, as the container's user. Out of one,
hostd reads the files from the engine itself (the reserved command
`potluck-archive get PATH`, the tar `docker cp` reads), so that a download
works on a running container and on an ended one whose container is kept
(`--keep-for`: its results); an upload into a kept container is refused.
A copy larger than the allocation's disk bound is refused before anything
is sent; one that fits the bound but not what is left of it fails where the
engine bounds the disk (hostd's guard otherwise).

Where things land, as with `docker cp`: into DST when DST is an existing
directory, else as DST (its parent must exist). The local side packs and
unpacks with Python's tarfile, unpacking with its `data` filter, so that a
stream from the container cannot write outside DST (no absolute paths, no
`..`, no links out, no device files).

A progress bar (bytes, rate) goes to stderr when it is a terminal, nothing
when it is not. Exit codes: 0 copied, 1 the copy failed (the reason is
printed: no such path, disk full, ...), 2 wrong usage, 255 ssh could not
reach the allocation (ssh's own code).
"""

import os
import re
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

import click
from rich.console import Console
from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

from potluck.user.client import ClientError, ExitCode
from potluck.user.remote import IDENTITY, allocation, readable, ssh_command, ssh_script

__all__ = ["Local", "Remote", "cp", "parse_endpoint"]

_ALLOC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")
CHUNK = 1 << 20
err = Console(stderr=True)

# $1: DST in the container, $2: the name the stream's top entry has.
_RECEIVE = r"""
dst=$1; name=$2
if [ -d "$dst" ]; then cd "$dst" && exec tar -x -f -; exit 1; fi
case $dst in */) echo "potluck: $dst: no such directory in the allocation" >&2; exit 2;; esac
parent=$(dirname -- "$dst")
if [ ! -d "$parent" ]; then echo "potluck: $parent: no such directory in the allocation" >&2; exit 2; fi
tmp=$(mktemp -d "$parent/.potluck-cp.XXXXXX") || exit 1
if (cd "$tmp" && tar -x -f -) && mv -f "$tmp/$name" "$dst"; then rmdir "$tmp"; exit 0; fi
rm -rf "$tmp"; exit 1
"""


@dataclass(frozen=True)
class Remote:
    alloc_id: str
    path: str


@dataclass(frozen=True)
class Local:
    path: Path


def parse_endpoint(value: str) -> Remote | Local:
    """`ALLOC:PATH` is in an allocation; a path with no colon, or starting with `/` or `.`, is here."""
    alloc_id, sep, path = value.partition(":")
    if not sep or value.startswith(("/", ".")) or not _ALLOC.fullmatch(alloc_id):
        return Local(Path(value))
    if not path:
        raise click.BadParameter(f"{value!r}: give a path after the colon, e.g. {alloc_id}:/data")
    return Remote(alloc_id, path)


class _Meter:
    """Counts bytes through the copy and shows them on a terminal (nothing when piped)."""

    def __init__(self, description: str, total: int | None) -> None:
        self.progress: Progress | None = None
        if sys.stderr.isatty():
            self.progress = Progress(
                *Progress.get_default_columns()[:3], DownloadColumn(), TransferSpeedColumn(), console=err
            )
            self.task = self.progress.add_task(description, total=total)
        self.count = 0

    def __enter__(self) -> "_Meter":
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def add(self, n: int) -> None:
        self.count += n
        if self.progress is not None:
            self.progress.update(self.task, advance=n)


class _CountingWriter:
    def __init__(self, sink: IO[bytes], meter: _Meter) -> None:
        self.sink, self.meter = sink, meter

    def write(self, data: bytes) -> int:
        self.sink.write(data)
        self.meter.add(len(data))
        return len(data)


class _CountingReader:
    def __init__(self, source: IO[bytes], meter: _Meter) -> None:
        self.source, self.meter = source, meter

    def read(self, n: int = -1) -> bytes:
        data = self.source.read(n)
        self.meter.add(len(data))
        return data


def _size(path: Path) -> int:
    if not path.is_dir():
        return path.lstat().st_size
    return sum((Path(d) / f).lstat().st_size for d, _, files in os.walk(path) for f in files)


def _stderr_reader(proc: "subprocess.Popen[bytes]") -> tuple[threading.Thread, list[bytes]]:
    chunks: list[bytes] = []

    def drain() -> None:
        assert proc.stderr is not None
        for line in iter(proc.stderr.readline, b""):
            chunks.append(line)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    return thread, chunks


class CopyFailed(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _finish(
    proc: "subprocess.Popen[bytes]", reader: threading.Thread, errors: list[bytes], what: str
) -> None:
    status = proc.wait()
    reader.join(timeout=5)
    if status == 0:
        return
    said = "; ".join(
        line.strip().removeprefix("potluck: ")
        for line in b"".join(errors).decode(errors="replace").splitlines()
        if line.strip()
    )
    if status == 255:
        raise CopyFailed(f"{what}: ssh could not reach the allocation: {said or 'no reason given'}", 255)
    raise CopyFailed(f"{what} failed: {said or f'exit status {status}'}", int(ExitCode.REFUSED))


def _disk_bound(alloc_id: str) -> int:
    """The allocation's disk bound, from the allocator (which also says if it does not exist);
    CopyFailed if it runs no more (an ended one's kept container is for reading only)."""
    found = allocation(alloc_id)
    if found["state"] not in ("running", "pending", "placed", "pulling"):
        kept = found.get("kept_until")
        why = (
            f"its stopped container is kept until {kept} for its results, read-only: "
            f"`potluck cp {alloc_id}:PATH .` fetches them"
            if kept
            else "its container was removed"
        )
        raise CopyFailed(
            f"allocation {alloc_id} is {found['state']}: nothing can be copied into it; {why}",
            int(ExitCode.REFUSED),
        )
    return int(found["disk"])


def upload(source: Path, target: Remote, identity: str | None) -> int:
    """Send `source` (file or directory) to `target`; the bytes of tar stream sent."""
    if not source.exists() and not source.is_symlink():
        raise CopyFailed(f"{source}: no such file or directory here", int(ExitCode.USAGE))
    name = source.resolve().name if source.name in ("", ".", "..") else source.name
    size = _size(source)
    bound = _disk_bound(target.alloc_id)
    if size > bound:
        raise CopyFailed(
            f"{source} is {size} bytes, more than the disk bound of allocation {target.alloc_id} "
            f"({bound} bytes): nothing was copied; ask for more disk (`potluck alloc create --disk`)",
            int(ExitCode.REFUSED),
        )
    argv = ssh_script(target.alloc_id, identity, _RECEIVE, target.path, name)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    reader, errors = _stderr_reader(proc)
    assert proc.stdin is not None
    with _Meter(f"{source} -> {target.alloc_id}:{target.path}", size) as meter:
        try:
            sink = _CountingWriter(proc.stdin, meter)
            with tarfile.open(fileobj=sink, mode="w|", bufsize=CHUNK, copybufsize=CHUNK) as tar:  # type: ignore[call-overload]
                tar.add(str(source), arcname=name)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the far end gave up: its reason is on stderr, its status below
        except OSError as exc:
            proc.kill()
            raise CopyFailed(f"reading {source}: {exc}", int(ExitCode.REFUSED)) from exc
        _finish(proc, reader, errors, f"copying {source} to {target.alloc_id}:{target.path}")
        return meter.count


def _renamed(members: Iterator[tarfile.TarInfo], old: str, new: str) -> Iterator[tarfile.TarInfo]:
    """The stream's entries with the top entry `old` named `new` (DST did not exist)."""
    for member in members:
        if member.name == old or member.name.startswith(old + "/"):
            member.name = new + member.name[len(old) :]
        yield member


def download(source: Remote, target: Path, identity: str | None) -> int:
    """Fetch `source` (file or directory) to `target`; the bytes of tar stream received."""
    name = PurePosixPath(source.path).name or source.path.strip("/") or "root"
    if target.is_dir():
        into, new_name = target, name
    else:
        into, new_name = target.parent if str(target.parent) else Path("."), target.name
        if str(target).endswith(os.sep) or not into.is_dir():
            raise CopyFailed(f"{into}: no such directory here", int(ExitCode.USAGE))
    readable(source.alloc_id)
    argv = ssh_command(source.alloc_id, identity, ["potluck-archive", "get", source.path])
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader, errors = _stderr_reader(proc)
    assert proc.stdout is not None
    what = f"copying {source.alloc_id}:{source.path} to {target}"
    skipped: list[str] = []
    with _Meter(f"{source.alloc_id}:{source.path} -> {target}", None) as meter:
        try:
            stream = _CountingReader(proc.stdout, meter)
            with tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK, copybufsize=CHUNK) as tar:  # type: ignore[call-overload]
                for member in _renamed(iter(tar), name, new_name):
                    try:
                        tar.extract(member, path=into, filter="data")
                    except tarfile.FilterError as exc:
                        # An absolute or outward link, or a device: never written here.
                        skipped.append(f"{member.name} ({exc})")
        except tarfile.ReadError as exc:
            _finish(proc, reader, errors, what)  # the far end's reason first, if it has one
            raise CopyFailed(f"{what} failed: the stream was not a tar archive ({exc})", 1) from exc
        except OSError as exc:
            proc.kill()
            raise CopyFailed(f"{what} failed: {exc}", int(ExitCode.REFUSED)) from exc
        _finish(proc, reader, errors, what)
    if skipped:
        raise CopyFailed(
            f"{what}: copied all but {len(skipped)} entries that would point or lie outside {target} "
            f"(links to absolute paths or out of the copy, devices): {'; '.join(skipped[:5])}",
            int(ExitCode.REFUSED),
        )
    return meter.count


def copy(src: str, dst: str, identity: str | None) -> int:
    """Copy between here and an allocation; bytes moved. Raises CopyFailed or click.UsageError."""
    source, target = parse_endpoint(src), parse_endpoint(dst)
    if isinstance(source, Local) and isinstance(target, Remote):
        return upload(source.path, target, identity)
    if isinstance(source, Remote) and isinstance(target, Local):
        return download(source, target.path, identity)
    raise click.UsageError(
        "one side must be ALLOC:PATH and the other a local path, e.g. `potluck cp data.csv ALLOC:/data`"
    )


@click.command()
@click.argument("src")
@click.argument("dst")
@IDENTITY
def cp(src: str, dst: str, identity: str | None) -> None:
    """Copy files or directories between here and an allocation: one of SRC and DST is ALLOC:PATH.

    \b
    potluck cp results.csv ALLOC:/data/       into /data
    potluck cp ALLOC:/data/out ./out          a directory, here as ./out
    """
    try:
        copy(src, dst, identity)
    except ClientError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(int(exc.code))
    except CopyFailed as exc:
        # soft_wrap: a message is one line, whole, for scripts that grep it.
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.code)
