"""A minimal HTTP/1.1 client for the Docker engine's API, over its socket, with asyncio.

Why not the docker SDK (docker_driver.py stays the only module that imports
it): the exec side needs one thing the SDK gets wrong, the hijacked stream of
`POST /exec/<id>/start` with `Connection: Upgrade`. The SDK's
`exec_start(socket=True)` hands back the socket under http.client's buffered
reader, which may already hold the first bytes of output that arrived together
with the `101 UPGRADED` answer; those would be lost. Here one asyncio protocol
(`Hijacked`) reads the answer's head and then the stream from the same buffer,
nothing in between, and no thread per session. The SDK is synchronous, too,
and every call would take a thread.

So this is only as much HTTP as the engine's exec calls need:

- `call`: one request with `Connection: close`, the whole answer read to the
  end, a chunked body put back together, the body parsed as JSON.
- `Hijacked` and `hijack`: one request upgraded to a raw stream; a subclass
  says what to do with the stream's bytes.
- (engine_stream.py builds on these: a `GET` whose answer is read as a stream,
  for a container's logs and files.)

Both speak to a `unix://` socket (a laptop's own engine) or `tcp://` (a
private engine in tests). Failures are `ExecError` (exec_errors.py): the exec
side is this client's only user.
"""

import asyncio
import contextlib
import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

from potluck.contracts.link import limit_reads
from potluck.hostd.exec_errors import ExecError

__all__ = [
    "HEAD_MAX",
    "Hijacked",
    "address",
    "call",
    "dechunk",
    "hijack",
    "message",
    "parse_head",
    "request_bytes",
]

#: An upgrade answer's head longer than this is not an answer from the engine.
HEAD_MAX = 64 * 1024


def address(url: str) -> tuple[str, int] | str:
    """(host, port) of a tcp:// URL, or the path of a unix:// one."""
    if url.startswith("unix://"):
        return url.removeprefix("unix://")
    if url.startswith("tcp://"):
        parsed = urllib.parse.urlsplit(url)
        return (parsed.hostname or "127.0.0.1", parsed.port or 2375)
    raise ExecError(f"SSH sessions need a unix:// or tcp:// Docker URL, not {url}")


def request_bytes(method: str, path: str, body: Any, extra: Mapping[str, str]) -> bytes:
    """One HTTP/1.1 request, a JSON body if `body` is not None."""
    data = b"" if body is None else json.dumps(body).encode()
    headers = {"Host": "docker", "Content-Length": str(len(data)), **extra}
    if body is not None:
        headers["Content-Type"] = "application/json"
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + data


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """The status and the headers (names in lower case) of an answer's head, without its blank line."""
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        raise ExecError(f"the engine answered something that is not HTTP: {lines[0]!r}") from None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers


def dechunk(body: bytes) -> bytes:
    """A `Transfer-Encoding: chunked` body put back together (trailers ignored)."""
    out = bytearray()
    pos = 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            raise ExecError("truncated chunked answer from the engine")
        size = int(body[pos:end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += body[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2


def message(body: Any) -> str:
    """The engine's error message in an answer's body."""
    return str(body.get("message")) if isinstance(body, dict) else str(body)


async def _open(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    where = address(url)
    if isinstance(where, str):
        return await asyncio.open_unix_connection(where)
    return await asyncio.open_connection(*where)


async def call(url: str, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    """One request with `Connection: close`; (status, parsed JSON body or None)."""

    async def go() -> tuple[int, Any]:
        reader, writer = await _open(url)
        try:
            writer.write(request_bytes(method, path, body, {"Connection": "close"}))
            raw = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        head, sep, payload = raw.partition(b"\r\n\r\n")
        if not sep:
            raise ExecError(f"{method} {path}: no answer from the engine")
        status, headers = parse_head(head)
        if "chunked" in headers.get("transfer-encoding", ""):
            payload = dechunk(payload)
        parsed: Any = None
        if payload.strip():
            try:
                parsed = json.loads(payload)
            except ValueError:
                parsed = {"message": payload.decode(errors="replace").strip()}
        return status, parsed

    try:
        async with asyncio.timeout(timeout):
            return await go()
    except (TimeoutError, OSError) as exc:
        raise ExecError(f"{method} {path} on {url} failed: {type(exc).__name__}: {exc}") from exc


class Hijacked(asyncio.Protocol):
    """A request upgraded to a raw stream: the answer's head, then the stream, from one buffer.

    `upgraded` resolves at `101`; any other answer fails it with an ExecError
    saying `what` was refused, and closes the connection. Bytes of the stream
    that came with the head go to `stream_received` right after `upgraded`
    resolves, in the same call. A subclass implements `stream_received` and
    `stream_ended` (called once, at the peer's end of stream or when the
    connection is lost), and the flow control callbacks it needs.
    """

    def __init__(self, method: str, path: str, body: Any, what: str) -> None:
        self._request = request_bytes(method, path, body, {"Connection": "Upgrade", "Upgrade": "tcp"})
        self._what = what
        self._head = bytearray()
        self._in_head = True
        self._ended = False
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def stream_received(self, data: bytes) -> None:
        raise NotImplementedError

    def stream_ended(self) -> None:
        raise NotImplementedError

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        limit_reads(transport)  # short event-loop turns, as on the link to the gateway
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > HEAD_MAX:
                    self._fail(ExecError(f"the engine's answer to {self._what} has no end of head"))
                return
            head, rest = bytes(self._head[:end]), bytes(self._head[end + 4 :])
            self._head.clear()
            self._in_head = False
            try:
                status, _ = parse_head(head)
            except ExecError as exc:
                self._fail(exc)
                return
            if status != 101:
                text = rest.decode(errors="replace").strip()
                self._fail(ExecError(f"{self._what} answered {status}: {text}"))
                return
            if not self.upgraded.done():
                self.upgraded.set_result(None)
            data = rest
        if data:
            self.stream_received(data)

    def _fail(self, exc: Exception) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool:
        self._end()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ExecError(f"the engine closed the stream of {self._what}: {exc}"))
        self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self.stream_ended()


async def hijack(url: str, protocol: Hijacked, timeout: float) -> None:
    """Connect `protocol` to the engine at `url` and wait until its request is upgraded.

    Raises what the connection raised (OSError, TimeoutError) or the ExecError
    of a refused upgrade; the connection is closed then.
    """
    loop = asyncio.get_running_loop()
    try:
        where = address(url)
        if isinstance(where, str):
            async with asyncio.timeout(timeout):
                await loop.create_unix_connection(lambda: protocol, where)
        else:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: protocol, *where)
        async with asyncio.timeout(timeout):
            await protocol.upgraded
    except BaseException:
        if protocol.transport is not None:
            protocol.transport.close()
        raise
