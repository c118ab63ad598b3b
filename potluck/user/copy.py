"""`potluck cp SRC DST`: files and directories into and out of an allocation, through the gateway.

One side is `ALLOC:PATH` (as `docker cp` and `kubectl cp` write it), the
other a local path. The copy is a tar stream over one exec session of the
user's own `ssh` (the same invocation as `potluck ssh`: their key, Potluck's
known_hosts; remote.py), audited like any session. Into an allocation, it is
the reserved command `potluck-archive put NEED DST NAME` (hostd's
container_upload.py): it needs nothing in the image but `sh` and `tar`
(busybox has both), and the container's own tar writes the files, as the
container's user, but only once hostd took what the copy needs (NEED) from
what is left of the allocation's disk bound. Out of one,
hostd serves the reserved command `potluck-archive get PATH` (the tar
`docker cp` reads): from a running container, `tar -c` run inside it (as the
container's user, container_archive.py); from an ended one whose container is
kept (`--keep-for`: its results), the engine's archive of its files; an upload
into a kept container is refused.
A copy larger than the allocation's disk bound is refused before anything
is sent; one that fits the bound but not what is left of it is refused by
hostd before any of it reaches the container, saying how much it needs and
how much is left: the allocation runs on, and nothing of the copy is left in
it. What lands is unpacked beside its place and moved there whole (a copy
that fails leaves nothing under the destination's name). A hostd older than
this put runs the same script as a plain exec, without the reservation.

Where things land, as with `docker cp` (landing.py): into DST when DST is an
existing directory, else as DST (its parent must exist); `ALLOC:PATH/.` is the
contents of PATH. A download lands all or nothing: it is unpacked into a
temporary directory next to its place and moved there once the whole stream
arrived. The stream passes through hostd on a member's machine, so every
entry is checked before it is written (tar_guard.py: under the one top name
asked for, no absolute paths, no `..`, nothing through a link of its own, no
links out of the copy, hard links only to its own files, no devices; names
compared as the destination's filesystem compares them), and
tarfile's `data` filter checks it again. A refused entry ends the copy,
naming the entry and why, and nothing is copied.

A progress bar (bytes, rate) goes to stderr when it is a terminal, nothing
when it is not. Exit codes: 0 copied, 1 the copy failed (the reason is
printed: no such path, disk full, ...), 2 wrong usage, 255 ssh could not
reach the allocation (ssh's own code; a key the gateway refused is explained by
potluck.user.refused_key).
"""

import os
import re
import subprocess
import sys
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import click
from rich.console import Console
from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

from potluck.contracts.session_commands import ARCHIVE
from potluck.contracts.uploads import ENTRY_BYTES, RECEIVE, put_command
from potluck.terminal import foreign
from potluck.user.client import ClientError, ExitCode
from potluck.user.landing import Landing, NotPlaced, Source
from potluck.user.refused_key import REFUSED, explain_refusal
from potluck.user.remote import IDENTITY, allocation, readable, ssh_command, ssh_script
from potluck.user.tar_guard import Refused

__all__ = ["Local", "Remote", "cp", "parse_endpoint"]

_ALLOC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")
CHUNK = 1 << 20
err = Console(stderr=True)

#: What a hostd that predates `potluck-archive put` says to it (its usage).
_OLD_HOSTD = "usage: potluck-archive get PATH"


@dataclass(frozen=True)
class Remote:
    alloc_id: str
    path: str


@dataclass(frozen=True)
class Local:
    path: Path


def parse_endpoint(value: str) -> Remote | Local:
    """`ALLOC:PATH` is in an allocation; a path with no colon, or starting with `/` or `.`, is here."""
    if value == "-":
        # docker cp reads `-` as a tar stream on stdin or stdout; taken as a path it wrote a file
        # called `-` in the working directory and said it had copied.
        raise click.BadParameter(
            "`-` (a tar stream on stdin or stdout, as `docker cp` takes it) is not supported: give a "
            "local path (`./-` for a file called -)"
        )
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


def _need(path: Path, size: int) -> int:
    """What the copy of `path` (`size` bytes of files) takes of the allocation's disk, as hostd's
    disk guard counts it: its bytes, and a block for each file, directory and link."""
    entries = 1
    if path.is_dir() and not path.is_symlink():
        entries += sum(len(dirs) + len(files) for _, dirs, files in os.walk(path))
    return size + entries * ENTRY_BYTES


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
    proc: "subprocess.Popen[bytes]",
    reader: threading.Thread,
    errors: list[bytes],
    what: str,
    *,
    alloc_id: str,
    identity: str | None,
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
        hint = ""
        if REFUSED in said:
            raise CopyFailed(f"{what}: {explain_refusal(alloc_id, identity, _admitted(alloc_id), said)}", 255)
        if any(
            cause in said for cause in ("Connection refused", "Connection timed out", "Could not resolve")
        ):
            hint = (
                "; is the SSH gateway there up? `potluck login --gateway` names it (`potluck up` "
                "prints it as `SSH gateway`)"
            )
        raise CopyFailed(
            f"{what}: ssh could not reach the allocation: {said or 'no reason given'}{hint}", 255
        )
    raise CopyFailed(f"{what} failed: {said or f'exit status {status}'}", int(ExitCode.REFUSED))


