"""The image's own sftp-server, its uploads held to what is left of the allocation's disk bound.

scp's default (SFTP) mode and sftp's `put` run the image's sftp-server in the container
(gateway_link.command_argv); it writes whatever it is sent, so an upload that fit the
allocation's bound but not what is left of it was written whole, and hostd's disk guard then
stopped the allocation. hostd now reads the SFTP stream on its way between the client and
that server (protocol version 3, which OpenSSH's clients and server speak: packets of a
uint32 length, a type byte, a uint32 request id, then the request), and takes what each
request can add to the container's disk from the allocation's budget (disk_budget.py, shared
with hostd's own SFTP server, `potluck cp` and `scp -O`) before the server sees it:

- OPEN for writing: decided once hostd has the server's answer to a STAT of its own of the
  path (the open waits for it, rather than following it: a server that runs requests at once
  could otherwise run the open first). A file it creates counts ENTRY_BYTES (as the guard
  counts every entry). A file there that it keeps (not emptied: OpenSSH's scp opens
  WRITE|CREAT and truncates at the end) counts its size: opened for writing, a file of the
  image's is copied whole into the container's layer, however little is then written (before,
  a byte written into each of the image's large files took one byte of the budget and
  gigabytes of the layer). When that does not fit, hostd asks before refusing whether the
  container's own layer already holds the file (a REALPATH of its own, then the engine's list
  of the layer's changes): a file sent again over itself is copied nowhere, and counts
  nothing. The handle the server answers with is remembered with the open.
- WRITE: what it adds past the furthest byte its handle has written, or past the end of the
  file the open kept (the whole of it in append mode, where the offset is not where it lands).
  A write to a handle no open answered with is refused.
- SETSTAT / lsetstat of a size: the size (hostd does not know what the file held); FSETSTAT:
  what it adds past the handle's furthest byte. MKDIR, SYMLINK, hardlink: ENTRY_BYTES.
- EXTENDED requests hostd cannot account (copy-data: the server copies without the bytes
  passing here) are answered OP_UNSUPPORTED, and left out of the server's VERSION answer, so
  OpenSSH's clients do not offer them. Request types past version 3 are answered so too, and
  a client's INIT asking for a later version is passed on asking for 3.

Before a request is refused because it does not fit, and only if this session holds the
budget alone and took some of it since it was measured, hostd waits for the server's answers
to every request of the session's that may grow the disk and has the budget measured again
(disk_budget.remeasure): what the session counted can be more than the layer holds (`put` of
a file twice in one session: the second empties the first at its open), and only what does
not fit the layer as it is now is refused.

A request that does not fit is never passed on: hostd answers it itself with a FAILURE
status saying what it needs and what is left (NO_SPACE_ON_FILESYSTEM is version 5's), and
says it on the session's stderr too, which OpenSSH's clients print (they print only
"Failure" of the status). The answer comes in the server's order: in the refused request's
place hostd sends the server an EXTENDED request of its own that the server does not know,
and puts its answer in place of the server's to that (OpenSSH's clients keep the last status
of an upload's pipelined writes as the upload's: a refusal that passed the OKs of the writes
before it would be followed by them, and scp would exit 0). Every later write to that
handle is refused the same way, and when the client closes it, if its open made or emptied
the file, hostd removes it (a REMOVE of its own) and gives back what its writes took: nothing
half-written is left under the upload's name, the container stays within its bound and runs
on. (A file that was there before and written over in place is left as the writes left it.)
hostd's own requests use ids from OUR_IDS up, which a client may not use (it is answered
FAILURE): OpenSSH's clients count from 1. The server's answers to them never reach the client.

What hostd buffers is bounded: a packet's start (a WRITE's data is passed on as it comes),
and a whole packet only for the other requests, each at most MAX_PACKET (OpenSSH's
sftp-server's own limit, past which it exits); what it remembers too: at most MAX_FILES files
open (one more open is answered "too many open"), and its own requests unanswered. A client
announcing a longer packet, or a packet too short for its type, has its session ended, saying
why; hostd goes on. The server's answers are passed on as they come (its packets are read
only as far as their id), except those hostd acts on: HANDLE answers to opens, VERSION, and
the answers to its own requests. A chunk of the stream that lies wholly inside a WRITE's data
(or a packet of the server's passed on) is passed on as it is: the filter costs hostd about
0.07 ms of CPU per MB uploaded (a 200 MB stream of scp's 255 KiB writes in 32 KiB chunks: 14
ms, against 2 ms for passing it on bare).

What the user reads of a failure is the server's own status (the container's sftp-server, of
the container's files) or hostd's words: where the engine fails to measure the container, the
request is answered FAILURE saying the engine could not run it (engine_failures.py, the rule
of hostd's own SFTP server), the engine's words (its socket's path, the container's id) going
to hostd's log as `sftp_filter.engine_failed`. An engine that goes away ends the server's
exec, and the session ends as any session's does (gateway_link.py says so on stderr).

A request that waits (for the budget, the STAT before an open, a new measure) holds back the
client's input behind it, as a join does. The STAT before each open for writing costs one
request and answer inside the container per file uploaded.

The budget is joined at the first request that can grow the disk (a session that only reads
never measures it) and held until the session ends; while it is being joined (the engine
measures the container: 0.35 to 0.7 s on a loaded test machine, what `scp -O` and `potluck
cp` wait too) the client's input waits, held back by the SSH window.
"""

