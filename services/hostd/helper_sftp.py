"""SFTP for images that have no sftp-server: hostd speaks the protocol, the container does the I/O.

ContainerSSH makes SFTP work in any image by injecting its agent; here the
injected part is the helper busybox every container already has (helper.py),
and the SFTP protocol itself is asyncssh's server (`SFTPServerHandler`), run
in hostd on the session's byte stream. Every file operation of
`ContainerSFTPServer` is an exec in the container (container_files.py): as
the container's user, inside its filesystem, bounded like anything it runs.
No method here touches hostd's own filesystem; asyncssh's defaults would
(they map paths to the local disk), so every one of them is overridden, and
what is not offered answers "operation unsupported".

What one session may hold in hostd is bounded, whatever the client asks:
at most MAX_OPEN files and directory listings open at once (one more is
refused: "too many open"), at most MAX_STREAMS execs streaming at once
(a file's stream that is not in use is ended when another needs its place,
and started again from where it was when the file is used again; a write
that fails after its stream was ended so is reported on that file's next
operation, as a close reports a deferred write error), each holding at most
container_files.READ_BUFFER, and a read returns at most that much (SFTP
allows short reads; one waiting for more than the buffer holds would never
end). A directory is listed as it is read, 128 names a reply, never
buffered whole. Writes are counted
against the container's disk bound (its writable layer measured at the first
open for writing, then counted down by every SFTP session of the allocation
and every `potluck cp` upload into it together, disk_budget.py: two sessions
writing at once share what is left, rather than each being allowed all of
it; a SETSTAT that grows a file counts
as a write of what it adds, since the engine's SizeRw that the disk guard
measures counts a file's size, holes and all; the first write into a file of the
image's counts the whole file, which the engine copies into the container's layer
then, unless the engine says the layer holds it already: `_count_copy`): the
write that would pass it is
refused ("no space on filesystem", how much it needs, how much is left), so
the transfer fails cleanly and the container stays within its bound (where
the engine has no disk quota, hostd's guard would otherwise stop the
container); the file being uploaded (emptied or made by its open, as sftp's
put and scp open it) is removed when it is closed after such a refusal, so no
half-written file is left under its name (one that was there before and is
written over in place cannot be put back: it is left as the writes left it). While hostd holds no spec of the
allocation (it started a moment ago and has not yet heard from the
allocator), it does not know the bound: an open for writing waits a little
for it, then is refused saying so, before it makes or empties anything (no
new file is left, one that was there is left as it was).

What the user reads of a failure is in Potluck's words, about paths in the
allocation: the container's own (busybox's) messages are passed on, they speak
of the container's files; the engine's are not. An engine that failed or went
away (its socket's path on the member's machine, the container's whole id, the
runtime's "OCI runtime exec failed: ...") is said to be so, with what to do,
and its words go to hostd's log (`helper_sftp.engine_failed`): before, a user's
SFTP client read "the container did not run the operation: GET
/containers/potluck-<alloc>/json on unix:///<the member's path>/docker.sock
failed: FileNotFoundError: [Errno 2] No such file or directory" when the
member's engine went away, and the engine's answers to an exec (the
container's whole id, its status and message) the same way.

`HelperSftpProcess` stands where an exec of the image's sftp-server would
(gateway_link.HostSession drives both the same way: exec_bridge.SessionProcess):
the session's input feeds the protocol, its replies go out as the process's
output, and the session ends with status 0 when the client closes it.
"""

import asyncio
import contextlib
import itertools
import posixpath
import stat as stat_module
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import asyncssh
import structlog
from asyncssh.logging import logger as asyncssh_logger
from asyncssh.sftp import SFTPServerHandler

from potluck.hostd import disk_budget
from potluck.hostd.container_files import (
    STAT_FORMAT,
    ContainerFiles,
    FileStat,
    ReadStream,
    StreamFailed,
    WriteStream,
    parse_stat,
)
from potluck.hostd.disk_budget import DiskBudget
from potluck.hostd.engine_failures import ENGINE_FAILED, said_to_user
from potluck.hostd.exec_bridge import ExecBridge, SessionProcess
from potluck.hostd.exec_errors import ExecError, ExecRefused
from potluck.hostd.exec_stream import ExecSink
from potluck.hostd.sftp_filter import SftpFilter

__all__ = ["ENGINE_FAILED", "ContainerSFTPServer", "HelperSftpProcess", "open_sftp"]

log = structlog.get_logger(__name__)

