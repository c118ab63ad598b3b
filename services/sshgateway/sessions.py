"""Carrying a user's session to the container: gateway channel <-> host connection <-> docker exec.

A user's session channel (`GatewaySession`) is paired with a session opened
on one of its host's idle reverse connections (`LinkPool`, fed by hostds
dialling in; see potluck.hostd.gateway_link for why each session gets a
connection of its own). Bridging is at the channel level, in both
directions, so the gateway sees and counts every byte for the audit and
never buffers without bound:

- data, stdout and stderr apart, are written through as they arrive; when a
  channel's send buffer passes its high-water mark asyncssh calls
  `pause_writing()`, and the gateway stops reading the other channel, which
  stops its SSH window updates, which stops the sender (a slow reader slows
  the writer, end to end, through the engine's socket too);
- end of input, window changes, breaks and signals are forwarded;
- the exit status (or signal) comes back; if the host's connection drops
  first, the user gets a message saying so and exit status 255.

A session opens only for an allocation that is running; otherwise the user
(who authenticated with a key registered on it) reads why. A session ends,
with a message, when its allocation stops running (released, expired, lost)
and when the gateway shuts down. Every session is recorded (events.py):
`SessionStarted` before anything reaches the container (no log, no session),
`SessionEnded` afterwards, written in the background with retries.

Every session is also one trace (session_trace.py): the gateway's span is its
root, and its context goes to hostd in the session's environment.
"""

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncssh
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from potluck.events import DuplicateEvent, EventStore, NewEvent, WrongExpectedVersion, event_id_for
from potluck.readmodels.allocations import AllocationState
from potluck.sshgateway.events import (
    MAX_COMMAND,
    EndReason,
    SessionEnded,
    SessionKind,
    SessionStarted,
    session_stream,
)
from potluck.sshgateway.projection import GatewayView
from potluck.sshgateway.session_trace import SessionTrace
from potluck.sshgateway.settings import GatewaySettings

__all__ = ["AuditLog", "GatewayContext", "GatewaySession", "LinkPool", "LoginIdentity", "SessionRegistry"]

log = structlog.get_logger(__name__)

_STDERR = asyncssh.EXTENDED_DATA_STDERR


def _now() -> datetime:
    return datetime.now(UTC)


