"""Docker exec for SSH sessions: start a process in an allocation's container, stream it, end it.

ExecBridge is what gateway_link.py's sessions call; it is built from:

- docker_http.py: the engine's HTTP API over its socket, with asyncio (and
  why not the docker SDK: the first output would be lost);
- exec_stream.py: the exec's output stream, stdout and stderr apart, to the
  session's `ExecSink`;
- process_tree.py: the exec's processes on this machine, and ending them;
- session_ledger.py: the running sessions on disk, for `reap_orphans`.

The calls: `POST /containers/<id>/exec` (exec_create, with a TTY when the
session asked for a PTY), `POST /exec/<id>/start` upgraded to a raw stream
(exec_start with a socket), `POST /exec/<id>/resize` on window changes,
`GET /exec/<id>/json` (exec_inspect) for the exit code, which may still say
running for a moment after the stream ends, so it is polled.

Before anything runs, `container_for` checks that the allocation's container
is ours (named for the allocation, labelled managed and for this host) and
running: a session never reaches another container, and what the user reads
when it cannot run is an ExecRefused.

The user's end of input is passed on as a half-close of the socket, but only
without a TTY: with one, the engine ends the whole stream at a half-close
while the process runs on (sshd, too, never half-closes a PTY).

Ending a session's processes (the engine has no call for it): `terminate()`
sends SIGHUP to the exec's process tree and SIGKILL to what is left after
`kill_grace_s` (process_tree.end_tree). hostd signals them itself when it may
(root, or the same user); otherwise (a hostd in the docker group) it runs
`kill` inside the container, as the container's user, with the PIDs the
container sees. While a session runs its exec id is kept in
`<state_dir>/sessions/`; a hostd that starts again ends the processes of
sessions its previous run left behind (`reap_orphans`), since nobody is
attached to them any more.
"""

import asyncio
import contextlib
import re
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from potluck.hostd import docker_http, pause_races, process_tree
from potluck.hostd.container_config import LABEL_HOST, LABEL_MANAGED, LABEL_SPEC, NAME_PREFIX, allocation_of
from potluck.hostd.docker_http import message
from potluck.hostd.exec_errors import ExecError, ExecRefused
from potluck.hostd.exec_stream import ExecSink, ExecStream
from potluck.hostd.helper import HELPER_PATH
from potluck.hostd.session_ledger import SessionLedger
from potluck.hostd.tty_size import CONSOLE_SIZE_API, sized_argv

__all__ = ["ExecBridge", "ExecProcess", "SessionProcess", "exec_env", "has_helper", "signal_number"]

log = structlog.get_logger(__name__)

_ALLOC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")
#: How long a signal or a termination waits for a started exec to run (it has no pid before).
EXEC_START_WAIT_S = 2.0
#: SSH signal names (RFC 4254 without "SIG") that a session may send.
_SIGNALS = {
    name: getattr(signal, "SIG" + name)
    for name in ("ABRT", "ALRM", "FPE", "HUP", "ILL", "INT", "KILL", "PIPE", "QUIT", "SEGV", "TERM", "USR1",
                 "USR2")
}  # fmt: skip


def _inspected_paused(answer: tuple[int, Any]) -> bool:
    status, body = answer
    return status == 200 and isinstance(body, dict) and bool((body.get("State") or {}).get("Paused"))


def _exec_refused_as_paused(answer: tuple[int, Any]) -> bool:
    status, body = answer
    return status == 409 and pause_races.says_paused(message(body))


def _start_refused_as_paused(exc: BaseException) -> bool:
    return isinstance(exc, ExecError) and pause_races.says_paused(str(exc))


def has_helper(container: Mapping[str, Any]) -> bool:
    """Was the container made with the helper busybox mounted (helper.py)?"""
    return any(m.get("Destination") == HELPER_PATH for m in container.get("Mounts") or [])


def signal_number(name: str) -> int | None:
    return _SIGNALS.get(name.upper().removeprefix("SIG"))


def _restarting(alloc_id: str) -> str:
    return (
        f"the container of allocation {alloc_id} is restarting (its command exited); try again in "
        f"a few seconds, and see `potluck logs {alloc_id}` for why it exits"
    )


