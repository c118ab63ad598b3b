"""hostd's outbound connections to the SSH gateways, and the sessions they carry.

A laptop opens no port: hostd dials every gateway in its config and runs an
SSH *server* on each outbound TCP connection (`asyncssh.connect_reverse`);
the gateway, which listens with `asyncssh.listen_reverse`, is the SSH client
on it. Both ends authenticate: the gateway checks the host key hostd presents
against the one logged when this host registered (potluck.kernel.ssh_identity), and hostd
accepts only the gateway client key its member pinned in the config.

One session per connection. hostd keeps `spares` idle, authenticated
connections ready at each gateway; the gateway takes one for each user
session and never puts a second session on it, and hostd dials a new spare
as soon as one is taken. Every session thus has its own TCP connection and
its own flow control, so a bulk transfer cannot queue ahead of another
session's keystrokes (a shared connection was measured raising an
interactive session's echo round trip from 1.7 ms to 16 ms p50 under a bulk
transfer; see bench/README.md for this design's figures), and the handshake
is paid before the user asks, not while they wait. Sessions carried at once
are capped, in all and per allocation (session_slots.py): the one over the
cap is told why and ends at once, so a user opening sessions in a loop
cannot exhaust the member's file descriptors. A connection that drops
is dialled again with exponential backoff (with jitter), forever: a laptop
that wakes up or changes Wi-Fi is back within a backoff step, without
anything restarted; keepalives notice a silently dead connection.

Each session is bridged to `docker exec` in the allocation's container
(exec_bridge.py): the gateway sends the allocation id in the session's
`POTLUCK_ALLOC` variable, hostd checks the container's name says it belongs
to that allocation and its labels to this host, and runs the command (or a login shell,
or the image's sftp-server, its uploads held to the allocation's disk bound on their way in
(sftp_filter.py), or hostd's own SFTP server for an image without
one: helper_sftp.py) as the container's default user, with a TTY
when the session asked for a PTY (at the client's size from its start:
tty_size.py). Data is passed in both directions with flow
control at each end (SSH windows, the engine socket's buffer); window changes
resize the exec's TTY and signals reach its process, one engine call at a time
per session however fast they come (session_controls.py); when the channel closes
before the process ended, the process and its descendants are ended (HUP,
then KILL). The reserved commands `potluck-logs` and `potluck-archive` are
served by hostd itself (reserved_commands.py): reading from the engine, for a
running container and for a stopped, kept one; `potluck-archive put` (the
uploads of `potluck cp`) within the allocation's disk bound. The sink of
scp's legacy protocol (`scp -t`, what `scp -O` runs) has each file it is sent
checked against that bound before it reaches the container (scp_sink.py); a receiving
`rsync --server` has its input counted against it (rsync_receiver.py).

Each session is a span, `exec session`, the child of the gateway's session
span: the gateway sends its context in the session's `TRACEPARENT` (and
`TRACESTATE`) variables (potluck.sshgateway.session_trace), which never reach
the container (exec_env passes only the locale and our markers). Inside it,
the Docker calls: `docker exec create+start`, `docker exec inspect` (waiting
for the exit code) and `docker exec terminate` (ending the process when the
channel closed first). A session without a context (the gateway's tracing
is off) starts a trace of its own if hostd's tracing is on.

The hostd config's part (one entry per gateway):

    [[gateways]]
    address = "gateway.example:2223"
    client_key = "ssh-ed25519 AAAA... potluck-sshgateway"
"""

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from potluck.contracts.link import (
    HOSTD_SSH_VERSION,
    LATENCY_SLICE_US,
    LINK_CIPHERS,
    LINK_KEX_ALGS,
    LINK_MAC_ALGS,
    LINK_SIGNATURE_ALGS,
    limit_reads,
    request_short_slice,
    skip_ignore_packets,
)
from potluck.events.tracing import context_from_env
from potluck.hostd.exec_bridge import ExecBridge, ExecProcess, SessionProcess, exec_env
from potluck.hostd.exec_errors import ExecError, ExecRefused, could_not_start, not_in_container
from potluck.hostd.gateway_config import GatewayLink
from potluck.hostd.helper_sftp import open_sftp
from potluck.hostd.reserved_commands import open_reserved, reserved_command
from potluck.hostd.rsync_receiver import open_rsync_receiver, rsync_receiver
from potluck.hostd.scp_sink import is_scp_sink, open_scp_sink
from potluck.hostd.session_controls import MAX_PENDING_SIGNALS, SessionControls
from potluck.hostd.session_slots import SessionLimits, SessionSlots
from potluck.hostd.spans import docker_span, tracer
from potluck.kernel.background import BackgroundTasks
from potluck.kernel.ssh_bounds import LINK_AUTH_REQUESTS, bound_before_login
from potluck.kernel.ssh_identity import load_or_create_key

