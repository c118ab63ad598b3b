"""OpenSSH's legacy scp protocol (`scp -O`) into a container, within its disk bound.

`scp -O LOCAL ALLOC:PATH` runs `scp -t PATH` in the container (the image's own scp) and
sends it, for each file, a control line `C<mode> <size> <name>`, waits for its answer (one
zero byte: go on), then the file's bytes. The sink writes them straight to the file's own
name, so an upload that fits the allocation's bound but not what is left of it used to be
written whole, past the bound, and hostd's disk guard stopped the allocation.

hostd reads the control lines on their way in (the protocol is plain: a line, then exactly
the bytes it announced) and takes what each file will take of the disk (its size, and
ENTRY_BYTES for the entry, as the guard counts them; a `D` line's directory the same) from
the allocation's disk budget (disk_budget.py, shared with hostd's SFTP and `potluck cp`)
before passing the line on. A file that does not fit is never announced to the container:
hostd answers the client itself with the protocol's warning (`\\x01` and a message), which
OpenSSH's scp prints and counts as an error, going on with the next file and exiting 1 at the
end. Nothing of that file is created; the container stays within its bound and runs on.

scp's sink writes a file over the one of its name in place (and truncates it at the end), so
a file sent again over itself adds to the layer only what it grows by; counted whole, a 40
MB file sent twice into a 64 MB bound was refused the second time. Before refusing a file,
hostd asks (the client waits for the answer to its line anyway) whether the destination is a
file the container's layer already holds (a stat in the container, then the engine's list of
the layer's changes): then only what it grows by is counted. A file of the image's there is
copied into the layer whole when written, so it counts whole, as before.
"""

import asyncio
import posixpath
import shlex
from collections.abc import Sequence

import structlog

from potluck.contracts.uploads import ENTRY_BYTES
from potluck.hostd import disk_budget
from potluck.hostd.budgeted_process import BudgetedProcess
from potluck.hostd.container_files import ContainerFiles
from potluck.hostd.disk_budget import DiskBudget, files_bound
from potluck.hostd.engine_stream import StreamedProcess
from potluck.hostd.exec_bridge import ExecBridge, ExecProcess, SessionProcess
from potluck.hostd.exec_errors import ExecError

__all__ = ["is_scp_sink", "open_scp_sink"]

log = structlog.get_logger(__name__)

#: The size and real path of the regular file a `C` line would write over ($1 the directory the
#: sink writes in, or its target; $2 the line's name), else exit 2.
_DESTINATION = (
    'p=$1; [ -d "$p" ] && p="$p/$2"; [ -f "$p" ] || exit 2; "$B" stat -L -c %s "$p" && "$B" realpath "$p"'
)
#: A control line longer than this is no control line OpenSSH's scp sends (a name is at most
#: 255 bytes; a path is never sent): it is passed on as it is, and the sink refuses it.
_LINE_MAX = 64 * 1024


def is_scp_sink(command: str | None) -> bool:
    """Is `command` the sink side of scp's legacy protocol (`scp [-r -p -d -v] -t PATH`)?"""
    if not command:
        return False
    try:
        argv = shlex.split(command)
    except ValueError:
        return False
    if not argv or argv[0].rsplit("/", 1)[-1] != "scp":
        return False
    for arg in argv[1:]:
        if arg == "--" or not arg.startswith("-"):
            return False
        if "t" in arg[1:]:
            return True
    return False


def _target(argv: Sequence[str]) -> str:
    """The sink's target (`scp -t ... TARGET`, run as `/bin/sh -c COMMAND`) when it is an
    absolute path the shell takes as it is (nothing it would expand): else "", never asked
    about (what hostd would stat need not be what the sink writes)."""
    command = argv[-1] if len(argv) == 3 and argv[1] == "-c" else ""
    try:
        words = shlex.split(command)
    except ValueError:
        return ""
    target = words[-1] if words else ""
    return target if posixpath.isabs(target) and shlex.quote(target) == target else ""