class SessionProcess(Protocol):
    """What a session drives: an exec (ExecProcess), or hostd's own SFTP server for a container
    without one (helper_sftp.HelperSftpProcess)."""

    exec_id: str
    container_id: str
    finished: bool

    def attach(self, sink: ExecSink) -> None: ...
    def write(self, data: bytes) -> None: ...
    def write_eof(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    async def resize(self, width: int, height: int) -> None: ...
    async def signal(self, name: str) -> bool: ...
    async def wait_exit(self, timeout: float = 10.0) -> int | None: ...
    async def terminate(self) -> int: ...
    def close(self) -> None: ...


class ExecProcess:
    """One session's process in a container."""

    def __init__(
        self, bridge: "ExecBridge", exec_id: str, container_id: str, tty: bool, stream: ExecStream
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

    def buffered(self) -> int:
        """Input written but not yet taken by the engine's socket."""
        transport = self._transport
        return 0 if transport is None else transport.get_write_buffer_size()

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
            self.bridge.sessions.forget(self.exec_id)
        return status

    async def start_failure(self) -> str | None:
        """The engine's words, if it never started the process and wrote why into its output
        (exec_stream.py); else None, and any output held back as such is passed on. Asked
        once the output has ended."""
        held = self._stream.held
        if held is None:
            return None
        info = await self.bridge.inspect_exec(self.exec_id)
        if info is not None and not info.get("Pid"):
            self._stream.held = None
            return held.decode(errors="replace").strip()
        self._stream.release_held()
        return None

    async def terminate(self) -> int:
        """End the process and its descendants (HUP, then KILL); returns how many were signalled."""
        self.close()
        try:
            ended = await self.bridge.terminate_exec(self.exec_id, self.container_id)
        finally:
            self.bridge.sessions.forget(self.exec_id)
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
        kept: Mapping[str, datetime | None] | None = None,
        env_of: Callable[[str], Mapping[str, str]] | None = None,
        disk_bound_of: Callable[[str], int | None] | None = None,
        disk_used_of: Callable[[str], Awaitable[int | None]] | None = None,
        let_run: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        """`host_signals=False` always signals from inside the container (what a non-root hostd does).
        `kept`: the ended allocations whose stopped containers are kept, and until when
        (ContainerManager.kept), to tell a session into one what still works.
        `env_of`: an allocation's own environment values, given to every exec into it: a
        container made ahead (warm_pool.py) was created without them.
        `disk_bound_of`: an allocation's disk bound, from the spec hostd holds (None: hostd holds
        none; without it, none is known): what `disk_left` counts from.
        `disk_used_of`: what the allocation's container wrote, as the disk guard counts it
        (ContainerManager.disk_used; None: the engine did not say); without it, or when it
        says None, `disk_left` counts the writable layer's size alone.
        `let_run`: asked before a running container is looked up for an exec, so that the log
        bound (log_cost.py), which may hold it paused a moment, lets it run (ContainerManager.let_run)."""
        self.docker_url = docker_url
        self.host_id = host_id
        self.sessions = SessionLedger(state_dir / "sessions" if state_dir is not None else None)
        self.kill_grace_s = kill_grace_s
        self.host_signals = host_signals
        self.timeout = timeout
        self._api: tuple[int, int] | None = None
        self.kept: Mapping[str, datetime | None] = kept if kept is not None else {}
        self.env_of: Callable[[str], Mapping[str, str]] = env_of or (lambda alloc_id: {})
        self.disk_bound_of: Callable[[str], int | None] = disk_bound_of or (lambda alloc_id: None)
        self.disk_used_of = disk_used_of
        self.let_run = let_run

    async def _call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return await docker_http.call(self.docker_url, method, path, body, self.timeout)

    async def api_version(self) -> tuple[int, int]:
        if self._api is None:
            status, body = await self._call("GET", "/version")
            version = str((body or {}).get("ApiVersion", "1.24")) if status == 200 else "1.24"
            major, _, minor = version.partition(".")
            self._api = (int(major), int(minor or 0))
        return self._api

    async def container_for(self, alloc_id: str, *, stopped_ok: bool = False) -> str:
        """The id of the allocation's running container on this host; ExecRefused if there is none.
        `stopped_ok`: a stopped one will do too (logs and files of an ended allocation)."""
        return str((await self.container_of(alloc_id, stopped_ok=stopped_ok))["Id"])

    async def container_of(self, alloc_id: str, *, stopped_ok: bool = False) -> dict[str, Any]:
        """What the engine says of the allocation's running container (`container_for`)."""
        if not _ALLOC.match(alloc_id):
            raise ExecRefused(f"{alloc_id!r} is not an allocation id")
        path = f"/containers/{NAME_PREFIX}{alloc_id}/json"
        if stopped_ok:
            status, body = await self._call("GET", path)
        else:
            if self.let_run is not None and _ALLOC.match(alloc_id):
                await self.let_run(alloc_id)
            # A container unpaused a moment ago may still say paused (pause_races.py).
            status, body = await pause_races.ask_while_paused(
                lambda: self._call("GET", path), _inspected_paused
            )
        if status == 404:
            raise ExecRefused(f"allocation {alloc_id} has no container on this host")
        if status != 200:
            raise ExecError(f"inspecting the container of {alloc_id}: {status} {message(body)}")
        if not isinstance(body, dict):
            raise ExecError(f"inspecting the container of {alloc_id}: not an object: {str(body)[:200]}")
        labels = ((body.get("Config") or {}).get("Labels")) or {}
        # Whose it is, by its name, never a label (an image's labels show in its containers'):
        # a container created ahead (warm_pool.py) is the allocation's it was renamed for.
        owner = allocation_of(str(body.get("Name") or ""))
        if labels.get(LABEL_MANAGED) != "1" or owner != alloc_id or labels.get(LABEL_HOST) != self.host_id:
            log.warning(
                "exec.container_not_ours",
                alloc_id=alloc_id,
                labels={k: v for k, v in labels.items() if k != LABEL_SPEC},
            )
            raise ExecRefused(f"allocation {alloc_id} has no container on this host")
        state = body.get("State") or {}
        if stopped_ok:
            return body
        if state.get("Paused"):
            raise ExecRefused(
                f"the container of allocation {alloc_id} is paused (the member paused this machine)"
            )
        if state.get("Restarting"):
            # The engine says Running too while it waits to start it again.
            raise ExecRefused(_restarting(alloc_id))
        if not state.get("Running"):
            if alloc_id in self.kept:
                raise ExecRefused(kept_refusal(alloc_id, self.kept[alloc_id]))
            raise ExecRefused(
                f"the container of allocation {alloc_id} is not running ({state.get('Status')})"
            )
        return body

    async def disk_left(self, alloc_id: str) -> int | None:
        """Bytes the container may still write before its disk bound: the bound of the spec hostd
        holds for the allocation (`disk_bound_of`), never a label (an image's labels show in
        its containers'), less what it wrote as the disk guard counts it (`disk_used_of`), or
        else its writable layer's size, which the engine measures (a walk of the layer). 0
        when hostd holds no spec of it (not placed here, or not yet known after a restart):
        nothing may grow then. None if the engine does not say the size."""
        container_id = await self.container_for(alloc_id)
        bound = self.disk_bound_of(alloc_id)
        if bound is None:
            log.warning(
                "exec.disk_bound_unknown",
                alloc_id=alloc_id,
                hint="hostd holds no spec of the allocation (not placed here, or not yet known "
                "after a restart): its sessions may write nothing that grows its disk",
            )
            return 0
        if self.disk_used_of is not None:
            used = await self.disk_used_of(alloc_id)
            if used is not None:
                return bound - used
        status, body = await self._call("GET", f"/containers/{container_id}/json?size=1")
        if status != 200:
            return None
        try:
            return bound - int(body.get("SizeRw") or 0)
        except (AttributeError, TypeError, ValueError):
            return None

    async def in_layer(self, alloc_id: str, path: str) -> bool:
        """Does the container's own layer hold `path` (made or changed since the image's: the
        engine's list of its changes, a walk of the layer)? False when the engine does not say."""
        container_id = await self.container_for(alloc_id)
        status, body = await self._call("GET", f"/containers/{container_id}/changes")
        if status != 200 or not isinstance(body, list):
            return False
        # Kind 0: changed, 1: added (2: deleted, which no open finds).
        return any(isinstance(c, dict) and c.get("Path") == path and c.get("Kind") in (0, 1) for c in body)

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
        container = await self.container_of(alloc_id)
        container_id = str(container["Id"])
        width, height = size
        sized = tty and width > 0 and height > 0
        create_sized = sized and await self.api_version() >= CONSOLE_SIZE_API
        if sized and not create_sized and has_helper(container):
            argv = sized_argv(alloc_id, argv, width, height)
        create: dict[str, Any] = {
            "AttachStdin": True,
            "AttachStdout": True,
            "AttachStderr": True,
            "Tty": tty,
            "Cmd": list(argv),
            # The allocation's values first: the session's own (TERM, POTLUCK_*) win, as they
            # win over a container's environment.
            "Env": [f"{k}={v}" for k, v in {**self.env_of(alloc_id), **env}.items()],
        }
        if create_sized:
            create["ConsoleSize"] = [height, width]
        status, body = await pause_races.ask_while_paused(
            lambda: self._call("POST", f"/containers/{container_id}/exec", create), _exec_refused_as_paused
        )
        if status == 409:
            # The container stopped, or began restarting, since container_for looked. The
            # engine's words ("Container <its whole id> is restarting, wait until...") are
            # for the member's log, not the user's terminal.
            log.info("exec.create_refused", alloc_id=alloc_id, status=status, message=message(body)[:500])
            said = message(body)
            if " is restarting" in said:
                raise ExecRefused(_restarting(alloc_id))
            raise ExecRefused(
                f"the container of allocation {alloc_id} stopped as the session started; "
                f"`potluck alloc show {alloc_id}` says what became of it"
            )
        if status != 201:
            raise ExecError(f"exec create in {container_id[:12]}: {status} {message(body)}")
        exec_id = str(body["Id"])
        stream = await self._start(exec_id, container_id, tty)
        self.sessions.remember(exec_id, container_id)
        process = ExecProcess(self, exec_id, container_id, tty, stream)
        if sized:
            with contextlib.suppress(ExecError):
                await process.resize(width, height)
        return process

    async def _start(self, exec_id: str, container_id: str, tty: bool) -> ExecStream:
        """The exec started, its stream upgraded; asked again (on a new connection) while the
        engine still holds the container paused after an unpause, as its create is."""
        async for attempt in pause_races.starting_while_stale_paused(_start_refused_as_paused):
            with attempt:
                stream = ExecStream(exec_id, tty)
                try:
                    await docker_http.hijack(self.docker_url, stream, self.timeout)
                except (TimeoutError, OSError) as exc:
                    why = f"{type(exc).__name__}: {exc}"
                    raise ExecError(f"exec start in {container_id[:12]}: {why}") from exc
                return stream
        raise AssertionError("unreachable: tenacity returns or raises")

    async def _resize(self, exec_id: str, width: int, height: int) -> None:
        status, body = await self._call("POST", f"/exec/{exec_id}/resize?h={int(height)}&w={int(width)}")
        if status not in (200, 201):
            log.debug("exec.resize_refused", exec_id=exec_id[:12], status=status, message=message(body))

    async def inspect_exec(self, exec_id: str) -> dict[str, Any] | None:
        status, body = await self._call("GET", f"/exec/{exec_id}/json")
        if status == 404:
            return None
        if status != 200:
            raise ExecError(f"exec inspect {exec_id[:12]}: {status} {message(body)}")
        return dict(body)

    async def _exec_pid(self, exec_id: str, timeout: float = EXEC_START_WAIT_S) -> int | None:
        """The exec's process, once it runs; None once it has ended (or never started in time).

        An exec whose start the engine has answered may not run yet for a moment (no pid, no
        exit code): a signal or a termination sent then waits for it rather than missing the
        process it was meant for.
        """
        deadline = time.monotonic() + timeout
        pause = 0.002
        while True:
            info = await self.inspect_exec(exec_id)
            if info is None:
                return None
            if info.get("Running"):
                pid = int(info.get("Pid") or 0)
                if pid:
                    return pid
            elif info.get("ExitCode") is not None:
                return None
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)

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
        send = self._signaller(container_id)
        ended = await process_tree.end_tree(pid, container_id, send, self.kill_grace_s)
        if not ended.hung_up:
            if not await asyncio.to_thread(process_tree.visible, pid):
                log.warning(
                    "exec.process_not_visible",
                    exec_id=exec_id[:12],
                    pid=pid,
                    hint="the engine runs outside hostd's PID namespace (a VM?); the session's "
                    "process is left running",
                )
            return 0
        log.info("exec.terminated", exec_id=exec_id[:12], pid=pid, killed=ended.killed)
        return ended.killed or 1

    def _signaller(self, container_id: str) -> process_tree.SendSignal:
        async def send(pids: Sequence[int], number: int) -> bool:
            return await self._signal(container_id, pids, number)

        return send

    async def _signal(self, container_id: str, pids: Sequence[int], number: int) -> bool:
        """Signal the processes (PIDs of this machine) that are in the container, from here or inside it."""
        if self.host_signals:
            denied = process_tree.signal_from_host(pids, number, container_id)
        else:
            denied = [pid for pid in pids if process_tree.in_container(pid, container_id)]
        if not denied:
            return True
        inside = [str(n) for n in (process_tree.ns_pid(pid) for pid in denied) if n is not None]
        if not inside:
            return False
        return await self._kill_inside(container_id, inside, signal.Signals(number).name.removeprefix("SIG"))

    async def _kill_inside(self, container_id: str, ns_pids: Sequence[str], name: str) -> bool:
        """`kill` run in the container as its user (for a hostd that may not signal those processes)."""
        argv = ["/bin/sh", "-c", 'kill -s "$0" "$@" 2>/dev/null; exit 0', name, *ns_pids]
        try:
            await self.run_unattached(container_id, argv, wait_s=None)
        except ExecError as exc:
            log.warning("exec.kill_inside_failed", error=str(exc))
            return False
        return True

    async def run_unattached(
        self, container_id: str, argv: Sequence[str], *, wait_s: float | None
    ) -> int | None:
        """Start `argv` in the container as its user, no input and its output discarded; its exit
        code once it has ended within `wait_s` (None when not waited for, or still running then).
        ExecError if the engine does not start it (the container stopped, say)."""
        create = {"AttachStdout": False, "AttachStderr": False, "Cmd": list(argv)}
        status, body = await self._call("POST", f"/containers/{container_id}/exec", create)
        if status != 201:
            raise ExecError(f"exec create in {container_id[:12]}: {status} {message(body)}")
        exec_id = str(body["Id"])
        status, body = await self._call("POST", f"/exec/{exec_id}/start", {"Detach": True, "Tty": False})
        if status not in (200, 204):
            raise ExecError(f"exec start in {container_id[:12]}: {status} {message(body)}")
        return None if wait_s is None else await self._exit_code(exec_id, wait_s)

    # Sessions a previous hostd run left behind.

    async def reap_orphans(self) -> int:
        """End the processes of sessions that a previous run of hostd left running."""
        ended = 0
        for exec_id in self.sessions.exec_ids():
            try:
                container_id = self.sessions.container_of(exec_id)
                ended += 1 if await self.terminate_exec(exec_id, container_id) else 0
            except (OSError, ExecError) as exc:
                log.warning("exec.orphan_not_reaped", exec_id=exec_id[:12], error=str(exc))
                continue
            self.sessions.forget(exec_id)
        if ended:
            log.info("exec.orphans_reaped", count=ended)
        return ended


def kept_refusal(alloc_id: str, until: datetime | None) -> str:
    """What a session into a kept, stopped container reads: what still works, and until when."""
    when = f"until {until.isoformat(timespec='seconds')}" if until is not None else "for its keep_for"
    return (
        f"allocation {alloc_id} has ended; its stopped container is kept {when}: nothing runs in it, "
        f"but `potluck cp {alloc_id}:PATH .` fetches its files and `potluck logs {alloc_id}` shows its output"
    )


def exec_env(
    alloc_id: str, session_id: str, term_type: str | None, forwarded: Mapping[str, str]
) -> dict[str, str]:
    """The exec's environment: TERM for a PTY, our markers, and the locale variables the user sent
    (none with a NUL byte, which the engine refuses an exec for)."""
    env = {k: v for k, v in forwarded.items() if (k == "LANG" or k.startswith("LC_")) and "\0" not in k + v}
    if term_type:
        env["TERM"] = term_type
    env["POTLUCK_ALLOC"] = alloc_id
    if session_id:
        env["POTLUCK_SESSION"] = session_id
    return env