__all__ = ["GatewayLink", "HostSession", "LinkTiming", "command_argv", "keep_linked"]

log = structlog.get_logger(__name__)


_LOGIN_SHELL = 'cd "$HOME" 2>/dev/null; if command -v bash >/dev/null 2>&1; then exec bash -l; fi; exec sh -l'
_SFTP_SERVER = (
    "for p in /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server /usr/libexec/sftp-server "
    '/usr/lib/ssh/sftp-server /usr/lib/sftp-server; do [ -x "$p" ] && exec "$p"; done; '
    'echo "potluck: this container has no sftp-server: install one in the image (openssh-sftp-server), '
    'or use scp -O, rsync or tar over ssh" >&2; exit 127'
)


@dataclass(frozen=True)
class LinkTiming:
    #: Idle connections kept ready at each gateway.
    spares: int = 2
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    keepalive_interval_s: float = 15.0
    keepalive_count_max: int = 3
    connect_timeout_s: float = 15.0
    #: A used connection still open this long after its session ended is closed by hostd.
    linger_s: float = 5.0
    #: SSH channel window (bytes in flight) of each session on the hop to the gateway.
    window: int = 2 * 1024 * 1024
    #: CPU slice hostd's event loop asks for, in microseconds (request_short_slice); 0: the default.
    cpu_slice_us: int = LATENCY_SLICE_US


def command_argv(command: str | None, subsystem: str | None) -> list[str]:
    """What runs in the container: the command through /bin/sh -c, a login shell, or an sftp-server."""
    if subsystem == "sftp":
        return ["/bin/sh", "-c", _SFTP_SERVER]
    if command is not None:
        return ["/bin/sh", "-c", command]
    return ["/bin/sh", "-c", _LOGIN_SHELL]


