"""An exec's output as the engine streams it, delivered to the session that runs it.

With a TTY the engine sends the terminal's bytes as they are. Without one it
multiplexes stdout and stderr on the one stream, in frames: an 8-byte header
(the stream: 1 stdout, 2 stderr; three zero bytes; the payload's length,
big-endian) and the payload. A frame may arrive cut anywhere, across reads,
header included; `FrameDecoder` keeps what it needs between reads and hands
back the payload as it comes (a frame's payload is passed on in pieces, never
held until it is whole, so a large frame does not wait on the window of the
SSH channel it goes to).

`ExecStream` is the hijacked connection of `/exec/<id>/start` (docker_http's
`Hijacked`): it decodes the stream and passes the output, its end, and the
engine socket's flow control to an `ExecSink` (the SSH session). Output that
arrives before a sink is attached (with the `101` answer, say) is kept for it.

When the engine cannot start the process once the stream is upgraded (an image
without /bin/sh, a runtime error), it writes its own error into the exec's
stdout (moby's postContainerExecStart: `err.Error() + "\r\n"`): "OCI runtime
exec failed: exec failed: unable to start container process: ...", or
"Container <64 hex> is not running". That reached the user's terminal as if the
command had said it, and the runtime's words can name paths of the member's
machine. A first stdout piece that reads so (`ENGINE_START_FAILURE`) is held
back (`held`): the session asks the engine whether the process ever ran
(ExecProcess.start_failure) and says in its own words what happened; if it did
run (a program that prints that itself) the piece is passed on, as it is as
soon as anything follows it.
"""

import re
import struct
from typing import Protocol

from potluck.hostd.docker_http import Hijacked

__all__ = ["ENGINE_START_FAILURE", "FRAME_HEADER", "ExecSink", "ExecStream", "FrameDecoder"]

#: How the engine's own error reads when it writes it into an exec's output (see above).
ENGINE_START_FAILURE = re.compile(rb"(OCI runtime exec failed: |Container [0-9a-f]{64} is )")

#: The header of a frame of a multiplexed stream: stream number, 3 bytes of 0, payload length.
FRAME_HEADER = struct.Struct(">BxxxL")
_STDERR = 2


class FrameDecoder:
    """The frames of a multiplexed stdout/stderr stream, decoded across reads."""

    def __init__(self) -> None:
        self._header = bytearray()
        self._left = 0
        self._stderr = False

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        """The payload bytes in `data`, each piece with whether it is stderr; never an empty piece."""
        out: list[tuple[bytes, bool]] = []
        view = memoryview(data)
        while view:
            if self._left == 0:
                need = FRAME_HEADER.size - len(self._header)
                self._header += view[:need]
                view = view[need:]
                if len(self._header) < FRAME_HEADER.size:
                    break
                stream, self._left = FRAME_HEADER.unpack(self._header)
                self._header.clear()
                self._stderr = stream == _STDERR
                continue
            take = view[: self._left]
            self._left -= len(take)
            view = view[len(take) :]
            out.append((bytes(take), self._stderr))
        return out


class ExecSink(Protocol):
    """Where an exec's output goes (the SSH channel), and its flow control."""

    def exec_data(self, data: bytes, stderr: bool) -> None: ...

    def exec_eof(self) -> None:
        """The stream ended: the process exited (or the engine dropped the stream)."""

    def exec_pause(self) -> None:
        """The engine's socket is full: stop reading the user's input."""

    def exec_resume(self) -> None: ...


class ExecStream(Hijacked):
    """The upgraded `/exec/<id>/start` connection: raw (TTY) or framed output, to a sink."""

    def __init__(self, exec_id: str, tty: bool) -> None:
        start = {"Detach": False, "Tty": tty}
        super().__init__("POST", f"/exec/{exec_id}/start", start, "exec start")
        self._decoder = None if tty else FrameDecoder()
        self.sink: ExecSink | None = None
        self._early: list[tuple[bytes, bool]] = []
        self._eof = False
        self._first = True
        #: The first stdout piece, held back while it may be the engine's error (see above).
        self.held: bytes | None = None

    def attach(self, sink: ExecSink) -> None:
        self.sink = sink
        for data, stderr in self._early:
            sink.exec_data(data, stderr)
        self._early.clear()
        if self._eof:
            sink.exec_eof()

    def stream_received(self, data: bytes) -> None:
        if self._decoder is None:
            self._emit(data, False)
        else:
            for piece, stderr in self._decoder.feed(data):
                self._emit(piece, stderr)

    def _emit(self, data: bytes, stderr: bool) -> None:
        if self._first:
            self._first = False
            if not stderr and ENGINE_START_FAILURE.match(data):
                self.held = data
                return
        self.release_held()
        self._deliver(data, stderr)

    def release_held(self) -> None:
        """Pass the held piece on after all: the process ran, and said it."""
        held, self.held = self.held, None
        if held is not None:
            self._deliver(held, False)

    def _deliver(self, data: bytes, stderr: bool) -> None:
        if self.sink is None:
            self._early.append((data, stderr))
        else:
            self.sink.exec_data(data, stderr)

    def stream_ended(self) -> None:
        self._eof = True
        if self.sink is not None:
            self.sink.exec_eof()

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.exec_pause()

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.exec_resume()