import asyncio
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field

import structlog

from potluck.contracts.uploads import ENTRY_BYTES
from potluck.hostd import disk_budget
from potluck.hostd.budgeted_process import BudgetedProcess
from potluck.hostd.engine_failures import said_to_user
from potluck.hostd.exec_bridge import ExecBridge, ExecProcess
from potluck.hostd.exec_errors import ExecError
from potluck.hostd.exec_stream import ExecSink

__all__ = ["MAX_FILES", "MAX_PACKET", "OUR_IDS", "SftpFilter"]

log = structlog.get_logger(__name__)

#: The longest packet (its length field) passed on: OpenSSH's sftp-server's SFTP_MAX_MSG_LENGTH.
MAX_PACKET = 256 * 1024
#: The request ids hostd gives its own requests (counting up to 2**32 - 1); a client's request
#: with one is refused.
OUR_IDS = 0xFFFF0000
#: Files one session may hold open (and opens it may have waiting for the server's answer):
#: what hostd remembers of them is bounded. OpenSSH's sftp-server allows about as many.
MAX_FILES = 1024
#: hostd's own requests the server may leave unanswered at once: one that answers none is no
#: SFTP server, and what hostd keeps for them is bounded.
_MAX_OURS = 4096
#: The longest handle hostd remembers (OpenSSH's are 4 bytes; the protocol says at most 256).
_MAX_HANDLE = 256

# SFTP version 3's packet types (draft-ietf-secsh-filexfer-02).
_INIT, _VERSION, _OPEN, _CLOSE, _WRITE, _SETSTAT, _FSETSTAT = 1, 2, 3, 4, 6, 9, 10
_REMOVE, _MKDIR, _REALPATH, _STAT, _SYMLINK, _EXTENDED = 13, 14, 16, 17, 20, 200
_STATUS, _HANDLE, _NAME, _ATTRS = 101, 102, 104, 105
_REQUESTS = frozenset(range(3, 21)) | {_EXTENDED}
_FXF_WRITE, _FXF_APPEND, _FXF_CREAT, _FXF_TRUNC, _FXF_EXCL = 0x02, 0x04, 0x08, 0x10, 0x20
_FX_OK, _FX_NO_SUCH_FILE, _FX_FAILURE, _FX_OP_UNSUPPORTED = 0, 2, 4, 8
_ATTR_SIZE, _ATTR_UIDGID, _ATTR_PERMISSIONS = 0x01, 0x02, 0x04
_S_IFMT, _S_IFREG = 0o170000, 0o100000

#: EXTENDED requests passed on (those that may grow the disk are counted: _extended).
_EXTENSIONS = frozenset(
    {
        b"posix-rename@openssh.com",
        b"statvfs@openssh.com",
        b"fstatvfs@openssh.com",
        b"hardlink@openssh.com",
        b"fsync@openssh.com",
        b"lsetstat@openssh.com",
        b"limits@openssh.com",
        b"expand-path@openssh.com",
        b"home-directory",
        b"users-groups-by-id@openssh.com",
    }
)

#: The EXTENDED request hostd sends in place of a client's request it answers itself.
_IN_PLACE = b"in-place@potluck"

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HEAD = struct.Struct(">IBI")  # length, type, request id


class _Malformed(Exception):
    """The stream is no SFTP: the session is ended."""


@dataclass(eq=False)
class _Open:
    path: bytes
    pflags: int
    #: Made (or emptied) by the open: an upload whose refusal removes the file.
    fresh: bool
    #: The size of the file the open keeps (not emptied): its writes within it add nothing.
    kept: int = 0
    #: What the open took of the budget for it: its copy into the container's layer.
    copied: int = 0


@dataclass(eq=False)
class _File:
    open: _Open
    #: The furthest byte this handle wrote (or set the size to), or the size of the file it
    #: opened without emptying (counted at the open): writes past it grow the disk.
    end: int = 0
    #: What its writes took from the budget.
    taken: int = 0
    #: A write to it was refused: the upload cannot be whole.
    refused: bool = False