class HostSession(asyncssh.SSHServerSession[bytes]):
    """One session from the gateway, bridged to a docker exec in the allocation's container."""

    def __init__(
        self,
        bridge: ExecBridge,
        tasks: BackgroundTasks,
        on_closed: Callable[[], None],
        slots: SessionSlots,
    ) -> None:
        self._bridge = bridge
        self._slots = slots
        #: The allocation whose slot this session holds, until it is wholly over.
        self._slot: str | None = None
        self._starting = False
        self._tasks = tasks
        self._on_closed = on_closed
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._term_type: str | None = None
        self._size = (0, 0)
        self._command: str | None = None
        self._subsystem: str | None = None
        self._process: SessionProcess | None = None
        #: The process's window changes and signals, one engine call at a time (session_controls.py).
        self._controls: SessionControls | None = None
        self._pending: list[bytes] = []
        #: Signals that came before the process started (a Ctrl-C while it starts): delivered
        #: once it has, at most MAX_PENDING_SIGNALS of them, as SessionControls bounds them.
        self._early_signals: list[str] = []
        self._eof = False
        self._lost = False
        self._finishing = False
        self._alloc_id = ""
        #: What the session runs first (argv[0]), to name it when the engine cannot start it.
        self._program = ""
        self._span: trace.Span | None = None
        self._span_ended = False

    # The SSH side.

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any) -> bool:
        self._term_type = term_type or "xterm"
        self._size = (term_size[0], term_size[1])
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        self._command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp":
            return False
        self._subsystem = subsystem
        return True

    def session_started(self) -> None:
        self._tasks.start(self._start())

    async def _start(self) -> None:
        self._starting = True
        try:
            await self._open()
        finally:
            self._starting = False

    def _give_back_slot(self) -> None:
        if self._slot is not None:
            self._slots.give_back(self._slot)
            self._slot = None

    async def _open(self) -> None:
        chan = self._chan
        assert chan is not None
        env = dict(chan.get_environment())
        alloc_id = env.get("POTLUCK_ALLOC", "")
        session_id = env.get("POTLUCK_SESSION", "")
        tty = self._term_type is not None
        self._alloc_id = alloc_id
        self._span = tracer().start_span(
            "exec session",
            context=context_from_env(env),
            kind=SpanKind.SERVER,
            attributes={
                "potluck.alloc_id": alloc_id,
                "potluck.session_id": session_id,
                "potluck.session.pty": tty,
            },
        )
        refusal = self._slots.take(alloc_id)
        if refusal is not None:
            log.warning(
                "link.session_over_cap",
                alloc_id=alloc_id,
                session_id=session_id,
                sessions=self._slots.in_use,
                reason=refusal,
            )
            self._end_span(error=f"refused: {refusal}")
            self._fail(refusal)
            return
        self._slot = alloc_id
        try:
            with self._docker("exec create+start") as span:
                argv = command_argv(self._command, self._subsystem)
                self._program = argv[0]
                run_env = exec_env(alloc_id, session_id, self._term_type, env)
                process: SessionProcess
                reserved = reserved_command(self._command) if self._subsystem is None else None
                if reserved is not None:
                    process = await open_reserved(self._bridge, alloc_id, reserved, run_env)
                elif self._subsystem is None and not tty and is_scp_sink(self._command):
                    # `scp -O` into the container: each file within the disk bound.
                    process = await open_scp_sink(self._bridge, alloc_id, argv, run_env)
                elif self._subsystem is None and not tty and (rsync := rsync_receiver(self._command)):
                    # `rsync` into the container: its input within the disk bound.
                    process = await open_rsync_receiver(self._bridge, alloc_id, rsync, run_env)
                elif self._subsystem == "sftp" and not tty:
                    # The image's sftp-server, or hostd's own for an image without one.
                    process = await open_sftp(self._bridge, alloc_id, argv, run_env)
                else:
                    process = await self._bridge.open(alloc_id, argv, tty=tty, env=run_env, size=self._size)
                span.set_attribute("container.id", process.container_id)
                span.set_attribute("potluck.exec_id", process.exec_id)
        except ExecRefused as exc:
            log.info("link.session_refused", alloc_id=alloc_id, session_id=session_id, reason=str(exc))
            self._give_back_slot()
            self._end_span(error=f"refused: {exc}")
            self._fail(str(exc))
            return
        except ExecError as exc:
            log.error("link.session_failed", alloc_id=alloc_id, session_id=session_id, error=str(exc))
            self._give_back_slot()
            self._end_span(error=str(exc))
            self._fail("the session could not be started in the container (hostd's log says why)")
            return
        log.info(
            "link.session_started",
            alloc_id=alloc_id,
            session_id=session_id,
            exec_id=process.exec_id[:12],
            tty=tty,
        )
        self._process = process
        self._controls = SessionControls(process, self._tasks.start)
        self._span.set_attribute("container.id", process.container_id)
        self._span.set_attribute("potluck.exec_id", process.exec_id)
        if self._lost:
            await self._terminate_and_end(process)
            return
        process.attach(self)
        for data in self._pending:
            process.write(data)
        self._pending.clear()
        for name in self._early_signals:
            self._controls.signal(name)
        self._early_signals.clear()
        if self._eof:
            process.write_eof()
        chan.resume_reading()

    # The session's span and the Docker calls' spans inside it.

    @contextlib.contextmanager
    def _docker(self, operation: str, process: SessionProcess | None = None) -> Iterator[trace.Span]:
        """A span around one Docker call of this session, the child of the session's span."""
        parent = trace.set_span_in_context(self._span) if self._span is not None else Context()
        token = otel_context.attach(parent)
        try:
            with docker_span(
                operation,
                alloc_id=self._alloc_id,
                container_id=process.container_id if process is not None else None,
            ) as span:
                if process is not None:
                    span.set_attribute("potluck.exec_id", process.exec_id)
                yield span
        finally:
            otel_context.detach(token)

    def _end_span(
        self, *, exit_status: int | None = None, error: str | None = None, terminated: bool = False
    ) -> None:
        """End the session's span once; whichever way the session ends first says how."""
        span = self._span
        if span is None or self._span_ended:
            return
        self._span_ended = True
        if exit_status is not None:
            span.set_attribute("process.exit.code", exit_status)
        if terminated:
            span.set_attribute("potluck.session.terminated", True)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()

    async def _terminate(self, process: SessionProcess) -> None:
        with self._docker("exec terminate", process) as span:
            span.set_attribute("potluck.exec.processes_signalled", await process.terminate())

    async def _terminate_and_end(self, process: SessionProcess) -> None:
        try:
            await self._terminate(process)
        finally:
            self._end_span(terminated=True)
            self._give_back_slot()

    def _start_failed(self, process: ExecProcess, status: int, engine_said: str) -> None:
        """The engine never started the session's process and said why in its output (held back,
        exec_stream.py): the user reads what happened and what to do, hostd's log the words."""
        log.warning(
            "link.exec_start_failed",
            alloc_id=self._alloc_id,
            exec_id=process.exec_id[:12],
            status=status,
            engine=engine_said[:500],
        )
        program = self._program or "the session's program"
        lowered = engine_said.lower()
        if "no such file or directory" in lowered or "not found" in lowered:
            why = not_in_container(program)
        elif "permission denied" in lowered:
            why = f"{program} cannot be run in the container (permission denied)"
        else:
            why = (
                "the container's engine could not start it; try again, and if it keeps failing, "
                "ask the member of this machine (its hostd log has the engine's words)"
            )
        chan = self._chan
        if chan is None or chan.is_closing():
            return
        with contextlib.suppress(OSError):
            chan.write(f"{could_not_start(self._alloc_id, why)}\r\n".encode(), asyncssh.EXTENDED_DATA_STDERR)
            chan.exit(status)

    def _fail(self, message: str) -> None:
        chan = self._chan
        if chan is None or chan.is_closing():
            return
        with contextlib.suppress(OSError):
            chan.write(f"potluck: {message}\r\n".encode(), asyncssh.EXTENDED_DATA_STDERR)
            chan.exit(255)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._process is not None:
            self._process.write(data)
        elif self._chan is not None:
            # Input before the exec runs: keep it, and let the SSH window hold back the rest.
            self._pending.append(data)
            self._chan.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        if self._process is not None:
            self._process.write_eof()
        return True  # keep our side open for the process's output

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self._size = (width, height)
        if self._controls is not None:
            self._controls.resize(width, height)

    def signal_received(self, signal: str) -> None:
        if self._controls is not None:
            self._controls.signal(signal)
        elif len(self._early_signals) < MAX_PENDING_SIGNALS:
            self._early_signals.append(signal)

    def break_received(self, msec: int) -> bool:
        return False

    def pause_writing(self) -> None:
        # The gateway is not taking output as fast as the process makes it.
        if self._process is not None:
            self._process.pause_reading()

    def resume_writing(self) -> None:
        if self._process is not None:
            self._process.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        process = self._process
        if process is not None and not process.finished:
            self._tasks.start(self._terminate_and_end(process))  # gives the slot back once the process ended
        elif not self._starting:
            self._give_back_slot()
        # else _open, still opening, gives it back (or terminates the process it got, then gives it).
        self._on_closed()

    # The exec side (ExecSink).

    def exec_data(self, data: bytes, stderr: bool) -> None:
        chan = self._chan
        if chan is not None and not chan.is_closing():
            chan.write(data, asyncssh.EXTENDED_DATA_STDERR if stderr else None)

    def exec_eof(self) -> None:
        if not self._finishing:
            self._finishing = True
            self._tasks.start(self._finish())

    async def _finish(self) -> None:
        process = self._process
        chan = self._chan
        assert process is not None
        assert chan is not None
        try:
            with self._docker("exec inspect", process) as span:
                status = await process.wait_exit()
                if status is not None:
                    span.set_attribute("process.exit.code", status)
        except ExecError as exc:
            log.warning("link.exit_code_unknown", exec_id=process.exec_id[:12], error=str(exc))
            status = None
        if status is not None and isinstance(process, ExecProcess):
            with contextlib.suppress(ExecError):
                engine_said = await process.start_failure()
                if engine_said is not None:
                    self._start_failed(process, status, engine_said)
                    self._end_span(error=f"exec start failed: {engine_said[:200]}")
                    return
        if status is None:
            # The stream ended but the engine says the process runs on: end it.
            await self._terminate(process)
            self._fail("the container's engine did not report how the command ended")
            self._end_span(error="the engine did not report the exit code", terminated=True)
            return
        if not chan.is_closing():
            chan.exit(status)
        if self._lost:
            # The channel closed first and the stream ended because the process is being
            # ended (terminate): that task ends the span once it is done.
            if self._span is not None and not self._span_ended:
                self._span.set_attribute("process.exit.code", status)
            return
        self._end_span(exit_status=status)

    def exec_pause(self) -> None:
        if self._chan is not None:
            self._chan.pause_reading()

    def exec_resume(self) -> None:
        if self._chan is not None:
            self._chan.resume_reading()


