"""File operations inside an allocation's container, run by the helper busybox through docker exec.

For the SFTP server hostd provides to images without one (helper_sftp.py).
Every operation is a `docker exec` of `/.potluck/busybox sh -c SCRIPT` in the
container (helper.py: a static busybox mounted read-only), so it runs as the
container's own user, in its mount namespace, with its capabilities, seccomp
profile and disk bound, exactly as the user's own commands do: nothing is
read or written through the host's view of the container's files, so no path
(symlinks and `..` included) can lead out of the container.

Short operations (stat, mkdir, rename, ...) collect their output, at most
RUN_OUTPUT bytes of it (more is an ExecError: hostd never holds what a
container chooses to send without a bound); reading and writing a file, and
listing a directory, are one long exec each, streamed: `cat` (from an
offset: `tail -c +N`) out of the file, `cat` into it (from an offset: the
file opened read-write on the shell's stdout, moved there by `dd seek=N
count=0`). A streamed exec's output is buffered up to READ_BUFFER, then the
engine's socket is left unread until the reader takes some, so what one
stream holds in hostd is bounded whatever the file or directory holds.
Paths and arguments are passed as the script's positional parameters, never
spliced into it.

What an exec sends is the container's to decide, not the helper's: a process of the
container's may open an exec's stdout or stderr (/proc/<pid>/fd, as the same user) and write
without end, holding the stream open. So no exec's output is held without a bound in hostd,
on the member's machine and outside every bound of the container's: a short operation's and a
writer's are capped at RUN_OUTPUT (past it the exec is ended and the operation fails, saying
why), a stream's stdout is flow-controlled, and stderr is a message, kept to RUN_OUTPUT.
"""

import asyncio
import contextlib
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from potluck.hostd.exec_bridge import ExecBridge, ExecProcess
from potluck.hostd.exec_errors import ExecError
from potluck.hostd.helper import HELPER_PATH

__all__ = [
    "ContainerFiles",
    "FileStat",
    "OpResult",
    "ReadStream",
    "StreamFailed",
    "WriteStream",
    "parse_stat",
]

# Relative paths are taken from the user's home, as sshd's sftp-server does.
_PRELUDE = "B=" + HELPER_PATH + '; cd "$HOME" 2>/dev/null || cd /; '
#: %f raw mode (hex), size, uid, gid, atime, mtime.
STAT_FORMAT = "%f %s %u %g %X %Y"
#: Output buffered from a streaming exec before the engine's socket is left unread; also the
#: most one read returns (a read waiting for more than the buffer holds would wait forever).
READ_BUFFER = 1 << 20
#: Input queued to a writing exec before the writer waits.
WRITE_BUFFER = 1 << 20
#: Output (stdout and stderr) a short operation may send: a stat line, a path, a message.
RUN_OUTPUT = 256 << 10


@dataclass(frozen=True)
class FileStat:
    mode: int
    size: int
    uid: int
    gid: int
    atime: int
    mtime: int

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


def parse_stat(line: str) -> FileStat:
    """One line of `stat -c STAT_FORMAT`."""
    mode, size, uid, gid, atime, mtime = line.split()
    return FileStat(int(mode, 16), int(size), int(uid), int(gid), int(atime), int(mtime))


@dataclass(frozen=True)
class OpResult:
    status: int
    out: bytes
    err: bytes

    @property
    def message(self) -> str:
        return self.err.decode(errors="replace").strip().removeprefix("potluck: ")


class StreamFailed(OSError):
    """A streamed exec ended with a status other than 0: `status`, and what it `said` on stderr."""

    def __init__(self, said: str, status: int) -> None:
        super().__init__(said or f"exited with status {status}")
        self.said = said
        self.status = status


class _Sink:
    """An exec's output, collected or streamed to a reader, and its end. `limit`: stdout held
    before reading from the engine pauses; `cap`: stdout and stderr together past which
    `overflowed` is set and reading stops for good."""

    def __init__(self, process: ExecProcess | None = None, limit: int = 0, cap: int = 0) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.ended = asyncio.Event()
        self.more = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self._process = process
        self._limit = limit
        self._cap = cap
        self._paused = False
        self.overflowed = False

    def exec_data(self, data: bytes, stderr: bool) -> None:
        if self.overflowed:
            return
        if stderr and len(self.err) + len(data) > RUN_OUTPUT:
            data = data[: max(0, RUN_OUTPUT - len(self.err))]  # a message, not a stream: kept short
        (self.err if stderr else self.out).extend(data)
        self.more.set()
        if self._cap and len(self.out) + len(self.err) > self._cap:
            self.overflowed = True
            self.ended.set()
            if self._process is not None:
                self._process.pause_reading()
            return
        if self._limit and not stderr and len(self.out) > self._limit and self._process is not None:
            self._process.pause_reading()
            self._paused = True

    def taken(self) -> None:
        """The reader took output: read from the engine again if it was paused."""
        if self._paused and len(self.out) <= self._limit // 2 and self._process is not None:
            self._paused = False
            self._process.resume_reading()

    def exec_eof(self) -> None:
        self.ended.set()
        self.more.set()
        self.writable.set()

    def exec_pause(self) -> None:
        self.writable.clear()

    def exec_resume(self) -> None:
        self.writable.set()