_ids = itertools.count(1)
#: Files and directory listings one session may hold open at once.
MAX_OPEN = 64
#: Execs (a file's reader or writer, a directory's listing) one session may stream at once.
MAX_STREAMS = 4
#: A listing's entry longer than this is no entry the helper's stat writes (a name is at most
#: 255 bytes): the listing is given up rather than held.
_LIST_ENTRY_MAX = 4096
#: Exit statuses of the scripts below, as SFTP errors.
_ERRORS: dict[int, Callable[[str], asyncssh.SFTPError]] = {
    2: asyncssh.SFTPNoSuchFile,
    13: asyncssh.SFTPPermissionDenied,
    17: asyncssh.SFTPFileAlreadyExists,
    20: asyncssh.SFTPNotADirectory,
    21: asyncssh.SFTPFileIsADirectory,
    39: asyncssh.SFTPDirNotEmpty,
}
_MESSAGES = {
    2: "No such file or directory",
    13: "Permission denied",
    17: "File exists",
    20: "Not a directory",
    21: "Is a directory",
    39: "Directory not empty",
}
#: Exit statuses from 126 up are the engine's (it could not start the helper, or it was
#: killed), never a script's own: the scripts above exit with an errno or 1.
_ENGINE_STATUS = 126
# Classify why a path cannot be used, the way the errno would (busybox's messages vary).
_WHY = (
    'why() { if [ ! -e "$1" ] && [ ! -L "$1" ]; then exit 2; fi; '
    'if [ -n "$2" ] && [ -d "$1" ]; then exit 21; fi; exit 13; }; '
)
_OPEN = _WHY + (
    'f=$1; flags=$2; d=$("$B" dirname -- "$f"); '
    '[ -d "$d" ] || { [ -e "$d" ] && exit 20; exit 2; }; '
    'case $flags in *x*) if [ -e "$f" ] || [ -L "$f" ]; then exit 17; fi;; esac; '
    'made=0; case $flags in *c*) [ -e "$f" ] || { : >> "$f" || why "$d"; made=1; };; esac; '
    '[ -e "$f" ] || exit 2; [ -d "$f" ] && exit 21; '
    'case $flags in *r*) [ -r "$f" ] || exit 13;; esac; '
    'case $flags in *w*) [ -w "$f" ] || exit 13;; esac; '
    'case $flags in *t*) : > "$f" || exit 13;; esac; '
    # The stat, then whether this open made the file (1) or found it (0).
    'exec "$B" stat -L -c "' + STAT_FORMAT + ' $made" -- "$f"'
)
_LIST = (
    'cd -- "$1" 2>/dev/null || { [ -e "$1" ] || exit 2; [ -d "$1" ] || exit 20; exit 13; }; '
    'for f in .* *; do { [ -e "$f" ] || [ -L "$f" ]; } || continue; '
    '"$B" stat -c "' + STAT_FORMAT + '" -- "$f" && printf "%s\\0" "$f"; done'
)


def _attrs(info: FileStat) -> asyncssh.SFTPAttrs:
    return asyncssh.SFTPAttrs(
        size=info.size,
        uid=info.uid,
        gid=info.gid,
        permissions=info.mode,
        atime=info.atime,
        mtime=info.mtime,
    )


def _text(path: bytes) -> str:
    return path.decode("utf-8", errors="surrogateescape")


class _Handle:
    """An open file: its path and mode, and the exec streaming it, if any."""

    def __init__(self, path: str, readable: bool, writable: bool, append: bool) -> None:
        self.path = path
        self.readable = readable
        self.writable = writable
        self.append = append
        self.reader: ReadStream | None = None
        self.writer: WriteStream | None = None
        #: Where an append-mode write goes before any was made: the size at open.
        self.append_at = 0
        #: The file's end as far as this handle knows: writes past it grow the container's disk.
        self.end = 0
        #: A write that failed after its stream was ended to make room (MAX_STREAMS): reported
        #: on the file's next operation.
        self.failed: asyncssh.SFTPError | None = None
        #: Opened to be written anew (truncated, or made by the open): an upload.
        self.fresh = False
        #: A write to it was refused as past the disk bound: the upload cannot be whole.
        self.past_bound = False
        #: What its writes took from the allocation's budget.
        self.taken = 0
        #: The size of the file the open kept (found, not emptied), until its first write counts
        #: its copy into the container's layer (`ContainerSFTPServer._count_copy`).
        self.kept = 0