class _Link:
    """One outbound connection to a gateway; it carries at most one session."""

    def __init__(
        self,
        gateway: GatewayLink,
        bridge: ExecBridge,
        tasks: BackgroundTasks,
        linger_s: float,
        slots: SessionSlots,
    ):
        self.slots = slots
        self.gateway = gateway
        self.bridge = bridge
        self.tasks = tasks
        self.linger_s = linger_s
        self.gateway_key = gateway.key_blob()
        self.used = asyncio.Event()
        self.conn: asyncssh.SSHServerConnection | None = None
        self.session: HostSession | None = None

    def server(self) -> "_LinkServer":
        return _LinkServer(self)

    def open_session(self) -> HostSession | bool:
        if self.session is not None:
            log.warning("link.second_session_refused", gateway=self.gateway.address)
            return False
        self.session = HostSession(self.bridge, self.tasks, self._session_closed, self.slots)
        self.used.set()
        return self.session

    def _session_closed(self) -> None:
        conn = self.conn
        if conn is not None:
            asyncio.get_running_loop().call_later(self.linger_s, conn.close)


class _LinkServer(asyncssh.SSHServer):
    def __init__(self, link: _Link) -> None:
        self._link = link

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._link.conn = conn
        limit_reads(conn)
        skip_ignore_packets(conn)
        # Whoever answers at the gateway's address may try to log in: bounded as the gateway
        # bounds its users (potluck.kernel.ssh_bounds).
        bound_before_login(
            conn,
            self._too_many_messages,
            auth_requests=LINK_AUTH_REQUESTS,
            too_many_auth_requests=self._too_many_requests,
        )

    def _too_many_messages(self, why: str) -> None:
        log.warning("link.too_many_messages", gateway=self._link.gateway.address, why=why)
        if self._link.conn is not None:
            self._link.conn.disconnect(asyncssh.DISC_PROTOCOL_ERROR, f"potluck: {why}")

    def _too_many_requests(self) -> None:
        log.warning("link.too_many_requests", gateway=self._link.gateway.address)
        if self._link.conn is not None:
            self._link.conn.disconnect(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "potluck: too many authentication attempts"
            )

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        accepted = bytes(key.public_data) == self._link.gateway_key
        if not accepted:
            log.warning(
                "link.gateway_key_refused",
                gateway=self._link.gateway.address,
                fingerprint=key.get_fingerprint(),
                hint="the gateway presented a key other than the client_key pinned in hostd's config",
            )
        return accepted

    def session_requested(self) -> HostSession | bool:
        return self._link.open_session()

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> bool:
        return False

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        return False