@dataclass(frozen=True)
class _Before:
    """What the server's STAT said of a path before an open for writing."""

    exists: bool
    #: The size of the regular file there (0 for anything else, or when the STAT failed).
    size: int
    #: The container's own layer holds it (it is not copied up), as the engine said; None
    #: until asked (only when its copy would not fit what is left).
    in_layer: bool | None = None


def _before(answer: bytes) -> _Before:
    """The STAT's answer: NO_SUCH_FILE, or the ATTRS of what is there (any other failure: it
    is taken to exist, its size unknown: such an open fails at the server too)."""
    if answer[4] != _ATTRS:
        code = _U32.unpack_from(answer, 9)[0] if answer[4] == _STATUS and len(answer) >= 13 else None
        missing = code == _FX_NO_SUCH_FILE
        return _Before(exists=not missing, size=0)
    flags, at = _u32(answer, 9)
    size = 0
    if flags & _ATTR_SIZE:
        if at + 8 > len(answer):
            raise _Malformed("the container's sftp-server sent ATTRS shorter than their flags say")
        size = int(_U64.unpack_from(answer, at)[0])
        at += 8
    if flags & _ATTR_UIDGID:
        at += 8
    if flags & _ATTR_PERMISSIONS:
        permissions, at = _u32(answer, at)
        if permissions & _S_IFMT != _S_IFREG:
            size = 0
    return _Before(exists=True, size=size)


@dataclass
class _Outbound:
    """One direction's parse: the current packet's start, and what is left of it to pass on or
    to drop."""

    head: bytearray = field(default_factory=bytearray)
    through: int = 0
    skip: int = 0

    def pass_or_skip(self, view: memoryview, at: int, sending: list[bytes | memoryview]) -> int:
        """Past what is left to pass on as it is (appended to `sending`) or to drop, from `at`
        in `view`: the position after it, or `at` when the packet's head is being read."""
        if self.through:
            n = min(self.through, len(view) - at)
            sending.append(view[at : at + n])
            self.through -= n
            return at + n
        if self.skip:
            n = min(self.skip, len(view) - at)
            self.skip -= n
            return at + n
        return at

    def read_head(
        self, view: memoryview, at: int, need: Callable[[bytearray], int]
    ) -> tuple[bytes | None, int]:
        """Read the current packet's head from `at` in `view`, as much as `need` asks for what is
        held so far: the head, once complete, and the position after what was read."""
        head = self.head
        wanted = need(head)
        n = min(wanted - len(head), len(view) - at)
        head += view[at : at + n]
        at += n
        if len(head) < wanted or wanted != need(head):
            return None, at
        self.head = bytearray()
        return bytes(head), at


def _string(packet: bytes, at: int) -> tuple[bytes, int]:
    if at + 4 > len(packet):
        raise _Malformed("a string past the packet's end")
    (n,) = _U32.unpack_from(packet, at)
    end = at + 4 + n
    if end > len(packet):
        raise _Malformed("a string past the packet's end")
    return packet[at + 4 : end], end


def _u32(packet: bytes, at: int) -> tuple[int, int]:
    if at + 4 > len(packet):
        raise _Malformed("a number past the packet's end")
    return _U32.unpack_from(packet, at)[0], at + 4


def _attrs_size(packet: bytes, at: int) -> int | None:
    """The size an ATTRS at `at` sets, if it sets one."""
    flags, at = _u32(packet, at)
    if not flags & _ATTR_SIZE:
        return None
    if at + 8 > len(packet):
        raise _Malformed("a size past the packet's end")
    return int(_U64.unpack_from(packet, at)[0])


def _packet(kind: int, request_id: int, body: bytes) -> bytes:
    return _HEAD.pack(5 + len(body), kind, request_id) + body


