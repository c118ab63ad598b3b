"""An engine answer read as a stream, with flow control, for sessions that only read (logs, files).

`EngineStream` sends one `GET` with `Connection: close` to the engine and
reads its answer with an asyncio protocol: the head, then the body as it
comes (a chunked body is taken apart piece by piece, never held whole), to
`body_received`. An answer other than 200 is read to its end and resolves
`answered` with its status and its message, so that the caller can say what
the engine refused. Pausing and resuming the transport is the flow control:
while the SSH channel the bytes go to is full, nothing more is read from the
engine's socket, and the engine waits.

`StreamedProcess` is what a session drives (exec_bridge.SessionProcess) for
such a stream: output only (input is ignored), its exit status set by what
decoded the stream (`finish`), ended by closing the connection.
"""

import asyncio
import json
from typing import Any

from potluck.contracts.link import limit_reads
from potluck.hostd import docker_http
from potluck.hostd.exec_errors import ExecError
from potluck.hostd.exec_stream import ExecSink

__all__ = ["ChunkDecoder", "EngineStream", "StreamedProcess", "open_stream"]


class ChunkDecoder:
    """A `Transfer-Encoding: chunked` body, decoded across reads; `done` after the last chunk."""

    def __init__(self) -> None:
        self._line = bytearray()
        self._left = 0
        self._crlf = 0
        self.done = False

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        pos, size = 0, len(data)
        while pos < size and not self.done:
            if self._crlf:
                skip = min(self._crlf, size - pos)
                self._crlf -= skip
                pos += skip
                continue
            if self._left:
                take = min(self._left, size - pos)
                out.append(data[pos : pos + take])
                self._left -= take
                pos += take
                if not self._left:
                    self._crlf = 2
                continue
            end = data.find(b"\n", pos)
            if end < 0:
                self._line += data[pos:]
                if len(self._line) > 1024:
                    raise ExecError("the engine sent a chunk size line without an end")
                break
            self._line += data[pos:end]
            pos = end + 1
            size_text = bytes(self._line).split(b";")[0].strip()
            self._line.clear()
            try:
                chunk = int(size_text, 16)
            except ValueError:
                raise ExecError(f"the engine sent a bad chunk size {size_text[:20]!r}") from None
            if chunk == 0:
                self.done = True
            else:
                self._left = chunk
        return out


class EngineStream(asyncio.Protocol):
    """One `GET` to the engine, its body streamed to `body_received` (a subclass's)."""

    def __init__(self, path: str, what: str) -> None:
        self._request = docker_http.request_bytes("GET", path, None, {"Connection": "close"})
        self.what = what
        self._head = bytearray()
        self._in_head = True
        self._chunks: ChunkDecoder | None = None
        self._error: bytearray | None = None
        self._status = 0
        self._ended = False
        #: (status, the engine's message for a status other than 200).
        self.answered: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def body_received(self, data: bytes) -> None:
        raise NotImplementedError

    def body_ended(self) -> None:
        """Called once, after the whole body (or when the connection is lost)."""
        raise NotImplementedError

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        limit_reads(transport)
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > docker_http.HEAD_MAX:
                    self._fail(ExecError(f"the engine's answer to {self.what} has no end of head"))
                return
            head, data = bytes(self._head[:end]), bytes(self._head[end + 4 :])
            self._head.clear()
            self._in_head = False
            try:
                self._status, headers = docker_http.parse_head(head)
            except ExecError as exc:
                self._fail(exc)
                return
            if "chunked" in headers.get("transfer-encoding", ""):
                self._chunks = ChunkDecoder()
            if self._status != 200:
                self._error = bytearray()
            elif not self.answered.done():
                self.answered.set_result((200, ""))
        pieces = [data] if self._chunks is None else self._chunks.feed(data)
        for piece in pieces:
            if not piece:
                continue
            if self._error is not None:
                self._error += piece[: 64 * 1024 - len(self._error)]
            else:
                self.body_received(piece)
        if self._chunks is not None and self._chunks.done and self.transport is not None:
            self.transport.close()

    def _fail(self, exc: Exception) -> None:
        if not self.answered.done():
            self.answered.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool:
        self._end()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answered.done():
            if self._error is not None:
                body = bytes(self._error).decode(errors="replace").strip()
                parsed: Any
                try:
                    parsed = json.loads(body)
                except ValueError:
                    parsed = body
                self.answered.set_result((self._status, docker_http.message(parsed)))
            else:
                self.answered.set_exception(ExecError(f"the engine closed the stream of {self.what}: {exc}"))
        self._end()

    def _end(self) -> None:
        if not self._ended and self._error is None and self.answered.done():
            self._ended = True
            self.body_ended()


async def open_stream(url: str, protocol: EngineStream, timeout: float) -> tuple[int, str]:
    """Connect `protocol` to the engine at `url` and wait for the answer's head: (status, message)."""
    loop = asyncio.get_running_loop()
    try:
        where = docker_http.address(url)
        if isinstance(where, str):
            async with asyncio.timeout(timeout):
                await loop.create_unix_connection(lambda: protocol, where)
        else:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: protocol, *where)
        async with asyncio.timeout(timeout):
            return await protocol.answered
    except (TimeoutError, OSError) as exc:
        if protocol.transport is not None:
            protocol.transport.close()
        raise ExecError(f"{protocol.what}: {type(exc).__name__}: {exc}") from exc
    except BaseException:
        if protocol.transport is not None:
            protocol.transport.close()
        raise


class StreamedProcess:
    """A session's output-only 'process': what a stream from the engine sends, then an exit status."""

    def __init__(self, name: str, container_id: str) -> None:
        self.exec_id = name
        self.container_id = container_id
        self.finished = False
        self.exit_status: int | None = None
        self.transport: asyncio.Transport | None = None
        self.sink: ExecSink | None = None
        self._early: list[tuple[bytes, bool]] = []
        self._done: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    def emit(self, data: bytes, stderr: bool = False) -> None:
        if self.sink is None:
            self._early.append((data, stderr))
        else:
            self.sink.exec_data(data, stderr)

    def finish(self, status: int) -> None:
        """The output is all sent: the session ends with `status`."""
        if self.finished:
            return
        self.finished = True
        self.exit_status = status
        if not self._done.done():
            self._done.set_result(status)
        if self.sink is not None:
            self.sink.exec_eof()

    def attach(self, sink: ExecSink) -> None:
        self.sink = sink
        for data, stderr in self._early:
            sink.exec_data(data, stderr)
        self._early.clear()
        if self.finished:
            sink.exec_eof()

    def write(self, data: bytes) -> None:
        pass  # nothing reads input

    def write_eof(self) -> None:
        pass

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing() and self.transport.is_reading():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing() and not self.transport.is_reading():
            self.transport.resume_reading()

    async def resize(self, width: int, height: int) -> None:
        pass

    async def signal(self, name: str) -> bool:
        return False

    async def wait_exit(self, timeout: float = 10.0) -> int | None:
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(self._done)
        except TimeoutError:
            return None

    async def terminate(self) -> int:
        self.close()
        return 0

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if not self._done.done():
            self._done.set_result(None)