async def _dial(link: _Link, host_key: asyncssh.SSHKey, timing: LinkTiming) -> asyncssh.SSHServerConnection:
    return await asyncssh.connect_reverse(
        link.gateway.host,
        link.gateway.port,
        server_factory=link.server,
        server_host_keys=[host_key],
        authorized_client_keys=None,
        public_key_auth=True,
        password_auth=False,
        kbdint_auth=False,
        gss_auth=False,
        gss_kex=False,
        host_based_auth=False,
        allow_pty=True,
        line_editor=False,
        x11_forwarding=False,
        agent_forwarding=False,
        sftp_factory=None,
        allow_scp=False,
        encoding=None,
        window=timing.window,
        compression_algs=None,
        encryption_algs=list(LINK_CIPHERS),
        kex_algs=list(LINK_KEX_ALGS),
        mac_algs=list(LINK_MAC_ALGS),
        # server-sig-algs, and the signatures hostd verifies the gateway's login with.
        signature_algs=list(LINK_SIGNATURE_ALGS),
        server_version=HOSTD_SSH_VERSION,
        keepalive_interval=timing.keepalive_interval_s,
        keepalive_count_max=timing.keepalive_count_max,
        login_timeout=timing.connect_timeout_s,
        connect_timeout=timing.connect_timeout_s,
    )


