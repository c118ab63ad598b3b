"""File operations inside an allocation's container, run by the helper busybox through docker exec.

For the SFTP server hostd provides to images without one (helper_sftp.py).
Every operation is a `docker exec` of `/.potluck/busybox sh -c SCRIPT` in the
container (helper.py: a static busybox mounted read-only), so it runs as the
container's own user, in its mount namespace, with its capabilities, seccomp
profile and disk bound, exactly as the user's own commands do: nothing is
read or written through the host's view of the container's files, so no path
(symlinks and `..` included) can lead out of the container.

Short operations (stat, list, mkdir, rename, ...) collect their output;
reading and writing a file are one long exec each, streamed: `cat` (from an
offset: `tail -c +N`) out of the file, `cat` into it (from an offset: the
file opened read-write on the shell's stdout, moved there by `dd seek=N
count=0`). Paths and arguments are passed as the script's positional
parameters, never spliced into it.

What an exec sends is the container's to decide, not the helper's: a process of the
container's may open an exec's stdout or stderr (/proc/<pid>/fd, as the same user) and write
without end, holding the stream open. hostd, on the member's machine and outside every bound
of the container's, keeps at most OUTPUT_MOST of a collected operation's output and
ERRORS_MOST of any exec's stderr (a reading exec's stdout is held back by flow control
instead): past either, the exec is ended and the operation fails, saying why.
"""

import asyncio
import contextlib
import stat
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from potluck.hostd.exec_bridge import ExecBridge, ExecProcess
from potluck.hostd.exec_errors import ExecError
from potluck.hostd.helper import HELPER_PATH

__all__ = [
    "ERRORS_MOST", "OUTPUT_MOST", "ContainerFiles", "FileStat", "OpResult", "ReadStream", "WriteStream",
    "parse_stat",
]  # fmt: skip

log = structlog.get_logger(__name__)

# Relative paths are taken from the user's home, as sshd's sftp-server does.
_PRELUDE = "B=" + HELPER_PATH + '; cd "$HOME" 2>/dev/null || cd /; '
#: %f raw mode (hex), size, uid, gid, atime, mtime.
STAT_FORMAT = "%f %s %u %g %X %Y"
#: Output buffered from a reading exec before the engine's socket is left unread.
READ_BUFFER = 4 << 20
#: Input queued to a writing exec before the writer waits.
WRITE_BUFFER = 4 << 20
#: The most output a collected operation may send: the listing of a directory of some
#: 500,000 entries (a stat line and a name each).
OUTPUT_MOST = 32 << 20
#: The most any exec may send on its stderr: the helper writes a message there, nothing more.
ERRORS_MOST = 64 << 10


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


class _Sink:
    """An exec's output, collected or streamed to a reader, and its end."""

    def __init__(self, process: ExecProcess, limit: int = 0, most: int = 0) -> None:
        """`limit`: stdout held before reading pauses (a stream's reader takes it); `most`:
        stdout kept at all before the exec is ended (a collected operation's)."""
        self.out = bytearray()
        self.err = bytearray()
        self.ended = asyncio.Event()
        self.more = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self._process = process
        self._limit = limit
        self._most = most
        self._paused = False
        #: Why the exec was cut off (it sent more than hostd keeps); None while it was not.
        self.overflow: str | None = None

    def exec_data(self, data: bytes, stderr: bool) -> None:
        if self.overflow is not None:
            return
        (self.err if stderr else self.out).extend(data)
        if len(self.err) > ERRORS_MOST:
            self._cut(f"wrote more than {ERRORS_MOST} bytes of errors")
            return
        if self._most and len(self.out) > self._most:
            self._cut(f"sent more than {self._most} bytes of output")
            return
        self.more.set()
        if self._limit and not stderr and len(self.out) > self._limit:
            self._process.pause_reading()
            self._paused = True

    def _cut(self, why: str) -> None:
        """Stop taking the exec's output: drop what it sent and close its stream (hostd no
        longer reads it, so a writer in the container blocks on a full pipe); whoever
        waits for the exec learns why. Its processes are ended by the operation (`ended`)."""
        self.overflow = f"the operation in the container {why}, which hostd does not take"
        log.warning("container_files.exec_cut_off", exec_id=self._process.exec_id[:12], why=why)
        self.out.clear()
        self.err.clear()
        self._process.close()
        self.exec_eof()

    def taken(self) -> None:
        """The reader took output: read from the engine again if it was paused."""
        if self._paused and len(self.out) <= self._limit // 2:
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
        """Up to `size` bytes at `position`; fewer only at the end of the file."""
        sink = self.sink
        while len(sink.out) < size and not sink.ended.is_set():
            sink.more.clear()
            await sink.more.wait()
        if sink.overflow is not None:
            await self.process.terminate()
            raise OSError(sink.overflow)
        data = bytes(sink.out[:size])
        del sink.out[:size]
        sink.taken()
        self.position += len(data)
        if not data and sink.ended.is_set():
            status = await self.process.wait_exit()
            if status not in (0, None):
                raise OSError(sink.err.decode(errors="replace").strip() or f"cat exited {status}")
        return data

    async def close(self) -> None:
        if not self.sink.ended.is_set() or self.sink.overflow is not None:
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
        if self.sink.overflow is not None:
            return self.sink.overflow
        return self.sink.err.decode(errors="replace").strip() or "the writer in the container stopped"

    async def close(self) -> None:
        """Wait for everything to be written; OSError with the container's reason if it was not."""
        self.process.write_eof()
        await self.sink.ended.wait()
        if self.sink.overflow is not None:
            await self.process.terminate()
            raise OSError(self.sink.overflow)
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
        """Run `script` (with `args` as $1...) to its end: its exit status and output."""
        process = await self._start(script, args)
        sink = _Sink(process, most=OUTPUT_MOST)
        process.attach(sink)
        if stdin:
            process.write(stdin)
        process.write_eof()
        await sink.ended.wait()
        if sink.overflow is not None:
            await process.terminate()
            raise ExecError(sink.overflow)
        status = await process.wait_exit()
        process.close()
        return OpResult(-1 if status is None else status, bytes(sink.out), bytes(sink.err))

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
        process = await self._start(script, [path, str(offset)])
        sink = _Sink(process, READ_BUFFER)
        process.attach(sink)
        process.write_eof()
        return ReadStream(process, sink, offset)

    async def write_stream(self, path: str, offset: int) -> WriteStream:
        script = (
            'exec 1<>"$1" || exit 1; '
            '[ "$2" -eq 0 ] || "$B" dd bs=1 seek="$2" count=0 conv=notrunc 2>/dev/null || exit 1; '
            'exec "$B" cat'
        )
        process = await self._start(script, [path, str(offset)])
        # The writer's output goes to the file: it sends nothing but, at worst, a message.
        sink = _Sink(process, most=ERRORS_MOST)
        process.attach(sink)
        return WriteStream(process, sink, offset)