class _ScpSink(BudgetedProcess):
    """The exec of `scp -t`, its control lines checked against the allocation's budget."""

    def __init__(
        self, bridge: ExecBridge, alloc_id: str, process: ExecProcess, budget: DiskBudget, target: str
    ) -> None:
        super().__init__(bridge, alloc_id, process, budget)
        #: Bytes of file data (and the status byte after them) still to pass before a control line.
        self._data = 0
        self._line = bytearray()
        #: The sink's target, and the directories its `D` lines entered (`E` leaves one).
        self._target = target
        self._dirs: list[str] = []
        #: Input that waits while a file's line waits for `_over_itself` (None: none waits),
        #: and whether its end came too.
        self._held: bytearray | None = None
        self._held_eof = False
        self._asking: asyncio.Task[None] | None = None

    def write(self, data: bytes) -> None:
        if self._held is not None:
            self._held += data
            return
        view = memoryview(data)
        while view:
            if self._data:
                n = min(self._data, len(view))
                self.process.write(bytes(view[:n]))
                self._data -= n
                view = view[n:]
                continue
            end = bytes(view).find(b"\n")
            if end < 0:
                self._line.extend(view)
                if len(self._line) > _LINE_MAX:
                    self.process.write(bytes(self._line))
                    self._line.clear()
                return
            self._line.extend(view[: end + 1])
            view = view[end + 1 :]
            line, self._line = bytes(self._line), bytearray()
            self._control(line)

    def _control(self, line: bytes, *, asked: bool = False) -> None:
        """Pass `line` on, unless it announces what does not fit: then answer it here (once
        hostd has asked whether the file is sent over itself, unless `asked`)."""
        kind = line[:1]
        need = 0
        size = 0
        name = ""
        if kind in (b"C", b"D"):
            fields = line[1:].rstrip(b"\n").split(b" ", 2)
            if len(fields) == 3 and fields[1].isdigit():
                size = int(fields[1]) if kind == b"C" else 0
                need = size + ENTRY_BYTES
                name = fields[2].decode(errors="surrogateescape")
        elif line.rstrip(b"\n") == b"E" and self._dirs:
            self._dirs.pop()
        budget = self.budget
        if need and budget is not None and not budget.claim(need):
            if kind == b"C" and not asked and "/" not in name and self._target:
                self._held = bytearray()
                self._asking = asyncio.ensure_future(self._over_itself(line, size, name))
                return
            name = line.rstrip(b"\n").split(b" ", 2)[-1].decode(errors="replace")
            left = budget.shown_left
            bound = self.bridge.disk_bound_of(self.alloc_id)
            log.info("scp_sink.disk_bound_reached", alloc_id=self.alloc_id, need=need, left=left)
            said = (
                f"\x01scp: potluck: {name} needs {need} bytes of disk and allocation {self.alloc_id} "
                f"has {left} left of {files_bound(bound)}: not copied\n"
            )
            if self.sink is not None:
                self.sink.exec_data(said.encode(), False)
            return  # never announced: the sink waits for the next line, as the client does
        self._pass(line, kind, size, name)

    def _pass(self, line: bytes, kind: bytes, size: int, name: str) -> None:
        if kind == b"C":
            self._data = size + 1  # the file's bytes, then the client's status byte
        elif kind == b"D":
            self._dirs.append(name)
        self.process.write(line)

    async def _over_itself(self, line: bytes, size: int, name: str) -> None:
        """A file's line that does not fit: if it would be written over a file the container's
        layer holds, only what it grows by counts; else it is refused as any. Then the input
        held meanwhile goes on."""
        grows: int | None = None
        try:
            where = posixpath.join(self._target, *self._dirs)
            found = await ContainerFiles(self.bridge, self.alloc_id).run(_DESTINATION, where, name)
            words = found.out.decode(errors="surrogateescape").split("\n", 1)
            if found.status == 0 and len(words) == 2 and words[0].isdigit():
                path = words[1].rstrip("\n")
                if await self.bridge.in_layer(self.alloc_id, path):
                    grows = max(0, size - int(words[0]))
        except (ExecError, OSError) as exc:
            log.warning("scp_sink.layer_unknown", alloc_id=self.alloc_id, error=str(exc))
        log.info("scp_sink.sent_over_itself", alloc_id=self.alloc_id, grows=grows)
        if self.process.finished:
            return
        if grows is not None and self.budget is not None and self.budget.claim(grows):
            self._pass(line, b"C", size, name)
        else:
            self._control(line, asked=True)
        held, self._held = self._held or bytearray(), None
        if held:
            self.write(bytes(held))
        if self._held_eof:
            self.write_eof()

    def write_eof(self) -> None:
        if self._held is not None:
            self._held_eof = True
            return
        if self._line:
            self.process.write(bytes(self._line))
            self._line.clear()
        self.process.write_eof()


async def open_scp_sink(
    bridge: ExecBridge, alloc_id: str, argv: Sequence[str], env: dict[str, str]
) -> SessionProcess:
    """`argv` (an scp sink, `is_scp_sink`) run in the container, each file it is sent taken from
    the allocation's budget first; a session that ends at once saying why when hostd does not
    know the bound yet."""
    container_id = await bridge.container_for(alloc_id)
    try:
        budget = await disk_budget.join(bridge, alloc_id)
    except disk_budget.BoundUnknown as exc:
        process = StreamedProcess("scp", container_id)
        process.emit(f"\x02scp: potluck: {exc}\n".encode())
        process.finish(1)
        return process
    try:
        opened = await bridge.open(alloc_id, argv, tty=False, env=env)
    except BaseException:
        disk_budget.leave(bridge, alloc_id, budget)
        raise
    return _ScpSink(bridge, alloc_id, opened, budget, _target(argv))