async def _keep_spare(
    gateway: GatewayLink,
    slot: int,
    host_key: asyncssh.SSHKey,
    bridge: ExecBridge,
    timing: LinkTiming,
    tasks: BackgroundTasks,
    conns: set[asyncssh.SSHServerConnection],
    slots: SessionSlots,
) -> None:
    backoff = timing.initial_backoff_s
    failures = 0
    while True:
        link = _Link(gateway, bridge, tasks, timing.linger_s, slots)
        try:
            conn = await _dial(link, host_key, timing)
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            failures += 1
            wait = backoff * random.uniform(0.5, 1.0)
            (log.warning if failures in (1, 5) or failures % 50 == 0 else log.debug)(
                "link.dial_failed",
                gateway=gateway.address,
                slot=slot,
                error=f"{type(exc).__name__}: {exc}",
                retry_in=round(wait, 2),
                failures=failures,
                hint="gateway down or unreachable, or it does not know this host's key yet "
                "(registration pending)",
            )
            await asyncio.sleep(wait)
            backoff = min(backoff * 2, timing.max_backoff_s)
            continue
        if failures:
            log.info("link.connected", gateway=gateway.address, slot=slot, after_failures=failures)
        else:
            log.debug("link.connected", gateway=gateway.address, slot=slot)
        failures = 0
        conns.add(conn)
        started = time.monotonic()
        closed = asyncio.ensure_future(conn.wait_closed())
        used = asyncio.ensure_future(link.used.wait())
        try:
            await asyncio.wait({closed, used}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            used.cancel()
        if link.used.is_set():
            # The gateway took this one for a session: it lives on until the session ends.
            closed.add_done_callback(lambda _, c=conn: conns.discard(c))  # type: ignore[misc]
            backoff = timing.initial_backoff_s
            continue
        conns.discard(conn)
        # Closed while idle: the gateway went away, or the network did.
        if time.monotonic() - started > 10 * timing.initial_backoff_s:
            backoff = timing.initial_backoff_s
        wait = backoff * random.uniform(0.5, 1.0)
        log.info("link.dropped", gateway=gateway.address, slot=slot, retry_in=round(wait, 2))
        await asyncio.sleep(wait)
        backoff = min(backoff * 2, timing.max_backoff_s)


async def keep_linked(
    host_id: str,
    key_path: Path,
    gateways: Sequence[GatewayLink],
    bridge: ExecBridge,
    *,
    timing: LinkTiming | None = None,
    limits: SessionLimits | None = None,
) -> None:
    """Keep `timing.spares` idle connections at every gateway, forever; serve sessions on them.

    `limits` caps the sessions carried at once (session_slots.py); one over is told why.
    `key_path` is hostd's SSH host key (made if missing; ssh_identity.host_key_path(state_dir)).
    Cancel to stop: every connection is closed, and the processes of sessions
    still running are ended.
    """
    timing = timing or LinkTiming()
    slots = SessionSlots(limits or SessionLimits())
    # Sessions are served on this thread's event loop: keystrokes wait for its turn on the CPU.
    short = request_short_slice(timing.cpu_slice_us)
    log.debug("link.cpu_slice", short=short, slice_us=timing.cpu_slice_us)
    host_key = load_or_create_key(key_path, comment=f"potluck-hostd-{host_id}")
    with contextlib.suppress(ExecError, OSError):
        await bridge.reap_orphans()
    if not gateways:
        log.info("link.no_gateways", hint="add [[gateways]] to hostd's config to reach sessions")
        await asyncio.Event().wait()
    tasks = BackgroundTasks()
    conns: set[asyncssh.SSHServerConnection] = set()
    spares = [
        asyncio.ensure_future(_keep_spare(gateway, slot, host_key, bridge, timing, tasks, conns, slots))
        for gateway in gateways
        for slot in range(timing.spares)
    ]
    try:
        await asyncio.gather(*spares)
    finally:
        for task in spares:
            task.cancel()
        await asyncio.gather(*spares, return_exceptions=True)
        for conn in list(conns):
            conn.close()
        # Closing the connections ends their sessions, whose processes are being terminated.
        await asyncio.sleep(0)
        if tasks:
            await asyncio.wait(list(tasks), timeout=bridge.kill_grace_s + 5)