class ContainerSFTPServer(asyncssh.SFTPServer):
    """asyncssh's SFTP server interface, each operation done in the container."""

    def __init__(self, files: ContainerFiles, chan: Any = None) -> None:
        super().__init__(chan)
        self.files = files
        self.handles: set[_Handle] = set()
        #: Handles with a live stream (reader or writer), least recently used first.
        self.streaming: OrderedDict[_Handle, None] = OrderedDict()
        #: Directory listings streaming now (their execs).
        self.listings: set[ReadStream] = set()
        #: Directory listings open (started, not yet read to their end or closed).
        self.open_listings = 0
        #: What the container may still write (module docstring), once a file was opened for
        #: writing: a write past it is refused, so the container stays within its bound.
        self.budget: DiskBudget | None = None

    async def abort(self) -> None:
        """End the execs of every open file (the session is gone: nobody will close them)."""
        for handle in list(self.handles):
            for stream in (handle.reader, handle.writer):
                if stream is not None:
                    with contextlib.suppress(ExecError, OSError):
                        await stream.process.terminate()
            handle.reader = handle.writer = None
        self.handles.clear()
        self.streaming.clear()
        for listing in list(self.listings):
            with contextlib.suppress(ExecError, OSError):
                await listing.process.terminate()
        self.listings.clear()
        self.exit()

    # What a session holds (module docstring).

    def _check_room(self) -> None:
        """SFTPFailure if one more file or listing would pass MAX_OPEN."""
        if len(self.handles) + self.open_listings >= MAX_OPEN:
            raise asyncssh.SFTPFailure(
                f"too many open files and directories in this session (at most {MAX_OPEN}): close some first"
            )

    async def _stream_room(self, keep: _Handle | None = None) -> None:
        """Make room for one more stream: end the least recently used file's (not `keep`'s);
        SFTPFailure when all are listings, which cannot be resumed."""
        while len(self.streaming) + len(self.listings) >= MAX_STREAMS:
            victim = next((h for h in self.streaming if h is not keep), None)
            if victim is None:
                raise asyncssh.SFTPFailure(
                    f"too many directory listings in progress in this session (at most {MAX_STREAMS})"
                )
            await self._park(victim)

    async def _park(self, handle: _Handle) -> None:
        """End `handle`'s stream; a write it then reports failed is kept for its next operation."""
        if handle.reader is not None:
            reader, handle.reader = handle.reader, None
            with contextlib.suppress(ExecError, OSError):
                await reader.close()
        try:
            await self._flush(handle)
        except asyncssh.SFTPError as exc:
            handle.failed = exc
        self._settle(handle)

    def _settle(self, handle: _Handle) -> None:
        """Keep `streaming` in step with `handle`'s streams (most recently used last)."""
        if handle.reader is None and handle.writer is None:
            self.streaming.pop(handle, None)
        else:
            self.streaming[handle] = None
            self.streaming.move_to_end(handle)

    def _deferred(self, handle: _Handle) -> None:
        """Raise the write error kept for `handle` (once)."""
        failed, handle.failed = handle.failed, None
        if failed is not None:
            raise failed

    # Helpers.

    def _failure(self, exc: Exception) -> asyncssh.SFTPError:
        """What the user reads of `exc`: the container's words (an exec that ran and failed), or
        ENGINE_FAILED with the engine's words logged (module docstring)."""
        if isinstance(exc, StreamFailed):
            if 0 < exc.status < _ENGINE_STATUS:
                error = _ERRORS.get(exc.status, asyncssh.SFTPFailure)
                return error(exc.said or _MESSAGES.get(exc.status, f"failed (status {exc.status})"))
        elif type(exc) is OSError:
            return asyncssh.SFTPFailure(str(exc))  # a writer in the container said why it stopped
        # ExecRefused was said for users; anything else is the engine's (engine_failures.py).
        return asyncssh.SFTPFailure(
            said_to_user(exc, event="helper_sftp.engine_failed", alloc_id=self.files.alloc_id)
        )

    async def _run(self, script: str, *args: str) -> bytes:
        try:
            done = await self.files.run(script, *args)
        except ExecError as exc:
            raise self._failure(exc) from exc
        if done.status == 0:
            return done.out
        if not 0 < done.status < _ENGINE_STATUS:
            raise self._failure(StreamFailed(done.message, done.status))
        error = _ERRORS.get(done.status, asyncssh.SFTPFailure)
        raise error(done.message or _MESSAGES.get(done.status, f"failed (status {done.status})"))

    async def _stat(self, path: str, *, follow: bool) -> asyncssh.SFTPAttrs:
        script = _WHY + f'"$B" stat {"-L " if follow else ""}-c "{STAT_FORMAT}" -- "$1" || why "$1"'
        return _attrs(parse_stat((await self._run(script, path)).decode()))

    def format_user(self, uid: int | None) -> str:
        # asyncssh looks the id up in hostd's /etc/passwd: the container's names are not there.
        return str(uid) if uid is not None else ""

    def format_group(self, gid: int | None) -> str:
        return str(gid) if gid is not None else ""

    # Paths and attributes.

    async def realpath(self, path: bytes) -> bytes:
        out = await self._run(
            # busybox's realpath takes no `--`: a name starting with - gets ./ instead.
            "p=${1:-.}; case $p in -*) p=./$p;; esac; "
            'if r=$("$B" realpath "$p" 2>/dev/null); then printf "%s" "$r"; exit 0; fi; '
            'd=$("$B" realpath "$("$B" dirname -- "$p")" 2>/dev/null) || exit 2; '
            'b=$("$B" basename -- "$p"); [ "$d" = / ] && d=; printf "%s/%s" "$d" "$b"',
            _text(path),
        )
        return out or b"/"

    async def stat(self, path: bytes) -> asyncssh.SFTPAttrs:
        return await self._stat(_text(path), follow=True)

    async def lstat(self, path: bytes) -> asyncssh.SFTPAttrs:
        return await self._stat(_text(path), follow=False)

    async def fstat(self, file_obj: object) -> asyncssh.SFTPAttrs:
        handle = cast(_Handle, file_obj)
        await self._flush(handle)
        return await self._stat(handle.path, follow=True)

    async def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        await self._setstat(_text(path), attrs)

    async def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        raise asyncssh.SFTPOpUnsupported("lsetstat is not offered here")

    async def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        handle = cast(_Handle, file_obj)
        await self._flush(handle)
        await self._setstat(handle.path, attrs)
        if attrs.size is not None:
            handle.end = attrs.size  # counted by _setstat: writes up to it grow nothing more

    async def _setstat(self, path: str, attrs: asyncssh.SFTPAttrs) -> None:
        growth = 0
        if attrs.size is not None:
            # A file grown by a truncate takes no block, but its size counts against the bound
            # (the engine's SizeRw, which the disk guard measures): as much as a write would.
            growth = max(0, attrs.size - ((await self._stat(path, follow=True)).size or 0))
            if growth:
                await self._hold_budget()
                self._take(growth)
        try:
            await self._set(path, attrs)
        except BaseException:
            self._give_back(growth)
            raise

    def _take(self, growth: int) -> None:
        """Take `growth` from the allocation's budget before anything is awaited (another session
        writes meanwhile); SFTPNoSpaceOnFilesystem if it is not left."""
        budget = self.budget
        if budget is None:
            return
        if not budget.claim(growth):
            log.info(
                "helper_sftp.disk_bound_reached",
                alloc_id=self.files.alloc_id,
                left=budget.left,
                growth=growth,
                sessions=budget.sessions,
            )
            raise asyncssh.SFTPNoSpaceOnFilesystem(
                f"the allocation's disk bound is reached: this needs {growth} bytes more, "
                f"{budget.shown_left} are left"
            )

    async def _count_copy(self, handle: _Handle) -> None:
        """The first write into a file the open kept: a file of the image's is copied whole into
        the container's layer then (overlayfs copies up at the write's open), however little is
        written, so its size is taken from the budget (writes within it take nothing more: the
        handle's end is past them). When that does not fit, the engine is asked first whether
        the layer already holds the file (sent before, and written again): then nothing is
        copied. SFTPNoSpaceOnFilesystem if it is the image's and does not fit; the next write
        tries again."""
        kept, handle.kept = handle.kept, 0
        try:
            self._take(kept)
        except asyncssh.SFTPNoSpaceOnFilesystem:
            name = _text(await self.realpath(handle.path.encode("utf-8", errors="surrogateescape")))
            try:
                in_layer = await self.files.bridge.in_layer(self.files.alloc_id, name)
            except (ExecError, OSError) as exc:
                log.warning("helper_sftp.layer_unknown", alloc_id=self.files.alloc_id, error=str(exc))
                in_layer = False
            if not in_layer:
                handle.kept = kept
                raise
            return
        handle.taken += kept

    def _give_back(self, growth: int) -> None:
        if self.budget is not None:
            self.budget.give_back(growth)

    async def _set(self, path: str, attrs: asyncssh.SFTPAttrs) -> None:
        size = "" if attrs.size is None else str(attrs.size)
        mode = "" if attrs.permissions is None else format(attrs.permissions & 0o7777, "o")
        owner = "" if attrs.uid is None or attrs.gid is None else f"{attrs.uid}:{attrs.gid}"
        mtime = "" if attrs.mtime is None else str(int(attrs.mtime))
        await self._run(
            _WHY + '[ -e "$1" ] || exit 2; '
            '[ -z "$2" ] || "$B" truncate -s "$2" -- "$1" || why "$1"; '
            '[ -z "$4" ] || "$B" chown "$4" -- "$1" || why "$1"; '
            '[ -z "$3" ] || "$B" chmod "$3" -- "$1" || why "$1"; '
            '[ -z "$5" ] || "$B" touch -c -d "@$5" -- "$1" || why "$1"',
            path, size, mode, owner, mtime,
        )  # fmt: skip

    # Files.

    async def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        readable = bool(pflags & asyncssh.FXF_READ)
        writable = bool(pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_APPEND))
        flags = "".join(
            letter
            for letter, bit in (
                ("r", asyncssh.FXF_READ), ("w", asyncssh.FXF_WRITE | asyncssh.FXF_APPEND),
                ("c", asyncssh.FXF_CREAT), ("t", asyncssh.FXF_TRUNC), ("x", asyncssh.FXF_EXCL),
            )
            if pflags & bit
        )  # fmt: skip
        name = _text(path)
        self._check_room()
        if writable and self.budget is None:
            # Refused for want of the bound before the open makes or empties anything: refused
            # after it, an upload left an empty file (or emptied the one it was sent over).
            await self._bound_known()
        *stat, made = (await self._run(_OPEN, name, flags)).decode().split()
        info = parse_stat(" ".join(stat))
        handle = _Handle(name, readable, writable, bool(pflags & asyncssh.FXF_APPEND))
        # Emptied, or made, by this open: an upload (scp's SFTP mode opens without TRUNC, to
        # write in place and truncate at the end, so a file it makes counts too).
        handle.fresh = writable and (bool(pflags & asyncssh.FXF_TRUNC) or made == "1")
        if writable and attrs.permissions is not None and pflags & asyncssh.FXF_CREAT:
            with contextlib.suppress(asyncssh.SFTPError):
                await self._setstat(name, asyncssh.SFTPAttrs(permissions=attrs.permissions))
        handle.append_at = handle.end = info.size
        if writable and not handle.fresh and stat_module.S_ISREG(info.mode):
            handle.kept = info.size
        if writable:
            await self._hold_budget()
        self.handles.add(handle)
        return handle

    async def _hold_budget(self) -> None:
        """Join the allocation's shared budget, unless this session holds it already."""
        if self.budget is None:
            self.budget = await self._join_budget()

    async def _bound_known(self) -> None:
        """Once hostd knows the allocation's disk bound; SFTPFailure saying so if it does not
        come (as `_join_budget`)."""
        try:
            await disk_budget.bound_known(self.files.bridge, self.files.alloc_id)
        except disk_budget.BoundUnknown as exc:
            raise asyncssh.SFTPFailure(str(exc)) from exc

    async def _join_budget(self) -> DiskBudget:
        """The allocation's shared budget (disk_budget.py); SFTPFailure saying so while hostd
        does not know the bound, never "no space": the disk is not full."""
        try:
            return await disk_budget.join(self.files.bridge, self.files.alloc_id)
        except disk_budget.BoundUnknown as exc:
            raise asyncssh.SFTPFailure(str(exc)) from exc

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        handle = cast(_Handle, file_obj)
        if not handle.readable:
            raise asyncssh.SFTPPermissionDenied("the file was not opened for reading")
        self._deferred(handle)
        await self._flush(handle)
        if handle.reader is None or handle.reader.position != offset:
            if handle.reader is not None:
                reader, handle.reader = handle.reader, None
                await reader.close()
            await self._stream_room(handle)
            try:
                handle.reader = await self.files.read_stream(handle.path, offset)
            except ExecError as exc:
                raise self._failure(exc) from exc
            finally:
                self._settle(handle)
        self._settle(handle)
        try:
            return await handle.reader.read(size)
        except (ExecError, OSError) as exc:
            raise self._failure(exc) from exc

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        handle = cast(_Handle, file_obj)
        if not handle.writable:
            raise asyncssh.SFTPPermissionDenied("the file was not opened for writing")
        self._deferred(handle)
        if handle.reader is not None:
            reader, handle.reader = handle.reader, None
            await reader.close()
            self._settle(handle)
        if handle.append:
            offset = handle.writer.position if handle.writer is not None else handle.append_at
        if handle.kept:
            await self._count_copy(handle)
        growth = max(0, offset + len(data) - handle.end)
        try:
            self._take(growth)
        except asyncssh.SFTPNoSpaceOnFilesystem:
            handle.past_bound = True
            await self._flush(handle)
            raise
        handle.taken += growth
        try:
            if handle.writer is not None and handle.writer.position != offset:
                await self._flush(handle)
            if handle.writer is None:
                await self._stream_room(handle)
                handle.writer = await self.files.write_stream(handle.path, offset)
            self._settle(handle)
            await handle.writer.write(data)
            handle.end = max(handle.end, offset + len(data))
        except BaseException as exc:
            self._give_back(growth)
            handle.taken -= growth
            if isinstance(exc, ExecError):
                raise self._failure(exc) from exc
            if isinstance(exc, OSError):
                handle.writer = None
                self._settle(handle)
                raise self._failure(exc) from exc
            raise
        return len(data)

    async def _flush(self, handle: _Handle) -> None:
        """Finish the pending writes of `handle`: SFTPFailure (no space left, ...) if they failed."""
        writer, handle.writer = handle.writer, None
        if writer is None:
            return
        self._settle(handle)
        try:
            await writer.close()
        except (ExecError, OSError) as exc:
            raise self._failure(exc) from exc

    async def close(self, file_obj: object) -> None:
        handle = cast(_Handle, file_obj)
        self.handles.discard(handle)
        if handle.reader is not None:
            reader, handle.reader = handle.reader, None
            await reader.close()
        self._settle(handle)
        try:
            await self._flush(handle)
            self._deferred(handle)
        finally:
            if handle.fresh and handle.past_bound:
                await self._remove_partial(handle)

    async def _remove_partial(self, handle: _Handle) -> None:
        """An upload refused past the disk bound leaves no half-written file under its name: the
        file this handle made (or emptied) is removed, and what its writes took given back."""
        try:
            await self._run('"$B" rm -f -- "$1"', handle.path)
        except asyncssh.SFTPError as exc:
            log.warning("helper_sftp.partial_not_removed", alloc_id=self.files.alloc_id, error=str(exc))
            return
        self._give_back(handle.taken)
        handle.taken = 0
        log.info("helper_sftp.partial_removed", alloc_id=self.files.alloc_id, path=handle.path)

    async def fsync(self, file_obj: object) -> None:
        handle = cast(_Handle, file_obj)
        await self._flush(handle)
        self._deferred(handle)

    # Directories and names.

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        """The directory's entries as the listing exec sends them (asyncssh takes 128 a reply):
        never the whole listing in hostd (module docstring)."""
        self._check_room()
        await self._stream_room()
        self.open_listings += 1
        try:
            try:
                listing = await self.files.stream(_LIST, _text(path))
            except ExecError as exc:
                raise self._failure(exc) from exc
            self.listings.add(listing)
            try:
                async for entry in _entries(listing, self._failure):
                    line, sep, name = entry.partition(b"\n")
                    if sep:
                        yield asyncssh.SFTPName(name, attrs=_attrs(parse_stat(line.decode())))
            finally:
                self.listings.discard(listing)
                with contextlib.suppress(ExecError, OSError):
                    await listing.close()
        finally:
            self.open_listings -= 1

    async def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        mode = format((attrs.permissions if attrs.permissions is not None else 0o777) & 0o7777, "o")
        await self._run(
            _WHY + 'if [ -e "$1" ] || [ -L "$1" ]; then exit 17; fi; "$B" mkdir -m "$2" -- "$1" || '
            'why "$("$B" dirname -- "$1")"',
            _text(path), mode,
        )  # fmt: skip

    async def rmdir(self, path: bytes) -> None:
        await self._run(
            '[ -e "$1" ] || exit 2; [ -d "$1" ] || exit 20; "$B" rmdir -- "$1" 2>/dev/null && exit 0; '
            '[ -n "$("$B" ls -A -- "$1")" ] && exit 39; exit 13',
            _text(path),
        )

    async def remove(self, path: bytes) -> None:
        await self._run(
            _WHY + '[ -d "$1" ] && [ ! -L "$1" ] && exit 21; "$B" rm -f -- "$1" && [ ! -L "$1" ] && '
            '[ ! -e "$1" ] || why "$1"',
            _text(path),
        )

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self._run(
            _WHY + '{ [ -e "$1" ] || [ -L "$1" ]; } || exit 2; { [ -e "$2" ] || [ -L "$2" ]; } && exit 17; '
            '"$B" mv -- "$1" "$2" || why "$1"',
            _text(oldpath), _text(newpath),
        )  # fmt: skip

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self._run(
            _WHY + '{ [ -e "$1" ] || [ -L "$1" ]; } || exit 2; "$B" mv -f -- "$1" "$2" || why "$1"',
            _text(oldpath), _text(newpath),
        )  # fmt: skip

    async def readlink(self, path: bytes) -> bytes:
        out = await self._run(_WHY + '[ -L "$1" ] || why "$1" x; exec "$B" readlink -- "$1"', _text(path))
        return out.rstrip(b"\n")

    async def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        await self._run(
            _WHY + '{ [ -e "$2" ] || [ -L "$2" ]; } && exit 17; "$B" ln -s -- "$1" "$2" || why "$2"',
            _text(oldpath), _text(newpath),
        )  # fmt: skip

    async def link(self, oldpath: bytes, newpath: bytes) -> None:
        await self._run(
            _WHY + '{ [ -e "$2" ] || [ -L "$2" ]; } && exit 17; "$B" ln -- "$1" "$2" || why "$1"',
            _text(oldpath), _text(newpath),
        )  # fmt: skip

    # Not offered: each would otherwise act on hostd's own filesystem (asyncssh's defaults).

    def open56(self, *args: Any) -> object:
        raise asyncssh.SFTPOpUnsupported("SFTP versions 5 and 6 are not offered here")

    def statvfs(self, path: bytes) -> Any:
        raise asyncssh.SFTPOpUnsupported("statvfs is not offered here")

    def fstatvfs(self, file_obj: object) -> Any:
        raise asyncssh.SFTPOpUnsupported("fstatvfs is not offered here")

    def lock(self, *args: Any) -> Any:
        raise asyncssh.SFTPOpUnsupported("locks are not offered here")

    def unlock(self, *args: Any) -> Any:
        raise asyncssh.SFTPOpUnsupported("locks are not offered here")

    def map_path(self, path: bytes) -> bytes:
        # Paths are the container's, passed through; normalised only.
        return posixpath.normpath(path) if path else b"."

    def reverse_map_path(self, path: bytes) -> bytes:
        return path

    def exit(self) -> None:
        """The session ended (asyncssh's cleanup, or abort): it holds the budget no more."""
        budget, self.budget = self.budget, None
        if budget is not None:
            disk_budget.leave(self.files.bridge, self.files.alloc_id, budget)


