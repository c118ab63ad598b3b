"""The session audit, as the gateway writes it: who opened a session, its byte counts, its two events.

`SessionRecord` is what the gateway keeps of one session while it runs: the
login (`LoginIdentity`: allocation, key, source), when it started, and the
bytes each way (`ByteCounts`, counted by the bridge as they pass: data from
the user is `bytes_in`, stdout and stderr to the user `bytes_out`). It makes
the session's `SessionStarted` and `SessionEnded` (events.py says what they
hold and why).

`AuditLog` appends them, each at a fixed version of the session's stream with
an event id derived from the session id, so a retry never writes a fact twice:

- `SessionStarted` right away, and the caller waits: a session whose start
  the log cannot take is refused (no log, no session);
- `SessionEnded` queued and written in the background (the user does not
  wait for it), retried with backoff while the log is away, and flushed when
  the gateway stops. It is appended in the session's trace context, so the
  append's span and the event's traceparent belong to that session's trace.
"""

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from opentelemetry import context as otel_context
from opentelemetry.context import Context

from potluck.events import DuplicateEvent, EventStore, NewEvent, WrongExpectedVersion, event_id_for
from potluck.sshgateway.events import (
    MAX_COMMAND,
    EndReason,
    SessionEnded,
    SessionStarted,
    session_stream,
)
from potluck.sshgateway.request import SessionRequest

__all__ = ["AuditLog", "ByteCounts", "LoginIdentity", "SessionRecord"]

log = structlog.get_logger(__name__)

#: `SessionEnded.detail` keeps this many characters.
MAX_DETAIL = 1000


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LoginIdentity:
    """Who authenticated on a user connection: the allocation (login name), the key, from where."""

    alloc_id: str
    key_fingerprint: str
    source_address: str
    source_port: int


@dataclass
class ByteCounts:
    """Bytes a session carried: from the user to the container (in), and back (out)."""

    bytes_in: int = 0
    bytes_out: int = 0


@dataclass
class SessionRecord:
    """What the audit keeps of one session while it runs, and the events it makes of it."""

    session_id: str
    identity: LoginIdentity
    gateway: str
    #: The gateway process's run id (events.py); None for a gateway without a bus.
    gateway_run: str | None = None
    started_at: datetime = field(default_factory=_now)
    counts: ByteCounts = field(default_factory=ByteCounts)

    def started(self, request: SessionRequest, *, user: str, host_id: str | None) -> SessionStarted:
        command = request.command_line
        return SessionStarted(
            session_id=self.session_id,
            alloc_id=self.identity.alloc_id,
            user=user,
            host_id=host_id,
            key_fingerprint=self.identity.key_fingerprint,
            source_address=self.identity.source_address,
            source_port=self.identity.source_port,
            gateway=self.gateway,
            gateway_run=self.gateway_run,
            kind=request.kind,
            command=command[:MAX_COMMAND] if command else None,
            command_length=len(command) if command else None,
            command_sha256=hashlib.sha256(command.encode("utf-8", "surrogatepass")).hexdigest()
            if command
            else None,
            pty=request.pty,
            term_type=request.term_type,
            started_at=self.started_at,
        )

    def ended(
        self,
        reason: EndReason,
        detail: str,
        *,
        exit_status: int | None = None,
        exit_signal: str | None = None,
    ) -> SessionEnded:
        """The session's end, now, with the bytes counted so far."""
        return SessionEnded(
            session_id=self.session_id,
            alloc_id=self.identity.alloc_id,
            reason=reason,
            detail=detail[:MAX_DETAIL],
            exit_status=exit_status,
            exit_signal=exit_signal,
            bytes_in=self.counts.bytes_in,
            bytes_out=self.counts.bytes_out,
            started_at=self.started_at,
            ended_at=_now(),
        )


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
        async with asyncio.timeout(self.timeout):
            await self.store.append(session_stream(event.session_id), [new], expected_version=0)

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
                async with asyncio.timeout(self.timeout):
                    await self.store.append(session_stream(event.session_id), [new], expected_version=1)
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
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        return self._idle.is_set()