class ReadStream:
    """A file's bytes from `offset` on, as `cat` in the container sends them."""

    def __init__(self, process: ExecProcess, sink: _Sink, offset: int) -> None:
        self.process = process
        self.sink = sink
        self.position = offset

    async def read(self, size: int) -> bytes:
        """Up to `size` bytes at `position`, at most READ_BUFFER (more would never come: reading
        from the engine pauses there); fewer than asked for only then or at the end.
        StreamFailed if the exec ended with a status other than 0."""
        sink = self.sink
        size = min(size, READ_BUFFER)
        while len(sink.out) < size and not sink.ended.is_set():
            sink.more.clear()
            await sink.more.wait()
        data = bytes(sink.out[:size])
        del sink.out[:size]
        sink.taken()
        self.position += len(data)
        if not data and sink.ended.is_set():
            status = await self.process.wait_exit()
            if status not in (0, None):
                said = sink.err.decode(errors="replace").strip().removeprefix("potluck: ")
                raise StreamFailed(said, status)
        return data

    async def close(self) -> None:
        if not self.sink.ended.is_set():
            await self.process.terminate()


class WriteStream:
    """A file written from `offset` on by `cat` in the container; its outcome known at `close`."""

    def __init__(self, process: ExecProcess, sink: _Sink, offset: int) -> None:
        self.process = process
        self.sink = sink
        self.position = offset

    async def write(self, data: bytes) -> None:
        if self.sink.ended.is_set():
            raise OSError(self._failure())
        self.process.write(data)
        self.position += len(data)
        while self.process.buffered() > WRITE_BUFFER and not self.sink.ended.is_set():
            self.sink.writable.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await self.sink.writable.wait()

    def _failure(self) -> str:
        if self.sink.overflowed:
            return f"the writer in the container sent more than {RUN_OUTPUT} bytes of output"
        return self.sink.err.decode(errors="replace").strip() or "the writer in the container stopped"

    async def close(self) -> None:
        """Wait for everything to be written; OSError with the container's reason if it was not."""
        self.process.write_eof()
        await self.sink.ended.wait()
        if self.sink.overflowed:
            with contextlib.suppress(ExecError, OSError):
                await self.process.terminate()
            raise OSError(self._failure())
        status = await self.process.wait_exit()
        if status != 0:
            raise OSError(self._failure())


class ContainerFiles:
    """File operations in one allocation's container (see the module docstring)."""

    def __init__(self, bridge: ExecBridge, alloc_id: str) -> None:
        self.bridge = bridge
        self.alloc_id = alloc_id

    async def _start(self, script: str, args: Sequence[str]) -> ExecProcess:
        argv = [HELPER_PATH, "sh", "-c", _PRELUDE + script, "potluck-sftp", *args]
        return await self.bridge.open(self.alloc_id, argv, tty=False, env={})

    async def run(self, script: str, *args: str, stdin: bytes = b"") -> OpResult:
        """Run `script` (with `args` as $1...) to its end: its exit status and output; ExecError
        if it sends more than RUN_OUTPUT (it is ended: what it sends is not held)."""
        process = await self._start(script, args)
        sink = _Sink(process, cap=RUN_OUTPUT)
        process.attach(sink)
        if stdin:
            process.write(stdin)
        process.write_eof()
        await sink.ended.wait()
        if sink.overflowed:
            with contextlib.suppress(ExecError, OSError):
                await process.terminate()
            raise ExecError(f"the operation sent more than {RUN_OUTPUT} bytes of output")
        status = await process.wait_exit()
        process.close()
        return OpResult(-1 if status is None else status, bytes(sink.out), bytes(sink.err))

    async def stream(self, script: str, *args: str) -> ReadStream:
        """Run `script` (with `args` as $1...), its output read as it comes (ReadStream)."""
        process = await self._start(script, args)
        sink = _Sink(process, READ_BUFFER)
        process.attach(sink)
        process.write_eof()
        return ReadStream(process, sink, 0)

    async def has_sftp_server(self) -> bool | None:
        """Whether the image has an sftp-server of its own; None if the helper cannot run here."""
        done = await self.run(
            'for p in "$@"; do [ -x "$p" ] && exit 0; done; exit 3',
            "/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/libexec/sftp-server",
            "/usr/lib/ssh/sftp-server", "/usr/lib/sftp-server",
        )  # fmt: skip
        return {0: True, 3: False}.get(done.status)

    async def read_stream(self, path: str, offset: int) -> ReadStream:
        script = '[ "$2" -eq 0 ] && exec "$B" cat -- "$1"; exec "$B" tail -c "+$(($2 + 1))" -- "$1"'
        stream = await self.stream(script, path, str(offset))
        stream.position = offset
        return stream

    async def write_stream(self, path: str, offset: int) -> WriteStream:
        script = (
            'exec 1<>"$1" || exit 1; '
            '[ "$2" -eq 0 ] || "$B" dd bs=1 seek="$2" count=0 conv=notrunc 2>/dev/null || exit 1; '
            'exec "$B" cat'
        )
        process = await self._start(script, [path, str(offset)])
        # Its stdout is the file: anything it sends is someone else's writing (module docstring).
        sink = _Sink(process, cap=RUN_OUTPUT)
        process.attach(sink)
        return WriteStream(process, sink, offset)