async def _entries(
    listing: ReadStream, failure: Callable[[Exception], asyncssh.SFTPError]
) -> AsyncIterator[bytes]:
    """The NUL-ended records of a listing as they come; its exit status as an SFTP error
    (`failure`: ContainerSFTPServer._failure)."""
    pending = b""
    while True:
        try:
            chunk = await listing.read(1 << 16)
        except (ExecError, OSError) as exc:
            raise failure(exc) from exc
        if not chunk:
            return
        *records, pending = (pending + chunk).split(b"\0")
        for record in records:
            yield record
        if len(pending) > _LIST_ENTRY_MAX:
            raise asyncssh.SFTPFailure("the directory's listing was not readable")


class _Channel:
    """What asyncssh's SFTP handler asks of its writer's channel."""

    def __init__(self, process: "HelperSftpProcess") -> None:
        self._process = process

    def is_closing(self) -> bool:
        return self._process.finished

    async def wait_closed(self) -> None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class _Reader:
    """The session's input for asyncssh's SFTP handler (`readexactly`), with flow control."""

    HIGH = 4 << 20

    def __init__(self, process: "HelperSftpProcess") -> None:
        self._process = process
        self._buffer = bytearray()
        self._more = asyncio.Event()
        self._eof = False
        self._paused = False
        self.logger = asyncssh_logger.get_child("potluck-sftp")

    def feed(self, data: bytes) -> None:
        self._buffer.extend(data)
        self._more.set()
        if len(self._buffer) > self.HIGH and not self._paused and self._process.sink is not None:
            self._paused = True
            self._process.sink.exec_pause()

    def feed_eof(self) -> None:
        self._eof = True
        self._more.set()

    async def readexactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            if self._eof:
                raise asyncio.IncompleteReadError(bytes(self._buffer), n)
            self._more.clear()
            await self._more.wait()
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        if self._paused and len(self._buffer) < self.HIGH // 4 and self._process.sink is not None:
            self._paused = False
            self._process.sink.exec_resume()
        return data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        # OpenSSH's clients send SYMLINK's arguments in the reverse order; asyncssh swaps them
        # back when the client says it is OpenSSH. Users' scp and sftp are OpenSSH's.
        return "SSH-2.0-OpenSSH_potluck" if name == "client_version" else default