class LinkPool:
    """Idle, authenticated reverse connections per host; each is taken for exactly one session."""

    def __init__(self) -> None:
        self._idle: dict[str, deque[asyncssh.SSHClientConnection]] = {}
        self._waiters: dict[str, deque[asyncio.Future[asyncssh.SSHClientConnection]]] = {}
        self._host_of: dict[asyncssh.SSHClientConnection, str] = {}

    def offer(self, host_id: str, conn: asyncssh.SSHClientConnection) -> None:
        self._host_of[conn] = host_id
        waiters = self._waiters.get(host_id)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.setdefault(host_id, deque()).append(conn)

    def discard(self, conn: asyncssh.SSHClientConnection) -> None:
        host_id = self._host_of.pop(conn, None)
        if host_id is not None:
            idle = self._idle.get(host_id)
            if idle is not None:
                with contextlib.suppress(ValueError):
                    idle.remove(conn)

    def idle(self, host_id: str) -> int:
        return sum(1 for c in self._idle.get(host_id, ()) if not c.is_closed())

    async def take(self, host_id: str, timeout: float) -> asyncssh.SSHClientConnection | None:
        """An idle connection from `host_id`, waiting up to `timeout` for one to arrive."""
        idle = self._idle.get(host_id)
        while idle:
            conn = idle.popleft()
            if not conn.is_closed():
                return conn
        waiter: asyncio.Future[asyncssh.SSHClientConnection] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(host_id, deque())
        waiters.append(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed over just as the session gave up: keep it for the next one.
                self.offer(host_id, waiter.result())
            raise
        finally:
            with contextlib.suppress(ValueError):
                waiters.remove(waiter)

    def close_host(self, host_id: str) -> None:
        for conn in list(self._idle.pop(host_id, ())):
            conn.close()

    def close_all(self) -> None:
        for host_id in list(self._idle):
            self.close_host(host_id)
        for conn in list(self._host_of):
            conn.close()


class AuditLog:
    """Appends session events: SessionStarted right away (the caller waits), SessionEnded queued."""

    def __init__(self, store: EventStore, *, timeout: float = 5.0) -> None:
        self.store = store
        self.timeout = timeout
        self._queue: asyncio.Queue[tuple[SessionEnded, Context]] = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()

    async def started(self, event: SessionStarted) -> None:
        new = NewEvent(event, event_id=event_id_for("sshgateway", event.session_id, 0))
        await asyncio.wait_for(
            self.store.append(session_stream(event.session_id), [new], expected_version=0), self.timeout
        )

    def ended(self, event: SessionEnded, trace_context: Context | None = None) -> None:
        """Queue `event`; it is appended in `trace_context` (the session's), so it joins that trace."""
        self._idle.clear()
        self._queue.put_nowait((event, trace_context if trace_context is not None else Context()))

    async def run(self) -> None:
        while True:
            event, trace_context = await self._queue.get()
            # The append (asyncpg's span, the traceparent in the event's metadata) belongs to
            # the session's trace, not to whatever this long-lived task was started in.
            token = otel_context.attach(trace_context)
            try:
                await self._append_ended(event)
            finally:
                otel_context.detach(token)
            if self._queue.empty():
                self._idle.set()

    async def _append_ended(self, event: SessionEnded) -> None:
        backoff = 0.2
        while True:
            new = NewEvent(event, event_id=event_id_for("sshgateway", event.session_id, 1))
            try:
                await asyncio.wait_for(
                    self.store.append(session_stream(event.session_id), [new], expected_version=1),
                    self.timeout,
                )
                return
            except (DuplicateEvent, WrongExpectedVersion) as exc:
                # An earlier try went through after all (its answer was lost), or a bug.
                with contextlib.suppress(Exception):
                    if await self.store.contains(new.event_id):
                        return
                log.error("audit.session_end_conflict", session_id=event.session_id, error=str(exc))
                return
            except Exception as exc:  # the log is away: keep the fact, try again
                log.warning("audit.append_failed", session_id=event.session_id, error=repr(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def flush(self, timeout: float) -> bool:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        return self._idle.is_set()


class SessionRegistry:
    """Sessions in progress, by allocation, so they can be ended when it stops running."""

    def __init__(self) -> None:
        self._by_alloc: dict[str, set[GatewaySession]] = {}

    def add(self, session: "GatewaySession") -> None:
        self._by_alloc.setdefault(session.identity.alloc_id, set()).add(session)

    def remove(self, session: "GatewaySession") -> None:
        sessions = self._by_alloc.get(session.identity.alloc_id)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._by_alloc[session.identity.alloc_id]

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_alloc.values())

    def of(self, alloc_id: str) -> list["GatewaySession"]:
        return list(self._by_alloc.get(alloc_id, ()))

    def all(self) -> list["GatewaySession"]:
        return [s for sessions in self._by_alloc.values() for s in sessions]


@dataclass
class GatewayContext:
    settings: GatewaySettings
    view: GatewayView
    links: LinkPool
    audit: AuditLog
    sessions: SessionRegistry = field(default_factory=SessionRegistry)
    tasks: set["asyncio.Task[Any]"] = field(default_factory=set)
    #: Users' connections, closed when the gateway stops.
    connections: set[asyncssh.SSHServerConnection] = field(default_factory=set)
    stopping: bool = False

    def spawn(self, coro: Awaitable[Any]) -> "asyncio.Task[Any]":
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


@dataclass(frozen=True)
class LoginIdentity:
    """Who authenticated on a user connection: the allocation (login name), the key, from where."""

    alloc_id: str
    key_fingerprint: str
    source_address: str
    source_port: int


def not_running_message(alloc_id: str, state: AllocationState | None) -> str:
    if state is None:
        return f"allocation {alloc_id} does not exist"
    if state.status in ("pending", "placed"):
        return (
            f"allocation {alloc_id} is {state.status}: its container is not running yet; "
            "try again in a moment"
        )
    why = f" ({state.reason})" if state.reason else ""
    return f"allocation {alloc_id} is {state.status}{why}: nothing runs there any more"


class _Upstream(asyncssh.SSHClientSession[bytes]):
    """The session on the host's connection, feeding back into the user's channel."""

    def __init__(self, session: "GatewaySession") -> None:
        self._session = session
        self.exit_status: int | None = None
        self.exit_signal: tuple[str, bool, str, str] | None = None

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._session._from_container(data, datatype)

    def eof_received(self) -> bool:
        self._session._container_eof()
        return True

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.exit_signal = (signal, core_dumped, msg, lang)

    def pause_writing(self) -> None:
        self._session._pause_user()

    def resume_writing(self) -> None:
        self._session._resume_user()

    def connection_lost(self, exc: Exception | None) -> None:
        self._session._upstream_closed(self, exc)


class GatewaySession(asyncssh.SSHServerSession[bytes]):
    def __init__(self, ctx: GatewayContext, identity: LoginIdentity) -> None:
        self.ctx = ctx
        self.identity = identity
        self.session_id = uuid.uuid4().hex
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._term_type: str | None = None
        self._term_size: tuple[int, int, int, int] = (0, 0, 0, 0)
        self._term_modes: dict[int, int] = {}
        self._kind: SessionKind = "shell"
        self._command: str | None = None
        self._subsystem: str | None = None
        self._upstream_chan: asyncssh.SSHClientChannel[bytes] | None = None
        self._link: asyncssh.SSHClientConnection | None = None
        self._pending: list[bytes] = []
        self._eof = False
        self._user_gone = False
        self._started_at = _now()
        self._recorded_start = False
        self._ended = False
        self._end_fact: SessionEnded | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.host_id: str | None = None
        self.trace: SessionTrace | None = None

    # Requests on the user's channel.

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan
        # Started here, not in __init__: from now on asyncssh promises connection_lost, which
        # ends the span if nothing else did.
        self.trace = SessionTrace.start(
            session_id=self.session_id,
            alloc_id=self.identity.alloc_id,
            key_fingerprint=self.identity.key_fingerprint,
            peer_address=self.identity.source_address,
            peer_port=self.identity.source_port,
            gateway=self.ctx.settings.name,
        )

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Any) -> bool:
        self._term_type = term_type or "xterm"
        self._term_size = term_size
        self._term_modes = dict(term_modes or {})
        return True

    def shell_requested(self) -> bool:
        self._kind = "shell"
        return True

    def exec_requested(self, command: str) -> bool:
        self._kind = "exec"
        self._command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp":
            return False
        self._kind = "subsystem"
        self._subsystem = subsystem
        return True

    def session_started(self) -> None:
        # asyncssh resumes reading right after this returns; input that comes before the
        # host's session is open pauses it again (data_received).
        self.ctx.spawn(self._start())

    # Opening.

    def _env(self) -> dict[str | bytes, str | bytes]:
        assert self._chan is not None
        sent = self._chan.get_environment()
        env: dict[str | bytes, str | bytes] = {
            k: v for k, v in sent.items() if k == "LANG" or k.startswith("LC_")
        }
        env["POTLUCK_ALLOC"] = self.identity.alloc_id
        env["POTLUCK_SESSION"] = self.session_id
        if self.trace is not None:
            # hostd's exec span continues this session's trace (session_trace.py says why here).
            env.update(self.trace.link_env())
        return env

    def _trace_context(self) -> Context:
        return trace.set_span_in_context(self.trace.span) if self.trace is not None else Context()

    async def _start(self) -> None:
        # Everything the opening does (the audit append, the host's session) is in the span.
        token = otel_context.attach(self._trace_context())
        try:
            await self._open()
        finally:
            otel_context.detach(token)

    async def _open(self) -> None:
        ctx = self.ctx
        alloc_id = self.identity.alloc_id
        state = ctx.view.allocation(alloc_id)
        self.host_id = state.host_id if state is not None else None
        command = self._command if self._command is not None else self._subsystem
        started = SessionStarted(
            session_id=self.session_id,
            alloc_id=alloc_id,
            user=state.user if state is not None else "",
            host_id=self.host_id,
            key_fingerprint=self.identity.key_fingerprint,
            source_address=self.identity.source_address,
            source_port=self.identity.source_port,
            gateway=ctx.settings.name,
            kind=self._kind,
            command=command[:MAX_COMMAND] if command else None,
            pty=self._term_type is not None,
            term_type=self._term_type,
            started_at=self._started_at,
        )
        if self.trace is not None:
            self.trace.describe(kind=self._kind, pty=self._term_type is not None, host_id=self.host_id)
        try:
            await ctx.audit.started(started)
        except Exception as exc:
            log.error("session.audit_unavailable", session_id=self.session_id, error=repr(exc))
            if self.trace is not None:
                self.trace.finish(
                    "AUDIT_UNAVAILABLE", repr(exc), bytes_in=self.bytes_in, bytes_out=self.bytes_out
                )
            self._refuse("the session could not be recorded (audit log unavailable); try again later")
            return
        self._recorded_start = True
        if self._end_fact is not None:
            # The user left while the start was being recorded.
            ctx.audit.ended(self._end_fact, self._trace_context())
            return
        ctx.sessions.add(self)
        log.info(
            "session.started",
            session_id=self.session_id,
            alloc_id=alloc_id,
            host_id=self.host_id,
            source=self.identity.source_address,
            kind=self._kind,
            pty=self._term_type is not None,
            trace_id=self.trace.trace_id if self.trace is not None else None,
        )
        if ctx.stopping:
            self._end("GATEWAY_STOPPING", "the gateway is shutting down")
            return
        if state is None or state.status != "running" or self.host_id is None:
            self._end("ALLOCATION_NOT_RUNNING", not_running_message(alloc_id, state))
            return
        deadline = asyncio.get_running_loop().time() + ctx.settings.link_wait_s
        while True:
            left = deadline - asyncio.get_running_loop().time()
            link = await ctx.links.take(self.host_id, max(left, 0.0)) if left > 0 else None
            if self._user_gone or self._ended:
                if link is not None:
                    ctx.links.offer(self.host_id, link)
                return
            if link is None:
                self._end(
                    "HOST_NOT_CONNECTED",
                    f"the machine running allocation {alloc_id} is not connected to this gateway "
                    "(asleep or offline?); try again later",
                )
                return
            try:
                chan, _ = await asyncio.wait_for(
                    link.create_session(
                        lambda: _Upstream(self),
                        self._command,
                        subsystem=self._subsystem,
                        env=self._env(),
                        request_pty=self._term_type is not None,
                        term_type=self._term_type,
                        term_size=self._term_size if self._term_type is not None else (),
                        term_modes=self._term_modes if self._term_type is not None else (),
                        encoding=None,
                        window=ctx.settings.link_window,
                    ),
                    ctx.settings.channel_open_timeout_s,
                )
            except (TimeoutError, asyncssh.Error, OSError) as exc:
                log.warning(
                    "session.link_failed", session_id=self.session_id, host_id=self.host_id, error=repr(exc)
                )
                if self.trace is not None:
                    self.trace.span.add_event("link failed, trying another", {"error": repr(exc)})
                link.close()
                continue
            break
        self._link = link
        self._upstream_chan = chan
        if self._user_gone or self._ended:
            chan.close()
            link.close()
            return
        for data in self._pending:
            chan.write(data)
        self._pending.clear()
        if self._eof:
            chan.write_eof()
        assert self._chan is not None
        self._chan.resume_reading()

    def _refuse(self, message: str) -> None:
        chan = self._chan
        if chan is not None and not chan.is_closing():
            with contextlib.suppress(OSError):
                chan.write(f"potluck: {message}\r\n".encode(), _STDERR)
                chan.exit(255)

    # Data and requests from the user.

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.bytes_in += len(data)
        if self._upstream_chan is not None:
            self._upstream_chan.write(data)
        elif self._chan is not None:
            self._pending.append(data)
            self._chan.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        if self._upstream_chan is not None:
            self._upstream_chan.write_eof()
        return True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self._term_size = (width, height, pixwidth, pixheight)
        if self._upstream_chan is not None:
            self._upstream_chan.change_terminal_size(width, height, pixwidth, pixheight)

    def signal_received(self, signal: str) -> None:
        if self._upstream_chan is not None:
            self._upstream_chan.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        if self._upstream_chan is None:
            return False
        self._upstream_chan.send_break(msec)
        return True

    def pause_writing(self) -> None:
        # The user reads slower than the container writes: stop taking from the host.
        if self._upstream_chan is not None:
            self._upstream_chan.pause_reading()

    def resume_writing(self) -> None:
        if self._upstream_chan is not None:
            self._upstream_chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._user_gone = True
        if self._upstream_chan is not None:
            self._upstream_chan.close()
        if self._link is not None:
            self._link.close()
        self._record_end("CLIENT_DISCONNECTED", "")

    # From the container.

    def _from_container(self, data: bytes, datatype: asyncssh.DataType) -> None:
        chan = self._chan
        if chan is None or chan.is_closing():
            return
        self.bytes_out += len(data)
        chan.write(data, datatype)

    def _container_eof(self) -> None:
        chan = self._chan
        if chan is not None and not chan.is_closing():
            chan.write_eof()

    def _pause_user(self) -> None:
        if self._chan is not None:
            self._chan.pause_reading()

    def _resume_user(self) -> None:
        if self._chan is not None:
            self._chan.resume_reading()

    def _upstream_closed(self, upstream: _Upstream, exc: Exception | None) -> None:
        if self._link is not None:
            self._link.close()
        if self._ended or self._user_gone:
            return
        chan = self._chan
        assert chan is not None
        if upstream.exit_status is not None:
            self._record_end("EXITED", "", exit_status=upstream.exit_status)
            if not chan.is_closing():
                chan.exit(upstream.exit_status)
        elif upstream.exit_signal is not None:
            signal, core_dumped, msg, lang = upstream.exit_signal
            self._record_end("EXITED", msg, exit_signal=signal)
            if not chan.is_closing():
                chan.exit_with_signal(signal, core_dumped, msg, lang)
        else:
            self._end(
                "HOST_DISCONNECTED",
                f"lost the connection to the machine running allocation {self.identity.alloc_id} "
                "(asleep, offline, or hostd stopped); the session ended",
                detail=repr(exc) if exc else "",
            )

    # Ending.

    def end(self, reason: EndReason, message: str) -> None:
        """End the session from the gateway's side (allocation stopped, gateway stopping)."""
        self._end(reason, message)

    def _end(self, reason: EndReason, message: str, *, detail: str = "") -> None:
        self._record_end(reason, detail or message)
        self._refuse(message)
        if self._upstream_chan is not None:
            self._upstream_chan.close()
        if self._link is not None:
            self._link.close()

    def _record_end(
        self,
        reason: EndReason,
        detail: str,
        *,
        exit_status: int | None = None,
        exit_signal: str | None = None,
    ) -> None:
        if self._ended:
            return
        self._ended = True
        self.ctx.sessions.remove(self)
        ended_at = _now()
        log.info(
            "session.ended",
            session_id=self.session_id,
            alloc_id=self.identity.alloc_id,
            reason=reason,
            exit_status=exit_status,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            seconds=round((ended_at - self._started_at).total_seconds(), 3),
        )
        self._end_fact = SessionEnded(
            session_id=self.session_id,
            alloc_id=self.identity.alloc_id,
            reason=reason,
            detail=detail[:1000],
            exit_status=exit_status,
            exit_signal=exit_signal,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            started_at=self._started_at,
            ended_at=ended_at,
        )
        if self.trace is not None:
            self.trace.finish(
                reason,
                detail,
                bytes_in=self.bytes_in,
                bytes_out=self.bytes_out,
                exit_status=exit_status,
                exit_signal=exit_signal,
            )
        if self._recorded_start:
            self.ctx.audit.ended(self._end_fact, self._trace_context())
        # Otherwise _start writes it once SessionStarted is in the log (or never, if it is not).