def _admitted(alloc_id: str) -> list[str] | None:
    """The keys the allocation admits, as the allocator says (None: it could not be asked)."""
    try:
        return list(allocation(alloc_id).get("ssh_keys", []))
    except ClientError:
        return None


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
            f"{source} is {size} bytes, more than allocation {target.alloc_id}'s whole disk "
            f"({bound} bytes): nothing was copied; ask for more disk (`potluck alloc create --disk`)",
            int(ExitCode.REFUSED),
        )
    put = put_command(_need(source, size), target.path, name)
    try:
        return _send(source, name, size, target, identity, ssh_command(target.alloc_id, identity, put))
    except CopyFailed as exc:
        if exc.code != 255 or _OLD_HOSTD not in str(exc):
            raise
    # An older hostd: the same script as a plain exec (its disk guard is the only bound).
    return _send(
        source,
        name,
        size,
        target,
        identity,
        ssh_script(target.alloc_id, identity, RECEIVE, target.path, name),
    )


def _send(source: Path, name: str, size: int, target: Remote, identity: str | None, argv: list[str]) -> int:
    """`source`'s tar stream to the session `argv` (ssh offering `identity`); the bytes sent."""
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
        _finish(
            proc,
            reader,
            errors,
            f"copying {source} to {target.alloc_id}:{target.path}",
            alloc_id=target.alloc_id,
            identity=identity,
        )
        return meter.count


def download(source: Remote, target: Path, identity: str | None, asserts_dir: bool = False) -> int:
    """Fetch `source` (file or directory) to `target`, all or nothing (landing.py); the bytes of
    tar stream received. `asserts_dir`: DST was written with a trailing `/`."""
    src = Source.parse(source.path)
    try:
        landing = Landing(src, target, asserts_dir)
    except NotPlaced as exc:
        raise CopyFailed(str(exc), int(ExitCode.USAGE if exc.usage else ExitCode.REFUSED)) from exc
    try:
        return _receive(source, src, landing, target, identity)
    finally:
        landing.close()


def _receive(source: Remote, src: Source, landing: Landing, target: Path, identity: str | None) -> int:
    readable(source.alloc_id)
    argv = ssh_command(source.alloc_id, identity, [ARCHIVE, "get", src.request])
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader, errors = _stderr_reader(proc)
    assert proc.stdout is not None
    what = f"copying {source.alloc_id}:{source.path} to {target}"
    with _Meter(f"{source.alloc_id}:{source.path} -> {target}", None) as meter:
        try:
            try:
                stream = _CountingReader(proc.stdout, meter)
                with tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK, copybufsize=CHUNK) as tar:  # type: ignore[call-overload]
                    landing.unpack(tar)
            except tarfile.ReadError as exc:
                # the far end's reason first, if it has one
                _finish(proc, reader, errors, what, alloc_id=source.alloc_id, identity=identity)
                raise CopyFailed(f"{what} failed: the stream was not a tar archive ({exc})", 1) from exc
            except Refused as exc:
                said = f"{what} refused: the entry {exc.entry!r} {exc.reason}; nothing was copied"
                raise CopyFailed(said, int(ExitCode.REFUSED)) from exc
            except NotPlaced as exc:
                code = ExitCode.USAGE if exc.usage else ExitCode.REFUSED
                raise CopyFailed(f"{what} failed: {exc}; nothing was copied", int(code)) from exc
            except (OSError, tarfile.ExtractError) as exc:
                raise CopyFailed(f"{what} failed: {exc}; nothing was copied", int(ExitCode.REFUSED)) from exc
            _finish(proc, reader, errors, what, alloc_id=source.alloc_id, identity=identity)
        finally:
            if proc.poll() is None:
                proc.kill()  # the copy was given up: the rest of the stream is not wanted
            proc.wait()
            reader.join(timeout=5)
            proc.stdout.close()
            if proc.stderr is not None:
                proc.stderr.close()
    try:
        landing.place()
    except NotPlaced as exc:
        raise CopyFailed(f"{what} failed: {exc}", int(ExitCode.REFUSED)) from exc
    except OSError as exc:
        raise CopyFailed(f"{what} failed while moving it into place: {exc}", int(ExitCode.REFUSED)) from exc
    return meter.count


def copy(src: str, dst: str, identity: str | None) -> int:
    """Copy between here and an allocation; bytes moved. Raises CopyFailed or click.UsageError."""
    source, target = parse_endpoint(src), parse_endpoint(dst)
    if isinstance(source, Local) and isinstance(target, Remote):
        return upload(source.path, target, identity)
    if isinstance(source, Remote) and isinstance(target, Local):
        return download(source, target.path, identity, asserts_dir=dst.endswith(("/", "/.")))
    raise click.UsageError(
        "one side must be ALLOC:PATH and the other a local path, e.g. `potluck cp data.csv ALLOC:/root/`"
    )


@click.command()
@click.argument("src")
@click.argument("dst")
@IDENTITY
def cp(src: str, dst: str, identity: str | None) -> None:
    """Copy files or directories between here and an allocation: one of SRC and DST is ALLOC:PATH.

    \b
    potluck cp results.csv ALLOC:/root/       into /root
    potluck cp ALLOC:/root/out ./out          a directory, here as ./out

    \b
    Exit codes: 0 copied, all of it; 1 refused or failed on the allocation's side
    (no such PATH there, its disk bound, an entry refused); 2 the local side (no such
    file here, no folder to land in) or the arguments; 3 the allocator unreachable;
    255 ssh could not reach the allocation or its key was refused.
    """
    try:
        copy(src, dst, identity)
    except ClientError as exc:
        err.print(f"[red]error:[/red] {foreign(exc)}", highlight=False, soft_wrap=True)
        sys.exit(int(exc.code))
    except CopyFailed as exc:
        # soft_wrap: a message is one line, whole, for scripts that grep it.
        err.print(f"[red]error:[/red] {foreign(exc)}", highlight=False, soft_wrap=True)
        sys.exit(exc.code)
