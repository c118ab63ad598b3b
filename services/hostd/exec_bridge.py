"""Docker exec for SSH sessions: start a process in an allocation's container, stream it, end it.

This module talks to the engine's HTTP API itself, over the engine's socket,
with asyncio: it does not import the docker SDK (docker_driver.py stays the
only module that does). The SDK's `exec_start(socket=True)` hands back the
socket under http.client's buffered reader, which may already hold the first
bytes of output that arrived together with the `101 UPGRADED` answer; those
would be lost. Here one asyncio protocol reads the answer's head and then the
stream from the same buffer, nothing in between, and no thread per session.

The calls: `POST /containers/<id>/exec` (exec_create, with a TTY when the
session asked for a PTY), `POST /exec/<id>/start` upgraded to a raw stream
(exec_start with a socket), `POST /exec/<id>/resize` on window changes,
`GET /exec/<id>/json` (exec_inspect) for the exit code, which may still say
running for a moment after the stream ends, so it is polled.

Without a TTY the engine multiplexes stdout and stderr in frames (8-byte
header: stream, 0, 0, 0, big-endian length); they are split back apart here.
The user's end of input is passed on as a half-close of the socket, but only
without a TTY: with one, the engine ends the whole stream at a half-close
while the process runs on (sshd, too, never half-closes a PTY).

Ending a session's processes. The engine has no call to kill an exec. When a
session's channel closes while its process still runs, `terminate()` finds the
exec's process (exec_inspect's `Pid`, a PID on the engine's machine) and its
descendants at that moment, checks each one still belongs to the container's
cgroup (so a recycled PID is never signalled), sends SIGHUP, waits
`kill_grace_s`, and sends SIGKILL to what is left. hostd signals them itself
when it may (root, or the same user); otherwise (a hostd in the docker group)
it runs `kill` inside the container, as the container's user, with the PIDs
the container sees (NSpid). Work a user detached on purpose (`setsid`,
`nohup cmd &` from a shell that then exits, daemons) has left the session's
process tree by then and is not touched.

While a session runs, its exec id is kept in `<state_dir>/sessions/`; a hostd
that starts again ends the processes of sessions its previous run left behind
(`reap_orphans`), since nobody is attached to them any more.

Limitation: the engine must run on hostd's machine (a laptop's own Docker), so
that its PIDs are hostd's; with an engine in a VM (Docker Desktop) the PIDs are
the VM's, and leftover session processes are reported, not ended.
"""

import asyncio
import contextlib
import json
import os
import re
import signal
import struct
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from potluck.hostd.container_config import LABEL_ALLOCATION, LABEL_HOST, LABEL_MANAGED, NAME_PREFIX

__all__ = [
    "ExecBridge", "ExecError", "ExecProcess", "ExecRefused", "ExecSink", "exec_env", "signal_number",
]  # fmt: skip

log = structlog.get_logger(__name__)

_ALLOC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")
_HEAD_MAX = 64 * 1024
_READ_CHUNK = 64 * 1024
_FRAME = struct.Struct(">BxxxL")
#: SSH signal names (RFC 4254 without "SIG") that a session may send.
_SIGNALS = {
    name: getattr(signal, "SIG" + name)
    for name in ("ABRT", "ALRM", "FPE", "HUP", "ILL", "INT", "KILL", "PIPE", "QUIT", "SEGV", "TERM", "USR1",
                 "USR2")
}  # fmt: skip


def signal_number(name: str) -> int | None:
    return _SIGNALS.get(name.upper().removeprefix("SIG"))


class ExecError(Exception):
    """The engine failed or refused; the message is for hostd's log."""


class ExecRefused(ExecError):
    """The session cannot run; the message is safe to show the user."""


class ExecSink(Protocol):
    """Where an exec's output goes (the SSH channel), and its flow control."""

    def exec_data(self, data: bytes, stderr: bool) -> None: ...

    def exec_eof(self) -> None:
        """The stream ended: the process exited (or the engine dropped the stream)."""

    def exec_pause(self) -> None:
        """The engine's socket is full: stop reading the user's input."""

    def exec_resume(self) -> None: ...


# Plain HTTP/1.1 to the engine.


