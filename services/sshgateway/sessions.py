"""A user's session, from the channel opening to its end: gateway channel <-> host's link <-> docker exec.

A user's session channel (`GatewaySession`) is paired with a session opened
on one of its host's idle reverse connections (links.py), and bridged to it
both ways (bridge.py: flow control, byte counts). Its life is an explicit
state machine (session_state.py: NEW -> RECORDING -> CONNECTING -> OPEN ->
ENDED); this module does what each step takes:

1. recording the start: `SessionStarted` is appended before anything reaches
   the container (audit.py; no log, no session: the user reads why);
2. choosing the host: a session opens only for an allocation that is running,
   or that ended with its stopped container kept (`kept_until`: its host
   serves its logs and files, and refuses anything else saying so), otherwise
   the user, who authenticated with a key registered on it, reads why; and
   not on a gateway that is stopping;
3. connecting: taking one of the host's links, waiting a bounded time for one
   (a link whose session fails to open is closed and another tried);
4. bridging, until the session ends.

A session ends when the command exits (its exit status or signal goes back
to the user), when the user leaves, when the host's link drops (the user gets
a message saying so and exit status 255), when its allocation stops running
(released, expired, lost; a kept one's sessions end when it is discarded;
`potluck-logs` ends on its own when the container stops), when the
gateway shuts down, and when another gateway took this one for lost (cut off
from the bus) and recorded the session's end; the first end wins.
`SessionEnded` is then written in the background with retries.

Every session is also one trace (session_trace.py): the gateway's span is its
root, and its context goes to hostd in the session's environment.
"""

import asyncio
import re
import uuid
from collections.abc import Callable
from typing import Any

import asyncssh
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from potluck.readmodels.allocations import AllocationState
from potluck.sshgateway.audit import LoginIdentity, SessionRecord
from potluck.sshgateway.bridge import Bridge, HostSide, watch_writes
from potluck.sshgateway.context import GatewayContext
from potluck.sshgateway.events import EndReason, SessionEnded
from potluck.sshgateway.links import open_host_session
from potluck.sshgateway.request import SessionRequest, bound_environment, host_env
from potluck.sshgateway.session_caps import SessionPlace
from potluck.sshgateway.session_state import SessionState, Step, advance
from potluck.sshgateway.session_trace import SessionTrace
from potluck.sshgateway.start_wait import NOT_STARTED

__all__ = ["GatewaySession", "not_running_message", "reachable"]

log = structlog.get_logger(__name__)

#: Characters kept of text a host chose (a refusal's or a disconnection's reason) where the
#: gateway logs or records it: a host's hostd is its member's to change, and would otherwise
#: write what it liked into the gateway's log, a packet (32 KB) at a time.
MAX_HOST_TEXT = 300

#: A signal name the gateway relays to the host (RFC 4254 6.9: a name without "SIG", or
#: name@domain). The client chooses it, up to a packet long: hostd named an undeliverable one
#: whole in its log, and one session wrote a 100 KB line into a member's hostd log.
_SIGNAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9@._+-]{0,31}")


def not_running_message(alloc_id: str, state: AllocationState | None) -> str:
    if state is None:
        return f"allocation {alloc_id} does not exist"
    if state.status in NOT_STARTED:
        return (
            f"allocation {alloc_id} is {state.status}: its container is not running yet; "
            "try again in a moment"
        )
    why = f" ({state.reason})" if state.reason else ""
    if state.status == "exited":
        return (
            f"allocation {alloc_id} is exited{why}: its container was removed (it was not kept, or its "
            "keep_for is up); ask for keep_for on the next one to fetch results after it ends"
        )
    return f"allocation {alloc_id} is {state.status}{why}: nothing runs there any more"


def reachable(state: AllocationState | None) -> bool:
    """Whether sessions go to the allocation's host: it runs, or it ended and its container is kept."""
    return state is not None and state.host_id is not None and (state.status == "running" or state.kept)


