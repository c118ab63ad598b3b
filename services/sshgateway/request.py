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

__all__ = ["SUBSYSTEMS", "SessionRequest", "host_env"]

#: The subsystems hosts serve (sftp in every image: potluck.hostd.helper_sftp); any other is
#: refused at the gateway, with its reason.
SUBSYSTEMS = ("sftp",)


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