class _Writer:
    """The handler's replies, as the session's output."""

    def __init__(self, process: "HelperSftpProcess") -> None:
        self._process = process
        self.channel = _Channel(process)

    def write(self, data: bytes) -> None:
        if self._process.sink is not None and not self._process.finished:
            self._process.sink.exec_data(data, False)

    def write_eof(self) -> None:
        return None

    def close(self) -> None:
        self._process.done()


class _Handler(SFTPServerHandler):
    """asyncssh's server side, without `ranges@asyncssh.com`: it looks for holes by seeking the
    file object as a local file (ours is the container's), so asyncssh's clients' downloads
    failed on it; without it they copy every byte, as with OpenSSH's sftp-server."""

    _extensions = [(n, d) for n, d in SFTPServerHandler._extensions if n != b"ranges@asyncssh.com"]
    _packet_handlers = {
        k: v for k, v in SFTPServerHandler._packet_handlers.items() if k != b"ranges@asyncssh.com"
    }


class HelperSftpProcess:
    """An SFTP session served by hostd for a container without an sftp-server (module docstring)."""

    def __init__(self, files: ContainerFiles, container_id: str) -> None:
        self.exec_id = f"sftp-{next(_ids)}"  # short: logs print 12 characters of an id
        self.container_id = container_id
        self.tty = False
        self.finished = False
        self.exit_status: int | None = None
        self.sink: ExecSink | None = None
        self._reader = _Reader(self)
        self._writer = _Writer(self)
        self._server = ContainerSFTPServer(files)
        self._task: asyncio.Task[None] | None = None

    def attach(self, sink: ExecSink) -> None:
        self.sink = sink
        handler = _Handler(self._server, self._reader, self._writer, 3)  # type: ignore[arg-type]
        self._task = asyncio.ensure_future(self._serve(handler))

    async def _serve(self, handler: SFTPServerHandler) -> None:
        try:
            await handler.run()
        except Exception as exc:  # the session ends either way; hostd goes on
            log.warning("helper_sftp.failed", container_id=self.container_id[:12], error=repr(exc))
        finally:
            self._server.exit()
            self.done()

    def done(self) -> None:
        if self.finished:
            return
        self.finished = True
        self.exit_status = 0
        if self.sink is not None:
            self.sink.exec_eof()

    def write(self, data: bytes) -> None:
        self._reader.feed(data)

    def write_eof(self) -> None:
        self._reader.feed_eof()

    def buffered(self) -> int:
        return 0

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None

    async def resize(self, width: int, height: int) -> None:
        return None

    async def signal(self, name: str) -> bool:
        return False

    async def wait_exit(self, timeout: float = 10.0) -> int | None:
        return 0 if self.finished else None

    async def terminate(self) -> int:
        self.close()
        await self._server.abort()
        return 1

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self.finished = True
        self.exit_status = self.exit_status if self.exit_status is not None else 0


async def open_sftp(
    bridge: ExecBridge, alloc_id: str, argv: list[str], env: dict[str, str]
) -> SessionProcess:
    """The sftp subsystem of a session: the image's own sftp-server when it has one (or when the
    helper cannot tell: the container predates it), else hostd's (HelperSftpProcess)."""
    files = ContainerFiles(bridge, alloc_id)
    try:
        has_one = await files.has_sftp_server()
    except ExecRefused:
        raise
    except ExecError as exc:  # no helper in this container (it predates it): the image's own
        log.info("helper_sftp.unavailable", alloc_id=alloc_id, error=str(exc))
        has_one = None
    if has_one is False:
        container_id = await bridge.container_for(alloc_id)
        log.info("helper_sftp.serving", alloc_id=alloc_id, container_id=container_id[:12])
        return HelperSftpProcess(files, container_id)
    # The image's own: its uploads held to what is left of the disk bound (sftp_filter.py).
    return SftpFilter(bridge, alloc_id, await bridge.open(alloc_id, argv, tty=False, env=env))