async def _open(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if url.startswith("unix://"):
        return await asyncio.open_unix_connection(url.removeprefix("unix://"))
    if url.startswith("tcp://"):
        parsed = urllib.parse.urlsplit(url)
        return await asyncio.open_connection(parsed.hostname, parsed.port or 2375)
    raise ExecError(f"SSH sessions need a unix:// or tcp:// Docker URL, not {url}")


def _request_bytes(method: str, path: str, body: Any, extra: Mapping[str, str]) -> bytes:
    data = b"" if body is None else json.dumps(body).encode()
    headers = {"Host": "docker", "Content-Length": str(len(data)), **extra}
    if body is not None:
        headers["Content-Type"] = "application/json"
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + data


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
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


def _dechunk(body: bytes) -> bytes:
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


async def _call(url: str, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    """One request with `Connection: close`; (status, parsed JSON body or None)."""

    async def go() -> tuple[int, Any]:
        reader, writer = await _open(url)
        try:
            writer.write(_request_bytes(method, path, body, {"Connection": "close"}))
            raw = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        head, sep, payload = raw.partition(b"\r\n\r\n")
        if not sep:
            raise ExecError(f"{method} {path}: no answer from the engine")
        status, headers = _parse_head(head)
        if "chunked" in headers.get("transfer-encoding", ""):
            payload = _dechunk(payload)
        parsed: Any = None
        if payload.strip():
            try:
                parsed = json.loads(payload)
            except ValueError:
                parsed = {"message": payload.decode(errors="replace").strip()}
        return status, parsed

    try:
        return await asyncio.wait_for(go(), timeout)
    except (TimeoutError, OSError) as exc:
        raise ExecError(f"{method} {path} on {url} failed: {type(exc).__name__}: {exc}") from exc


def _message(body: Any) -> str:
    return str(body.get("message")) if isinstance(body, dict) else str(body)


# The exec's stream.


class _ExecStream(asyncio.Protocol):
    """The upgraded `/exec/<id>/start` connection: the HTTP head, then raw or framed output."""

    def __init__(self, request: bytes, tty: bool) -> None:
        self._request = request
        self._tty = tty
        self._head = bytearray()
        self._in_head = True
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.sink: ExecSink | None = None
        self._early: list[tuple[bytes, bool]] = []
        self._eof = False
        self._frame_header = bytearray()
        self._frame_left = 0
        self._frame_stderr = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if hasattr(transport, "max_size"):
            transport.max_size = _READ_CHUNK  # short event-loop turns: see gateway_link.limit_reads
        transport.write(self._request)

    def attach(self, sink: ExecSink) -> None:
        self.sink = sink
        for data, stderr in self._early:
            sink.exec_data(data, stderr)
        self._early.clear()
        if self._eof:
            sink.exec_eof()

    def _emit(self, data: bytes, stderr: bool) -> None:
        if not data:
            return
        if self.sink is None:
            self._early.append((data, stderr))
        else:
            self.sink.exec_data(data, stderr)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > _HEAD_MAX:
                    self._fail(ExecError("the engine's answer to exec start has no end of head"))
                return
            head, rest = bytes(self._head[:end]), bytes(self._head[end + 4 :])
            self._head.clear()
            self._in_head = False
            status, _ = _parse_head(head)
            if status != 101:
                message = rest.decode(errors="replace").strip()
                self._fail(ExecError(f"exec start answered {status}: {message}"))
                return
            if not self.upgraded.done():
                self.upgraded.set_result(None)
            data = rest
        if self._tty:
            self._emit(data, False)
        else:
            self._demux(data)

    def _demux(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._frame_left == 0:
                need = _FRAME.size - len(self._frame_header)
                self._frame_header += view[:need]
                view = view[need:]
                if len(self._frame_header) < _FRAME.size:
                    return
                stream, self._frame_left = _FRAME.unpack(self._frame_header)
                self._frame_header.clear()
                self._frame_stderr = stream == 2
                continue
            take = view[: self._frame_left]
            self._frame_left -= len(take)
            view = view[len(take) :]
            self._emit(bytes(take), self._frame_stderr)

    def _fail(self, exc: Exception) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool:
        self._finish()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ExecError(f"the engine closed the exec stream: {exc}"))
        self._finish()

    def _finish(self) -> None:
        if self._eof:
            return
        self._eof = True
        if self.sink is not None:
            self.sink.exec_eof()

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.exec_pause()

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.exec_resume()


# Processes on the engine's machine.


@dataclass(frozen=True)
class _Proc:
    pid: int
    ppid: int
    alive: bool


def _stat(pid: int) -> _Proc | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return _Proc(pid=pid, ppid=int(fields[1]), alive=fields[0] not in ("Z", "X"))


def _in_container(pid: int, container_id: str) -> bool:
    try:
        return container_id in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


def _ns_pid(pid: int) -> int | None:
    """The PID the container sees (the last NSpid)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    except (OSError, ValueError):
        return None
    return None


def _tree(roots: Sequence[int], container_id: str) -> list[int]:
    """Live processes among `roots` and their descendants that are in the container."""
    children: dict[int, list[int]] = {}
    alive: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        proc = _stat(int(entry.name))
        if proc is None:
            continue
        children.setdefault(proc.ppid, []).append(proc.pid)
        if proc.alive:
            alive.add(proc.pid)
    found: list[int] = []
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        if pid in alive and _in_container(pid, container_id):
            found.append(pid)
            todo.extend(children.get(pid, []))
    return found


# The bridge.


class ExecProcess:
    """One session's process in a container."""

    def __init__(
        self, bridge: "ExecBridge", exec_id: str, container_id: str, tty: bool, stream: _ExecStream
    ) -> None:
        self.bridge = bridge
        self.exec_id = exec_id
        self.container_id = container_id
        self.tty = tty
        self._stream = stream
        self._closed = False
        self._wrote_eof = False
        self.finished = False
        self.exit_status: int | None = None

    def attach(self, sink: ExecSink) -> None:
        self._stream.attach(sink)

    @property
    def _transport(self) -> asyncio.Transport | None:
        transport = self._stream.transport
        return None if transport is None or transport.is_closing() else transport

    def write(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not self._wrote_eof:
            transport.write(data)

    def write_eof(self) -> None:
        """End of the user's input: a half-close, but never with a TTY (see the module docstring)."""
        transport = self._transport
        if self.tty or self._wrote_eof or transport is None:
            return
        self._wrote_eof = True
        if transport.can_write_eof():
            transport.write_eof()

    def pause_reading(self) -> None:
        transport = self._transport
        if transport is not None and transport.is_reading():
            transport.pause_reading()

    def resume_reading(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_reading():
            transport.resume_reading()

    async def resize(self, width: int, height: int) -> None:
        if not self.tty or width <= 0 or height <= 0:
            return
        await self.bridge._resize(self.exec_id, width, height)

    async def signal(self, name: str) -> bool:
        """Deliver an SSH signal to the session's main process; False if it cannot be."""
        number = signal_number(name)
        if number is None:
            return False
        pid = await self.bridge._exec_pid(self.exec_id)
        if pid is None:
            return False
        return await self.bridge._signal(self.container_id, [pid], number)

    async def wait_exit(self, timeout: float = 10.0) -> int | None:
        """The exit code, once the engine says the process ended (None if it never does)."""
        status = await self.bridge._exit_code(self.exec_id, timeout)
        self.exit_status = status
        self.finished = status is not None
        if self.finished:
            self.bridge._forget(self.exec_id)
        return status

    async def terminate(self) -> int:
        """End the process and its descendants (HUP, then KILL); returns how many were signalled."""
        self.close()
        try:
            ended = await self.bridge.terminate_exec(self.exec_id, self.container_id)
        finally:
            self.bridge._forget(self.exec_id)
        return ended

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._stream.transport is not None:
                self._stream.transport.close()


class ExecBridge:
    def __init__(
        self,
        docker_url: str,
        host_id: str,
        *,
        state_dir: Path | None = None,
        kill_grace_s: float = 2.0,
        host_signals: bool = True,
        timeout: float = 10.0,
    ) -> None:
        """`host_signals=False` always signals from inside the container (what a non-root hostd does)."""
        self.docker_url = docker_url
        self.host_id = host_id
        self.sessions_dir = state_dir / "sessions" if state_dir is not None else None
        self.kill_grace_s = kill_grace_s
        self.host_signals = host_signals
        self.timeout = timeout
        self._api: tuple[int, int] | None = None

    async def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return await _call(self.docker_url, method, path, body, self.timeout)

    async def api_version(self) -> tuple[int, int]:
        if self._api is None:
            status, body = await self._call("GET", "/version")
            version = str((body or {}).get("ApiVersion", "1.24")) if status == 200 else "1.24"
            major, _, minor = version.partition(".")
            self._api = (int(major), int(minor or 0))
        return self._api

    async def container_for(self, alloc_id: str) -> str:
        """The id of the allocation's running container on this host; ExecRefused if there is none."""
        if not _ALLOC.match(alloc_id):
            raise ExecRefused(f"{alloc_id!r} is not an allocation id")
        status, body = await self._call("GET", f"/containers/{NAME_PREFIX}{alloc_id}/json")
        if status == 404:
            raise ExecRefused(f"allocation {alloc_id} has no container on this host")
        if status != 200:
            raise ExecError(f"inspecting the container of {alloc_id}: {status} {_message(body)}")
        labels = ((body.get("Config") or {}).get("Labels")) or {}
        if (
            labels.get(LABEL_MANAGED) != "1"
            or labels.get(LABEL_ALLOCATION) != alloc_id
            or labels.get(LABEL_HOST) != self.host_id
        ):
            log.warning(
                "exec.container_not_ours",
                alloc_id=alloc_id,
                labels={k: v for k, v in labels.items() if k != "potluck.spec"},
            )
            raise ExecRefused(f"allocation {alloc_id} has no container on this host")
        state = body.get("State") or {}
        if state.get("Paused"):
            raise ExecRefused(
                f"the container of allocation {alloc_id} is paused (the member paused this machine)"
            )
        if not state.get("Running"):
            raise ExecRefused(
                f"the container of allocation {alloc_id} is not running ({state.get('Status')})"
            )
        return str(body["Id"])

    async def open(
        self,
        alloc_id: str,
        argv: Sequence[str],
        *,
        tty: bool,
        env: Mapping[str, str],
        size: tuple[int, int] = (0, 0),
    ) -> ExecProcess:
        """Start `argv` in the allocation's container, its stream open; `attach()` a sink next."""
        container_id = await self.container_for(alloc_id)
        width, height = size
        create: dict[str, Any] = {
            "AttachStdin": True,
            "AttachStdout": True,
            "AttachStderr": True,
            "Tty": tty,
            "Cmd": list(argv),
            "Env": [f"{k}={v}" for k, v in env.items()],
        }
        if tty and width > 0 and height > 0 and await self.api_version() >= (1, 42):
            create["ConsoleSize"] = [height, width]
        status, body = await self._call("POST", f"/containers/{container_id}/exec", create)
        if status == 409:
            raise ExecRefused(f"the container of allocation {alloc_id} is not running: {_message(body)}")
        if status != 201:
            raise ExecError(f"exec create in {container_id[:12]}: {status} {_message(body)}")
        exec_id = str(body["Id"])
        request = _request_bytes(
            "POST",
            f"/exec/{exec_id}/start",
            {"Detach": False, "Tty": tty},
            {"Connection": "Upgrade", "Upgrade": "tcp"},
        )
        loop = asyncio.get_running_loop()
        stream = _ExecStream(request, tty)
        try:
            if self.docker_url.startswith("unix://"):
                await asyncio.wait_for(
                    loop.create_unix_connection(lambda: stream, self.docker_url.removeprefix("unix://")),
                    self.timeout,
                )
            elif self.docker_url.startswith("tcp://"):
                parsed = urllib.parse.urlsplit(self.docker_url)
                await asyncio.wait_for(
                    loop.create_connection(
                        lambda: stream, parsed.hostname or "127.0.0.1", parsed.port or 2375
                    ),
                    self.timeout,
                )
            else:
                raise ExecError(f"SSH sessions need a unix:// or tcp:// Docker URL, not {self.docker_url}")
            await asyncio.wait_for(stream.upgraded, self.timeout)
        except (TimeoutError, OSError) as exc:
            if stream.transport is not None:
                stream.transport.close()
            raise ExecError(f"exec start in {container_id[:12]}: {type(exc).__name__}: {exc}") from exc
        except ExecError:
            if stream.transport is not None:
                stream.transport.close()
            raise
        self._remember(exec_id, container_id)
        process = ExecProcess(self, exec_id, container_id, tty, stream)
        if tty and width > 0 and height > 0:
            with contextlib.suppress(ExecError):
                await process.resize(width, height)
        return process

    async def _resize(self, exec_id: str, width: int, height: int) -> None:
        status, body = await self._call("POST", f"/exec/{exec_id}/resize?h={int(height)}&w={int(width)}")
        if status not in (200, 201):
            log.debug("exec.resize_refused", exec_id=exec_id[:12], status=status, message=_message(body))

    async def inspect_exec(self, exec_id: str) -> dict[str, Any] | None:
        status, body = await self._call("GET", f"/exec/{exec_id}/json")
        if status == 404:
            return None
        if status != 200:
            raise ExecError(f"exec inspect {exec_id[:12]}: {status} {_message(body)}")
        return dict(body)

    async def _exec_pid(self, exec_id: str) -> int | None:
        info = await self.inspect_exec(exec_id)
        if info is None or not info.get("Running"):
            return None
        pid = int(info.get("Pid") or 0)
        return pid or None

    async def _exit_code(self, exec_id: str, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        pause = 0.005
        while True:
            info = await self.inspect_exec(exec_id)
            if info is None:
                return None
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)

    async def terminate_exec(self, exec_id: str, container_id: str) -> int:
        """HUP the exec's process tree, then KILL what is left after the grace period."""
        try:
            pid = await self._exec_pid(exec_id)
        except ExecError as exc:
            log.warning("exec.terminate_failed", exec_id=exec_id[:12], error=str(exc))
            return 0
        if pid is None:
            return 0
        known = await asyncio.to_thread(_tree, [pid], container_id)
        if not known:
            if not await asyncio.to_thread(os.path.exists, f"/proc/{pid}"):
                log.warning(
                    "exec.process_not_visible",
                    exec_id=exec_id[:12],
                    pid=pid,
                    hint="the engine runs outside hostd's PID namespace (a VM?); the session's "
                    "process is left running",
                )
            return 0
        await self._signal(container_id, known, signal.SIGHUP)
        deadline = time.monotonic() + self.kill_grace_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            known = await asyncio.to_thread(_tree, known, container_id)
            if not known:
                break
        if known:
            await self._signal(container_id, known, signal.SIGKILL)
        log.info("exec.terminated", exec_id=exec_id[:12], pid=pid, killed=len(known))
        return len(known) or 1

    async def _signal(self, container_id: str, pids: Sequence[int], number: int) -> bool:
        denied: list[int] = []
        if self.host_signals:
            for pid in pids:
                if not _in_container(pid, container_id):
                    continue
                try:
                    os.kill(pid, number)
                except ProcessLookupError:
                    pass
                except PermissionError:
                    denied.append(pid)
        else:
            denied = [pid for pid in pids if _in_container(pid, container_id)]
        if not denied:
            return True
        inside = [str(n) for n in (_ns_pid(pid) for pid in denied) if n is not None]
        if not inside:
            return False
        return await self._kill_inside(container_id, inside, signal.Signals(number).name.removeprefix("SIG"))

    async def _kill_inside(self, container_id: str, ns_pids: Sequence[str], name: str) -> bool:
        """`kill` run in the container as its user (for a hostd that may not signal those processes)."""
        create = {
            "AttachStdout": False,
            "AttachStderr": False,
            "Cmd": ["/bin/sh", "-c", 'kill -s "$0" "$@" 2>/dev/null; exit 0', name, *ns_pids],
        }
        status, body = await self._call("POST", f"/containers/{container_id}/exec", create)
        if status != 201:
            log.warning("exec.kill_inside_failed", status=status, message=_message(body))
            return False
        status, body = await self._call("POST", f"/exec/{body['Id']}/start", {"Detach": True, "Tty": False})
        return status in (200, 204)

    # Sessions a previous hostd run left behind.

    def _remember(self, exec_id: str, container_id: str) -> None:
        if self.sessions_dir is None:
            return
        self.sessions_dir.mkdir(parents=True, exist_ok=True)
        (self.sessions_dir / exec_id).write_text(container_id)

    def _forget(self, exec_id: str) -> None:
        if self.sessions_dir is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.sessions_dir / exec_id).unlink()

    async def reap_orphans(self) -> int:
        """End the processes of sessions that a previous run of hostd left running."""
        if self.sessions_dir is None or not self.sessions_dir.is_dir():
            return 0
        ended = 0
        for entry in sorted(self.sessions_dir.iterdir()):
            exec_id = entry.name
            try:
                container_id = entry.read_text().strip()
                ended += 1 if await self.terminate_exec(exec_id, container_id) else 0
            except (OSError, ExecError) as exc:
                log.warning("exec.orphan_not_reaped", exec_id=exec_id[:12], error=str(exc))
                continue
            self._forget(exec_id)
        if ended:
            log.info("exec.orphans_reaped", count=ended)
        return ended


def exec_env(
    alloc_id: str, session_id: str, term_type: str | None, forwarded: Mapping[str, str]
) -> dict[str, str]:
    """The exec's environment: TERM for a PTY, our markers, and the locale variables the user sent."""
    env = {k: v for k, v in forwarded.items() if k == "LANG" or k.startswith("LC_")}
    if term_type:
        env["TERM"] = term_type
    env["POTLUCK_ALLOC"] = alloc_id
    if session_id:
        env["POTLUCK_SESSION"] = session_id
    return env