def _sftp_string(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def _status(request_id: int, code: int, message: str) -> bytes:
    body = _U32.pack(code) + _sftp_string(message.encode()) + _sftp_string(b"en")
    return _packet(_STATUS, request_id, body)


class SftpFilter(BudgetedProcess):
    """The exec of the image's sftp-server, its requests checked against the allocation's disk
    budget on their way in (module docstring). It is the exec's sink, and passes its output on
    to the session's."""

    def __init__(self, bridge: ExecBridge, alloc_id: str, process: ExecProcess) -> None:
        super().__init__(bridge, alloc_id, process, None)
        self._in = _Outbound()
        self._out = _Outbound()
        #: Client input that waits while a request waits (`_wait`).
        self._held: list[bytes] | None = None
        #: The request (a WRITE's head) that waits for `_step`, then is decided again.
        self._waiting: bytes | None = None
        #: What the waiting request waits for: the budget joined, the server's STAT of the path
        #: it opens, the budget measured again; its refusal, if it is to be refused.
        self._step: Coroutine[None, None, str | None] | None = None
        self._stepping: asyncio.Task[None] | None = None
        #: The STAT's answer for the open waiting for it, by the open's request id and path.
        self._stat: tuple[int, bytes, _Before] | None = None
        #: The budget was measured again for the request decided now: it is not measured twice.
        self._measured = False
        #: The client's requests passed on that may grow the disk, until the server answers them:
        #: the budget is measured again only when none is on its way.
        self._unanswered: set[int] = set()
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._engine_paused = False
        self._broken = False
        self._over = False
        self._ending: asyncio.Task[int] | None = None
        #: Opens passed on, by request id, until the server answers them.
        self._opening: dict[int, _Open] = {}
        self._files: dict[bytes, _File] = {}
        #: hostd's own requests, by id: what to do with the server's answer.
        self._ours: dict[int, Callable[[bytes], bytes | None]] = {}
        self._next_id = OUR_IDS

    # The client's side: the session writes its input here.

    def write(self, data: bytes) -> None:
        if self._broken:
            return
        if self._held is not None:
            self._held.append(data)
            return
        self._feed(data)

    def write_eof(self) -> None:
        if self._held is not None:
            self._held.append(b"")  # the end, once what is held was passed on
            return
        self.process.write_eof()

    def _feed(self, data: bytes) -> None:
        """Pass `data` on, request by request; stop (keeping the rest) when a request waits for
        the budget."""
        if self._in.through >= len(data):  # all of it inside a WRITE's data: as it is
            self._in.through -= len(data)
            self.process.write(data)
            return
        sending: list[bytes | memoryview] = []
        try:
            rest = self._parse_in(memoryview(data), sending)
        except _Malformed as exc:
            self._send(sending)
            self._break(str(exc))
            return
        self._send(sending)
        if rest is not None:
            self._held = [bytes(rest)] if rest else []

    def _send(self, sending: list[bytes | memoryview]) -> None:
        if sending:
            self.process.write(b"".join(sending))

    def _parse_in(self, view: memoryview, sending: list[bytes | memoryview]) -> memoryview | None:
        """Parse the client's `view`, what is to go to the server appended to `sending`; what is
        left of it when a request waits for the budget (None when all was parsed)."""
        state = self._in
        at, size = 0, len(view)
        while at < size:
            if (past := state.pass_or_skip(view, at, sending)) != at:
                at = past
                continue
            head, at = state.read_head(view, at, self._in_need)
            if head is None:
                continue
            if not self._decide(head, sending):
                self._wait(head)
                return view[at:]
        return None

    def _decide(self, head: bytes, sending: list[bytes | memoryview]) -> bool:
        """A request (a WRITE's head): passed on or answered here; False, nothing done, when it
        waits for `_step` first."""
        if head[4] == _WRITE:
            return self._write(head, sending)
        return self._request(head, sending)

    def _passed(self, request_id: int) -> None:
        """A request that may grow the disk goes to the server: on its way until answered."""
        self._unanswered.add(request_id)
        self._quiet.clear()

    def _fits(self, growth: int) -> bool | None:
        """Does `growth` fit the budget (claimed if so)? None when the budget is to be measured
        again before saying no (disk_budget.remeasure): `_step` is set to that."""
        assert self.budget is not None
        if self.budget.claim(growth):
            return True
        if self._measured or self.budget.sessions != 1 or self.budget.claimed <= 0:
            return False
        self._step = self._remeasure()
        return None

    def _in_need(self, head: bytearray) -> int:
        """How much of the client's packet to hold before deciding on it: its length and type,
        then all of it, or for a WRITE all but its data."""
        if len(head) < 5:
            return 5
        length = int(_U32.unpack_from(head)[0])
        if length > MAX_PACKET:
            raise _Malformed(f"the SFTP client sent a packet of {length} bytes, more than {MAX_PACKET}")
        if length < 5:
            raise _Malformed(f"the SFTP client sent a packet of {length} bytes, too short for any")
        if head[4] != _WRITE:
            return 4 + length
        if len(head) < 13:
            return 13
        handle_len = int(_U32.unpack_from(head, 9)[0])
        need = 13 + handle_len + 12
        if handle_len > _MAX_HANDLE or need > 4 + length:
            raise _Malformed("the SFTP client sent a WRITE whose handle does not fit it")
        return need

    def _write(self, head: bytes, sending: list[bytes | memoryview]) -> bool:
        """A WRITE's start (its data follows): passed on with its data if what it adds fits;
        False, nothing done, when the budget is to be measured again first."""
        length, _, request_id = _HEAD.unpack_from(head)
        handle, at = _string(head, 9)
        (offset,) = _U64.unpack_from(head, at)
        (count,) = _U32.unpack_from(head, at + 8)
        rest = 4 + length - len(head)
        if count != rest:
            raise _Malformed("the SFTP client sent a WRITE whose data is not its packet's length")
        file = self._files.get(handle)
        refusal = None
        if request_id >= OUR_IDS:
            refusal = self._reserved(request_id)
        elif file is None:
            refusal = _status(request_id, _FX_FAILURE, "no such handle (no open answered with it)")
        elif self.budget is None or not file.open.pflags & (_FXF_WRITE | _FXF_APPEND):
            refusal = _status(request_id, _FX_FAILURE, "the file was not opened for writing")
        elif file.refused:
            refusal = _status(request_id, _FX_FAILURE, "an earlier write to this file passed the disk bound")
        else:
            end = offset + count
            growth = count if file.open.pflags & _FXF_APPEND else max(0, end - file.end)
            fits = self._fits(growth)
            if fits is None:
                return False
            if fits:
                file.taken += growth
                file.end = max(file.end, end)
                sending.append(head)
                self._passed(request_id)
                self._in.through = rest
                return True
            file.refused = True
            refusal = self._no_space(request_id, growth, file.open.path)
        self._answer(sending, refusal)
        self._in.skip = rest
        return True

    def _request(self, packet: bytes, sending: list[bytes | memoryview]) -> bool:
        """A whole request other than WRITE: passed on (or answered here); False, nothing done,
        when it needs the budget, which is not joined yet."""
        kind = packet[4]
        if kind == _INIT:
            version, _ = _u32(packet, 5)
            sending.append(packet if version <= 3 else packet[:5] + _U32.pack(3) + packet[9:])
            return True
        if len(packet) < 9:
            raise _Malformed(f"the SFTP client sent a request (type {kind}) without its id")
        (request_id,) = _U32.unpack_from(packet, 5)
        if request_id >= OUR_IDS:
            self._answer(sending, self._reserved(request_id))
            return True
        if kind not in _REQUESTS:
            self._answer(
                sending, _status(request_id, _FX_OP_UNSUPPORTED, f"request type {kind} is not offered here")
            )
            return True
        growth = 0
        opened: _Open | None = None
        file: _File | None = None
        size: int | None = None
        #: What a refusal names.
        name = b""
        if kind == _OPEN:
            path, at = _string(packet, 9)
            pflags, at = _u32(packet, at)
            size = _attrs_size(packet, at)
            name = path
            if len(self._opening) + len(self._files) >= MAX_FILES:
                said = f"too many open files in this session (at most {MAX_FILES}): close some first"
                self._answer(sending, _status(request_id, _FX_FAILURE, said))
                return True
            if not pflags & (_FXF_WRITE | _FXF_APPEND | _FXF_CREAT | _FXF_TRUNC):
                self._opening[request_id] = _Open(path, pflags, fresh=False)
                sending.append(packet)
                return True
            if self.budget is None:
                self._step = self._join()
                return False
            stat = self._stat
            if stat is None or stat[:2] != (request_id, path):
                self._step = self._stat_first(request_id, path, sending)
                return False
            there = stat[2]
            truncated = bool(pflags & _FXF_TRUNC)
            # Opened for writing, a file of the image's is copied whole into the container's
            # layer (overlayfs copies up at the open), however little is written to it: its
            # size is counted here, and writes within it add nothing more. Emptied by the open,
            # nothing of it stays once the open returns.
            kept = 0 if truncated else there.size
            copied = 0 if there.in_layer else kept
            growth = (ENTRY_BYTES if pflags & _FXF_CREAT and not there.exists else 0) + copied + (size or 0)
            fresh = truncated or not there.exists
            opened = _Open(path, pflags, fresh=fresh, kept=kept, copied=copied)
        elif kind == _SETSTAT:
            name, at = _string(packet, 9)
            growth = _attrs_size(packet, at) or 0
        elif kind == _FSETSTAT:
            handle, at = _string(packet, 9)
            size = _attrs_size(packet, at)
            if size is not None:
                file = self._files.get(handle)
                if file is None:
                    self._answer(
                        sending, _status(request_id, _FX_FAILURE, "no such handle (no open answered with it)")
                    )
                    return True
                growth = max(0, size - file.end)
                name = file.open.path
        elif kind in (_MKDIR, _SYMLINK):
            growth = ENTRY_BYTES
            name = _string(packet, 9)[0]
        elif kind == _EXTENDED:
            extension, at = _string(packet, 9)
            if extension not in _EXTENSIONS:
                offered = extension.decode(errors="replace")
                said = f"{offered} is not offered here (hostd cannot count what it writes)"
                self._answer(sending, _status(request_id, _FX_OP_UNSUPPORTED, said))
                return True
            if extension == b"hardlink@openssh.com":
                growth = ENTRY_BYTES
                name = _string(packet, _string(packet, at)[1])[0]  # the new link's name
            elif extension == b"lsetstat@openssh.com":
                name, at = _string(packet, at)
                growth = _attrs_size(packet, at) or 0
        elif kind == _CLOSE:
            self._close(_string(packet, 9)[0], packet, sending)
            return True
        if growth or kind == _OPEN:
            if self.budget is None:
                self._step = self._join()
                return False
            fits = self._fits(growth)
            if fits is None:
                return False
            stat = self._stat
            if not fits and opened is not None and opened.copied and stat and stat[2].in_layer is None:
                # Before saying no: is the file the container's already (sent before, and sent
                # again), not the image's? Then nothing is copied.
                self._step = self._in_layer_first(request_id, path=opened.path, sending=sending)
                return False
            self._stat = None
            if not fits:
                self._answer(sending, self._no_space(request_id, growth, name))
                return True
            if opened is not None:
                self._opening[request_id] = opened
            elif kind == _FSETSTAT and size is not None and file is not None:
                file.end = max(file.end, size)
                file.taken += growth
            self._passed(request_id)
        sending.append(packet)
        return True

    def _close(self, handle: bytes, packet: bytes, sending: list[bytes | memoryview]) -> None:
        """Pass a CLOSE on; after it, remove the file of a refused upload its open made."""
        sending.append(packet)
        file = self._files.pop(handle, None)
        if file is None or not (file.refused and file.open.fresh):
            return
        path = file.open.path

        def removed(answer: bytes) -> None:
            code = _U32.unpack_from(answer, 9)[0] if answer[4] == _STATUS and len(answer) >= 13 else None
            if code != _FX_OK:
                log.warning("sftp_filter.partial_not_removed", alloc_id=self.alloc_id, status=code)
                return
            if self.budget is not None:
                self.budget.give_back(file.taken)
            log.info(
                "sftp_filter.partial_removed", alloc_id=self.alloc_id, path=path.decode(errors="replace")
            )

        sending.append(self._ask(_REMOVE, _sftp_string(path), removed))

    def _ask(self, kind: int, body: bytes, then: Callable[[bytes], bytes | None]) -> bytes:
        """A request of hostd's own (its answer goes to `then`, never to the client)."""
        if len(self._ours) >= _MAX_OURS:
            raise _Malformed(f"the container's sftp-server left {_MAX_OURS} of hostd's requests unanswered")
        request_id = self._next_id
        self._next_id = OUR_IDS if self._next_id >= 0xFFFFFFFF else self._next_id + 1
        self._ours[request_id] = then
        return _packet(kind, request_id, body)

    def _awaited(self, kind: int, body: bytes, sending: list[bytes | memoryview]) -> "asyncio.Future[bytes]":
        """A request of hostd's own, added to `sending`, whose answer a step awaits."""
        answered: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def then(answer: bytes) -> None:
            if not answered.done():
                answered.set_result(answer)

        sending.append(self._ask(kind, body, then))
        return answered

    def _stat_first(
        self, request_id: int, path: bytes, sending: list[bytes | memoryview]
    ) -> Coroutine[None, None, str | None]:
        """A STAT of `path` of hostd's own, to the server before the open waiting for its answer
        (what is there, and how large: the open is decided on it). The open waits for the answer
        rather than following the STAT: a server that runs requests at once could run the open
        first, and the STAT would see what the open made."""
        answered = self._awaited(_STAT, _sftp_string(path), sending)

        async def step() -> str | None:
            self._stat = (request_id, path, _before(await answered))
            return None

        return step()

    def _in_layer_first(
        self, request_id: int, *, path: bytes, sending: list[bytes | memoryview]
    ) -> Coroutine[None, None, str | None]:
        """Ask whether the container's own layer holds `path` (a REALPATH of hostd's own to the
        server names it as the engine does, then the engine's list of the layer's changes); the
        open waiting for it is decided again on the answer. Asked once for an open."""
        assert self._stat is not None
        there = self._stat[2]
        self._stat = (request_id, path, _Before(there.exists, there.size, in_layer=False))
        answered = self._awaited(_REALPATH, _sftp_string(path), sending)

        async def step() -> str | None:
            answer = await answered
            if answer[4] != _NAME or len(answer) < 17:
                return None
            name = _string(answer, 13)[0].decode(errors="surrogateescape")
            try:
                in_layer = await self.bridge.in_layer(self.alloc_id, name)
            except (ExecError, OSError) as exc:
                log.warning("sftp_filter.layer_unknown", alloc_id=self.alloc_id, error=str(exc))
                return None
            log.info("sftp_filter.layer_asked", alloc_id=self.alloc_id, path=name, in_layer=in_layer)
            self._stat = (request_id, path, _Before(there.exists, there.size, in_layer=in_layer))
            return None

        return step()

    def _reserved(self, request_id: int) -> bytes:
        return _status(request_id, _FX_FAILURE, f"request ids from {OUR_IDS} up are hostd's own")

    def _no_space(self, request_id: int, growth: int, path: bytes) -> bytes:
        """The refusal of a request that needs `growth` more than is left; said on stderr too."""
        assert self.budget is not None
        left = self.budget.shown_left
        bound = self.bridge.disk_bound_of(self.alloc_id)
        name = path.decode(errors="replace")
        log.info("sftp_filter.disk_bound_reached", alloc_id=self.alloc_id, growth=growth, left=left)
        said = (
            f"the allocation's disk bound is reached: this needs {growth} bytes more, "
            f"{left} are left (of {disk_budget.files_bound(bound)})"
        )
        if self.sink is not None:
            self.sink.exec_data(f"potluck: {name}: {said}: not written\n".encode(), True)
        return _status(request_id, _FX_FAILURE, said)

    def _answer(self, sending: list[bytes | memoryview], packet: bytes) -> None:
        """An answer of hostd's to the client, in its place among the server's: a request of
        hostd's own that the server answers (an EXTENDED it does not know) goes to the server in
        the client's request's place, and its answer is replaced by `packet`. OpenSSH's clients
        take only the last of a file's write statuses for the upload's: a refusal that passed
        the server's answers to the writes before it would be followed by their OK."""
        sending.append(self._ask(_EXTENDED, _sftp_string(_IN_PLACE), lambda _: packet))

    # A request that waits (the budget joined, a STAT answered, the budget measured again):
    # the client's input waits behind it.

    def _wait(self, head: bytes) -> None:
        """`head` waits for `_step`, then is decided again; the client's input waits too."""
        step, self._step = self._step, None
        assert step is not None
        self._waiting = head
        if self.sink is not None:
            self.sink.exec_pause()
        self._stepping = asyncio.ensure_future(self._after(step))

    async def _join(self) -> str | None:
        try:
            budget = await disk_budget.join(self.bridge, self.alloc_id)
        except disk_budget.BoundUnknown as exc:
            return str(exc)
        except (ExecError, OSError) as exc:
            # As hostd's own SFTP server says it (engine_failures.py): the engine's words name the
            # member's machine, so they go to the log; the request is not passed on.
            return said_to_user(exc, event="sftp_filter.engine_failed", alloc_id=self.alloc_id)
        if self._over:
            disk_budget.leave(self.bridge, self.alloc_id, budget)
        else:
            self.budget = budget
        return None

    async def _remeasure(self) -> str | None:
        """The budget measured again once the server has answered every request of this
        session's that may grow the disk (what it wrote is then in the measure)."""
        await self._quiet.wait()
        if self.budget is not None and not self._over:
            try:
                await disk_budget.remeasure(self.bridge, self.alloc_id, self.budget)
            except (ExecError, OSError) as exc:
                # The budget stays as it was: the request is refused as it would have been.
                log.warning("sftp_filter.remeasure_failed", alloc_id=self.alloc_id, error=str(exc))
        self._measured = True
        return None

    async def _after(self, step: Coroutine[None, None, str | None]) -> None:
        """Once `step` is done, decide the waiting request again, then pass on what was held."""
        try:
            refusal = await step
        except _Malformed as exc:
            self._break(str(exc))
            return
        waiting, self._waiting = self._waiting, None
        held, self._held = self._held or [], None
        if self._over or self._broken or waiting is None:
            return
        sending: list[bytes | memoryview] = []
        try:
            if refusal is not None:
                self._answer(sending, _status(_HEAD.unpack_from(waiting)[2], _FX_FAILURE, refusal))
                if waiting[4] == _WRITE:
                    self._in.skip = 4 + _HEAD.unpack_from(waiting)[0] - len(waiting)
                decided = True
            else:
                decided = self._decide(waiting, sending)
        except _Malformed as exc:
            self._send(sending)
            self._break(str(exc))
            return
        finally:
            self._measured = False
        self._send(sending)
        if not decided:  # waits again, and what was held with it
            self._held = held
            self._wait(waiting)
            return
        for index, data in enumerate(held):
            if not data:
                self.process.write_eof()
                break
            self._feed(data)
            if self._held is not None:  # waits again: the rest after what it kept
                self._held.extend(held[index + 1 :])
                return
        if self.sink is not None and not self._engine_paused:
            self.sink.exec_resume()

    def _break(self, why: str) -> None:
        """The client's stream is no SFTP: say so and end the session (hostd goes on)."""
        if self._broken:
            return
        self._broken = True
        log.warning("sftp_filter.stream_refused", alloc_id=self.alloc_id, reason=why)
        if self.sink is not None:
            self.sink.exec_data(f"potluck: {why}: the session is ended\n".encode(), True)
        self._ending = asyncio.ensure_future(self.process.terminate())

    # The server's side: its output comes here (ExecSink), and goes on to the session.

    def exec_data(self, data: bytes, stderr: bool) -> None:
        sink = self.sink
        if sink is None:
            return
        if stderr:
            sink.exec_data(data, True)
            return
        if self._out.through >= len(data):  # all of it inside a packet passed on: as it is
            self._out.through -= len(data)
            sink.exec_data(data, False)
            return
        sending: list[bytes | memoryview] = []
        try:
            self._parse_out(memoryview(data), sending)
        except _Malformed as exc:
            self._flush_out(sending)
            self._break(str(exc))
            return
        self._flush_out(sending)

    def _flush_out(self, sending: list[bytes | memoryview]) -> None:
        if sending and self.sink is not None:
            self.sink.exec_data(b"".join(sending), False)

    def _parse_out(self, view: memoryview, sending: list[bytes | memoryview]) -> None:
        state = self._out
        at, size = 0, len(view)
        while True:
            if at >= size:
                return
            if (past := state.pass_or_skip(view, at, sending)) != at:
                at = past
                continue
            head, at = state.read_head(view, at, self._out_need)
            if head is None:
                continue
            length = _U32.unpack_from(head)[0]
            if self._unanswered and head[4] != _VERSION and len(head) >= 9:
                self._unanswered.discard(_U32.unpack_from(head, 5)[0])
                if not self._unanswered:
                    self._quiet.set()
            if len(head) < 4 + length:  # passed on as it comes
                sending.append(head)
                state.through = 4 + length - len(head)
            else:
                self._reply(head, sending)

    def _out_need(self, head: bytearray) -> int:
        """How much of the server's packet to hold: its id, then all of it if hostd acts on it."""
        if len(head) < 5:
            return 5
        length = int(_U32.unpack_from(head)[0])
        if length < 5:
            raise _Malformed(f"the container's sftp-server sent a packet of {length} bytes")
        if len(head) < 9:
            return 9
        kind, answers = head[4], _U32.unpack_from(head, 5)[0]
        if kind == _VERSION or answers in self._ours or (kind == _HANDLE and answers in self._opening):
            if length > MAX_PACKET:
                raise _Malformed(f"the container's sftp-server sent a packet of {length} bytes")
            return 4 + length
        return 9

    def _reply(self, packet: bytes, sending: list[bytes | memoryview]) -> None:
        kind = packet[4]
        if kind == _VERSION:
            sending.append(self._version(packet))
            return
        (answers,) = _U32.unpack_from(packet, 5)
        then = self._ours.pop(answers, None)
        if then is not None:
            instead = then(packet)
            if instead is not None:
                sending.append(instead)
            return
        opened = self._opening.pop(answers, None)
        if opened is not None and kind == _HANDLE:
            handle = _string(packet, 9)[0]
            if len(handle) <= _MAX_HANDLE:
                self._files[handle] = _File(opened, end=opened.kept, taken=opened.copied)
        sending.append(packet)

    def _version(self, packet: bytes) -> bytes:
        """The server's VERSION, without the extensions hostd does not pass on."""
        body = bytearray(packet[5:9])
        at = 9
        while at < len(packet):
            name, at = _string(packet, at)
            data, at = _string(packet, at)
            if name in _EXTENSIONS:
                body += _sftp_string(name) + _sftp_string(data)
        return _U32.pack(1 + len(body)) + bytes([_VERSION]) + bytes(body)

    def exec_eof(self) -> None:
        if self.sink is not None:
            self.sink.exec_eof()

    def exec_pause(self) -> None:
        self._engine_paused = True
        if self.sink is not None:
            self.sink.exec_pause()

    def exec_resume(self) -> None:
        self._engine_paused = False
        if self.sink is not None and self._held is None:
            self.sink.exec_resume()

    # The process's life (BudgetedProcess): it is the exec's sink.

    def attach(self, sink: ExecSink) -> None:
        self.sink = sink
        self.process.attach(self)

    def _ended(self, status: int | None) -> int | None:
        self._over = True
        if self._stepping is not None and not self._stepping.done():
            self._stepping.cancel()
        return super()._ended(status)
