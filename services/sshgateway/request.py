"""What a user asked for on a session channel, and the environment the host gets with it.

asyncssh hands the session a terminal request (`pty_requested`) and then
one of a shell, a command or a subsystem (only sftp); `SessionRequest` keeps
them. The audit records them in `SessionStarted` (audit.py), and the host is
asked for the same (links.open_host_session), with the terminal as it is
when the host's session opens, so a resize that comes before is not lost.

The environment sent to the host (`host_env`) is the gateway's, not the
user's: of the user's own variables only the locale passes (`LANG`,
`LC_*`), so a user can set neither `POTLUCK_ALLOC` (which allocation hostd
runs the session in: hostd checks it against the container's labels) nor
`TRACEPARENT` (session_trace.py: the host's span continues the gateway's
trace, never one the user chose).
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from potluck.sshgateway.events import SessionKind

__all__ = ["MAX_TERM_TYPE", "SUBSYSTEMS", "SessionRequest", "host_env"]

#: The subsystems hosts serve (sftp in every image: potluck.hostd.helper_sftp); any other is
#: refused at the gateway, with its reason.
SUBSYSTEMS = ("sftp",)
#: The longest terminal type taken (terminfo's names are a few dozen characters at most).
MAX_TERM_TYPE = 128


@dataclass
class SessionRequest:
    kind: SessionKind = "shell"
    command: str | None = None
    subsystem: str | None = None
    #: None: no terminal was asked for.
    term_type: str | None = None
    term_size: tuple[int, int, int, int] = (0, 0, 0, 0)
    term_modes: dict[int, int] = field(default_factory=dict)

    @property
    def pty(self) -> bool:
        return self.term_type is not None

    def refusal(self) -> str | None:
        """Why the gateway does not serve this request, or None.

        What the user sends is recorded in the audit (SessionStarted) and reaches the
        container's environment, so it must be something a client means: a served
        subsystem; a terminal type of visible ASCII, bounded (its whole length went to the
        log: a 200 KB one was 200 KB of log per session); a command without a NUL byte
        (neither the log, whose JSON cannot hold one, nor a process's arguments can)."""
        if self.kind == "subsystem" and self.subsystem not in SUBSYSTEMS:
            return (
                f"the gateway serves only the {', '.join(SUBSYSTEMS)} subsystem, not "
                f"{(self.subsystem or '')[:64]!r}; run commands with `ssh ... -- COMMAND`"
            )
        term = self.term_type
        if term is not None and (len(term) > MAX_TERM_TYPE or not all("!" <= c <= "~" for c in term)):
            return (
                f"the terminal type {term[:64]!r}{'...' if len(term) > 64 else ''} is not one: at most "
                f"{MAX_TERM_TYPE} visible ASCII characters (set TERM to your terminal's, e.g. xterm-256color)"
            )
        if self.command is not None and "\0" in self.command:
            return "the command has a NUL byte, which no command line can hold"
        return None

    @property
    def command_line(self) -> str | None:
        """What the audit records as the command: the command, or the subsystem's name."""
        return self.command if self.command is not None else self.subsystem


def host_env(
    sent: Mapping[str, str], *, alloc_id: str, session_id: str, trace_env: Mapping[str, str]
) -> dict[str | bytes, str | bytes]:
    """The variables for the host's session: the user's locale (`sent`), our markers, the trace."""
    env: dict[str | bytes, str | bytes] = {
        k: v for k, v in sent.items() if k == "LANG" or k.startswith("LC_")
    }
    env["POTLUCK_ALLOC"] = alloc_id
    env["POTLUCK_SESSION"] = session_id
    env.update(trace_env)
    return env