class GatewaySession(asyncssh.SSHServerSession[bytes]):
    """One user session: asyncssh's callbacks on the user's channel, and each step of its life."""

    def __init__(
        self,
        ctx: GatewayContext,
        identity: LoginIdentity,
        place: SessionPlace,
        env_refused: Callable[[str], None] = lambda name: None,
    ) -> None:
        self.ctx = ctx
        #: Told the name of each `env` request the channel refuses (request.bound_environment).
        self._env_refused = env_refused
        self.identity = identity
        #: Its place under the per-connection and per-user caps, given back when the channel closes.
        self.place = place
        self.session_id = uuid.uuid4().hex
        self.state = SessionState.NEW
        self.request = SessionRequest()
        self.record = SessionRecord(self.session_id, identity, ctx.settings.name, ctx.run_id)
        self.host_id: str | None = None
        self.trace: SessionTrace | None = None
        self._bridge = Bridge(self.record.counts)
        self._link: asyncssh.SSHClientConnection | None = None
        #: Built at the end; queued once SessionStarted is in the log, if the end came first.
        self._end_fact: SessionEnded | None = None

    @property
    def bridge(self) -> Bridge:
        return self._bridge

    @property
    def reads_logs(self) -> bool:
        """A `potluck-logs` session (served by hostd): it ends when the container's output does."""
        return self.request.reads_logs

    def _step(self, step: Step) -> None:
        self.state = advance(self.state, step)

    # Requests on the user's channel (state NEW).

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._bridge.user = chan
        bound_environment(chan, self._env_refused)
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
        self.request.term_type = term_type or "xterm"
        self.request.term_size = term_size
        self.request.term_modes = dict(term_modes or {})
        return True

    def shell_requested(self) -> bool:
        self.request.kind = "shell"
        return True

    def exec_requested(self, command: str) -> bool:
        self.request.kind = "exec"
        self.request.command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        # Any name is taken, so that an unknown one is refused with its reason on stderr
        # (session_started): a failed request carries none, and OpenSSH prints only "subsystem
        # request failed on channel 0".
        self.request.kind = "subsystem"
        self.request.subsystem = subsystem
        return True

    def session_started(self) -> None:
        refusal = self.request.refusal()
        if refusal is not None:
            self._refuse_unserved(refusal)
            return
        # asyncssh resumes reading right after this returns; input that comes before the
        # host's session is open pauses it again (Bridge.from_user).
        self._step(Step.START)
        self.ctx.tasks.start(self._start())

    def _refuse_unserved(self, message: str) -> None:
        """End a session that asked for what the gateway does not serve (request.refusal), before
        anything is recorded or reaches the host (NEW -> UNRECORDED, as a user who asked for
        nothing)."""
        self._step(Step.END)
        log.info("session.refused", session_id=self.session_id, alloc_id=self.identity.alloc_id, why=message)
        if self.trace is not None:
            self.trace.finish("REFUSED", message, bytes_in=0, bytes_out=0)
        self._bridge.refuse(message)

    # Opening.

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
        allocation = self.ctx.view.allocation(self.identity.alloc_id)
        self.host_id = allocation.host_id if allocation is not None else None
        if self.trace is not None:
            self.trace.describe(kind=self.request.kind, pty=self.request.pty, host_id=self.host_id)
        if not await self._record_start(allocation):
            return
        host_id = await self._host_to_reach()
        if host_id is None:
            return
        opened = await self._connect_to_host(host_id)
        if opened is None:
            return
        chan, self._link = opened
        if self.state.ended:  # while the host's session was opening
            chan.close()
            self._link.close()
            return
        self._step(Step.CONNECTED)
        # One link, one session: the link's socket backing up is this session's host reading slowly.
        watch_writes(self._link, self._bridge.host_link_congested, self._bridge.host_link_drained)
        self._bridge.connect(chan)

    async def _record_start(self, allocation: AllocationState | None) -> bool:
        """Append SessionStarted (RECORDING -> CONNECTING); False if the session is over instead."""
        started = self.record.started(
            self.request, user=allocation.user if allocation is not None else "", host_id=self.host_id
        )
        try:
            await self.ctx.audit.started(started)
        except Exception as exc:
            log.error("session.audit_unavailable", session_id=self.session_id, error=repr(exc))
            self._step(Step.NOT_RECORDED)
            if self.trace is not None:
                counts = self.record.counts
                self.trace.finish(
                    "AUDIT_UNAVAILABLE", repr(exc), bytes_in=counts.bytes_in, bytes_out=counts.bytes_out
                )
            self._bridge.refuse("the session could not be recorded (audit log unavailable); try again later")
            return False
        self._step(Step.RECORDED)
        if self.state is SessionState.ENDED:
            # The user left while the start was being recorded: now its end can be.
            assert self._end_fact is not None
            self._queue_end(self._end_fact)
            return False
        self.ctx.sessions.add(self)
        log.info(
            "session.started",
            session_id=self.session_id,
            alloc_id=self.identity.alloc_id,
            host_id=self.host_id,
            source=self.identity.source_address,
            kind=self.request.kind,
            pty=self.request.pty,
            trace_id=self.trace.trace_id if self.trace is not None else None,
        )
        return True

    async def _host_to_reach(self) -> str | None:
        """The host running the allocation, once it runs (start_wait.py: up to `start_wait_s`
        while it is still starting); None, after ending the session, if there is none to reach
        (the allocation is not running), the gateway is stopping, or the user left meanwhile."""
        allocation = await self.ctx.starts.settled(
            self.identity.alloc_id, self.ctx.view.allocation, self.ctx.settings.start_wait_s
        )
        if self.state.ended:
            return None
        if self.ctx.stopping:
            self._end("GATEWAY_STOPPING", "the gateway is shutting down")
            return None
        if allocation is not None and allocation.user in self.ctx.view.removed_users:
            # On a connection let in just before the removal was folded (reactions.py ends the rest).
            self._end("ALLOCATION_NOT_RUNNING", "your user was removed by the pool's operator")
            return None
        if allocation is None or not reachable(allocation) or allocation.host_id is None:
            self._end("ALLOCATION_NOT_RUNNING", not_running_message(self.identity.alloc_id, allocation))
            return None
        # Placed a moment ago, the allocation may have had no host when the start was recorded.
        self.host_id = allocation.host_id
        return allocation.host_id

    async def _connect_to_host(
        self, host_id: str
    ) -> tuple[asyncssh.SSHClientChannel[bytes], asyncssh.SSHClientConnection] | None:
        """A session open on one of the host's links; None if the session ended meanwhile, or
        (after ending it) if no link came within `link_wait_s`."""
        settings = self.ctx.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.link_wait_s
        while True:
            left = deadline - loop.time()
            link = await self.ctx.links.take(host_id, max(left, 0.0)) if left > 0 else None
            if self.state.ended:
                if link is not None:
                    self.ctx.links.offer(host_id, link)
                return None
            if link is None:
                self._end(
                    "HOST_NOT_CONNECTED",
                    f"the machine running allocation {self.identity.alloc_id} is not connected to "
                    "this gateway (asleep or offline?); try again later",
                )
                return None
            try:
                chan = await open_host_session(
                    link,
                    lambda: HostSide(self._bridge, self._host_closed),
                    self.request,
                    self._host_env(),
                    window=settings.link_window,
                    timeout=settings.channel_open_timeout_s,
                )
            except (TimeoutError, asyncssh.Error, OSError) as exc:
                # The host wrote the reason (a ChannelOpenError's): its start says enough.
                error = repr(exc)[:MAX_HOST_TEXT]
                log.warning("session.link_failed", session_id=self.session_id, host_id=host_id, error=error)
                if self.trace is not None:
                    self.trace.span.add_event("link failed, trying another", {"error": error})
                link.close()
                continue
            return chan, link

    def _host_env(self) -> dict[str | bytes, str | bytes]:
        assert self._bridge.user is not None
        return host_env(
            self._bridge.user.get_environment(),
            alloc_id=self.identity.alloc_id,
            session_id=self.session_id,
            # hostd's exec span continues this session's trace (session_trace.py says why here).
            trace_env=self.trace.link_env() if self.trace is not None else {},
        )

    # Data and requests from the user: to the host once bridged, held before.

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._bridge.from_user(data)

    def eof_received(self) -> bool:
        self._bridge.user_eof()
        return True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        self.request.term_size = (width, height, pixwidth, pixheight)
        self._bridge.resize(width, height, pixwidth, pixheight)

    def signal_received(self, signal: str) -> None:
        # Any other name could not name a signal hostd delivers (exec_bridge.signal_number):
        # dropped here, as hostd drops those it does not know, rather than relayed whole.
        if _SIGNAL_NAME.fullmatch(signal):
            self._bridge.signal(signal)

    def break_received(self, msec: int) -> bool:
        return self._bridge.send_break(msec)

    def pause_writing(self) -> None:
        self._bridge.user_reads_slowly()

    def resume_writing(self) -> None:
        self._bridge.user_reads_again()

    def connection_lost(self, exc: Exception | None) -> None:
        # Ended first, so that the host's side closing below finds the session over.
        self._record_end("CLIENT_DISCONNECTED", "")
        self._close_host()
        self.place.give_back()

    # The host's side closing.

    def _host_closed(self, host: HostSide, exc: Exception | None) -> None:
        if self._link is not None:
            self._link.close()
        if self.state.ended:
            return
        if host.exit_status is not None:
            self._record_end("EXITED", "", exit_status=host.exit_status)
            self._bridge.exit(host.exit_status)
        elif host.exit_signal is not None:
            signal, core_dumped, msg, lang = host.exit_signal
            self._record_end("EXITED", msg, exit_signal=signal)
            self._bridge.exit_with_signal(signal, core_dumped, msg, lang)
        else:
            self._end(
                "HOST_DISCONNECTED",
                f"lost the connection to the machine running allocation {self.identity.alloc_id} "
                "(asleep, offline, or hostd stopped); the session ended",
                detail=repr(exc)[:MAX_HOST_TEXT] if exc else "",
            )

    # Ending.

    def end(self, reason: EndReason, message: str) -> None:
        """End the session from the gateway's side (allocation stopped, gateway stopping)."""
        self._end(reason, message)

    def _end(self, reason: EndReason, message: str, *, detail: str = "") -> None:
        self._record_end(reason, detail or message)
        self._bridge.refuse(message)
        self._close_host()

    def _close_host(self) -> None:
        self._bridge.close_host()
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
        """The first end of the session: logged, traced, and recorded once its start is."""
        if self.state.ended:
            return
        self._step(Step.END)
        self.ctx.sessions.remove(self)
        ended = self.record.ended(reason, detail, exit_status=exit_status, exit_signal=exit_signal)
        log.info(
            "session.ended",
            session_id=self.session_id,
            alloc_id=self.identity.alloc_id,
            reason=reason,
            exit_status=exit_status,
            bytes_in=ended.bytes_in,
            bytes_out=ended.bytes_out,
            seconds=round((ended.ended_at - ended.started_at).total_seconds(), 3),
        )
        self._end_fact = ended
        if self.trace is not None:
            self.trace.finish(
                reason,
                detail,
                bytes_in=ended.bytes_in,
                bytes_out=ended.bytes_out,
                exit_status=exit_status,
                exit_signal=exit_signal,
            )
        if self.state is SessionState.ENDED:
            self._queue_end(ended)
        # ENDING: _record_start queues it once SessionStarted is in the log; UNRECORDED: never.

    def _queue_end(self, ended: SessionEnded) -> None:
        # GATEWAY_LOST is written by another gateway's sweep only (gateway_sweep.py): a session
        # ending for it ends because that end is in the log already.
        if ended.reason != "GATEWAY_LOST":
            self.ctx.audit.ended(ended, self._trace_context())
