"""One trace per SSH session, rooted at the gateway.

`SessionTrace.start` opens a SERVER span, `ssh session`, when a user's
session channel opens (that is, after authentication: a failed login makes
no span, so strangers knocking cannot fill the tracing backend; failed
logins are logged and rate limited instead). Inside it run the audit append
of `SessionStarted` (asyncpg's span; the event's metadata gets the
traceparent, so `potluck ops events show session-<id>` names the trace) and
the session on the host's connection. The span ends with the session: bytes
in and out, how it ended, the exit status or signal.

The context crosses to hostd in the session's environment: `link_env()` is
`TRACEPARENT` (and `TRACESTATE`), sent as an SSH `env` request on the
reverse connection next to `POTLUCK_ALLOC` and `POTLUCK_SESSION`. hostd
starts its exec span as a child of it (potluck.hostd.gateway_link) and never
passes it into the container (exec_bridge.exec_env keeps only the locale and
our markers). A user cannot inject one: the gateway forwards only `LANG` and
`LC_*` from the user's own environment.

Attributes: `potluck.alloc_id`, `potluck.session_id`, `potluck.host_id`,
`potluck.gateway`, `potluck.ssh.key_fingerprint`, `network.peer.address` /
`.port`, `potluck.session.kind` / `.pty`; at the end
`potluck.session.end_reason`, `potluck.session.bytes_in` / `.bytes_out`,
`process.exit.code` or `potluck.session.exit_signal`. The command line is
left out on purpose: it may hold secrets, and the audit log already keeps it
where access is controlled.
"""

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from potluck.events.tracing import trace_env_of
from potluck.kernel.version import __version__

__all__ = ["FAILED_REASONS", "SPAN_NAME", "SessionTrace"]

SPAN_NAME = "ssh session"

#: Ends that mean the user did not get what they asked for, for reasons not of their making:
#: the span gets an error status. EXITED (whatever the exit status: `exit 3` is the user's
#: business), CLIENT_DISCONNECTED and ALLOCATION_ENDED (a release or expiry) are not failures.
FAILED_REASONS = frozenset(
    {
        "ALLOCATION_NOT_RUNNING",
        "HOST_NOT_CONNECTED",
        "HOST_DISCONNECTED",
        "UPSTREAM_FAILED",
        "GATEWAY_STOPPING",
        "AUDIT_UNAVAILABLE",
    }
)


def _tracer() -> trace.Tracer:
    return trace.get_tracer("potluck.sshgateway", __version__)


class SessionTrace:
    """The gateway's span of one session; `finish` ends it once, later calls do nothing."""

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.finished = False

    @classmethod
    def start(
        cls,
        *,
        session_id: str,
        alloc_id: str,
        key_fingerprint: str,
        peer_address: str,
        peer_port: int,
        gateway: str,
    ) -> "SessionTrace":
        # A root on purpose (an empty context): nothing the user sends is trusted as a parent.
        span = _tracer().start_span(
            SPAN_NAME,
            context=Context(),
            kind=SpanKind.SERVER,
            attributes={
                "potluck.alloc_id": alloc_id,
                "potluck.session_id": session_id,
                "potluck.gateway": gateway,
                "potluck.ssh.key_fingerprint": key_fingerprint,
                "network.peer.address": peer_address,
                "network.peer.port": peer_port,
            },
        )
        return cls(span)

    @property
    def trace_id(self) -> str | None:
        """The trace id in hex, for log lines; None when tracing is off."""
        context = self.span.get_span_context()
        return format(context.trace_id, "032x") if context.is_valid else None

    def describe(self, *, kind: str, pty: bool, host_id: str | None) -> None:
        """What the session asked for, known once its requests (pty, exec, ...) have arrived."""
        self.span.set_attribute("potluck.session.kind", kind)
        self.span.set_attribute("potluck.session.pty", pty)
        if host_id is not None:
            self.span.set_attribute("potluck.host_id", host_id)

    def link_env(self) -> dict[str, str]:
        """TRACEPARENT / TRACESTATE for the session on the host's connection (empty when off)."""
        return trace_env_of(self.span)

    def finish(
        self,
        reason: str,
        detail: str = "",
        *,
        bytes_in: int,
        bytes_out: int,
        exit_status: int | None = None,
        exit_signal: str | None = None,
    ) -> None:
        if self.finished:
            return
        self.finished = True
        span = self.span
        span.set_attribute("potluck.session.end_reason", reason)
        span.set_attribute("potluck.session.bytes_in", bytes_in)
        span.set_attribute("potluck.session.bytes_out", bytes_out)
        if exit_status is not None:
            span.set_attribute("process.exit.code", exit_status)
        if exit_signal is not None:
            span.set_attribute("potluck.session.exit_signal", exit_signal)
        if reason in FAILED_REASONS:
            span.set_status(Status(StatusCode.ERROR, f"{reason}: {detail}" if detail else reason))
        span.end()
