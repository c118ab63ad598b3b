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

What the user's channel keeps of its `env` requests is bounded as it comes
(`bound_environment`): only variables that could pass (`LANG`, `LC_*`), at
most `MAX_ENV_VARS` of them, each name and value short and without a NUL byte
(no process's environment can hold one: the engine refused the exec, and the
user read that the engine had failed). asyncssh keeps every
`env` request whole for the channel's life, and a client may send any number,
each up to a packet (256 KiB): 2,000 of 50 KB grew the gateway by 300 MB and
hostd by 200 MB, from one session of one user. As OpenSSH's sshd does (its
AcceptEnv, and at most so many variables a session), the rest are refused,
which clients take silently.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import asyncssh
from asyncssh.packet import SSHPacket

from potluck.contracts.session_commands import LOGS, command_name
from potluck.sshgateway.events import SessionKind

__all__ = [
    "MAX_ENV_NAME",
    "MAX_ENV_VALUE",
    "MAX_ENV_VARS",
    "MAX_TERM_TYPE",
    "SUBSYSTEMS",
    "SessionRequest",
    "bound_environment",
    "host_env",
    "passes_to_host",
]

#: The subsystems hosts serve (sftp in every image: potluck.hostd.helper_sftp); any other is
#: refused at the gateway, with its reason.
SUBSYSTEMS = ("sftp",)
#: The longest terminal type taken (terminfo's names are a few dozen characters at most).
MAX_TERM_TYPE = 128
#: Variables a session keeps of those its user sends (the locale has 14 at most: LANG, LC_*).
MAX_ENV_VARS = 32
#: Bytes of a variable's name, and of its value, a session keeps (a locale is a dozen or two).
MAX_ENV_NAME = 64
MAX_ENV_VALUE = 1024


def passes_to_host(name: str) -> bool:
    """Whether a variable of the user's goes to the host: the locale's only."""
    return name == "LANG" or name.startswith("LC_")


def bound_environment(chan: asyncssh.SSHServerChannel[bytes], refused: Callable[[str], None]) -> None:
    """Make `chan` keep only the `env` requests that can reach the host, a bounded number of
    bounded ones (the module docstring says why); `refused` hears of each other one (its name,
    cut short).

    asyncssh answers a channel request with the channel's `_process_<request>_request`
    method, looked up on the channel object, and has no callback for `env`: the channel's own
    handler is wrapped, and runs only for a variable that is kept."""
    keep: Callable[[SSHPacket], bool] = chan._process_env_request
    kept: set[bytes] = set()

    def env_request(packet: SSHPacket) -> bool:
        # Read from a copy: the channel's handler reads the packet itself if it is kept.
        probe = SSHPacket(packet.get_remaining_payload())
        name, value = probe.get_string(), probe.get_string()
        fits = len(name) <= MAX_ENV_NAME and len(value) <= MAX_ENV_VALUE and b"\0" not in name + value
        room = name in kept or len(kept) < MAX_ENV_VARS
        if not (fits and room and passes_to_host(name.decode("utf-8", "replace"))):
            refused(name[:MAX_ENV_NAME].decode("utf-8", "replace"))
            return False
        kept.add(name)
        return keep(packet)

    chan._process_env_request = env_request  # type: ignore[method-assign]


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
    def reads_logs(self) -> bool:
        """A `potluck-logs` session: hostd serves it, and ends it once the container's output is
        all sent. Read as hostd reads it (session_commands), quoting and all."""
        return command_name(self.command) == LOGS

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
    env: dict[str | bytes, str | bytes] = {k: v for k, v in sent.items() if passes_to_host(k)}
    env["POTLUCK_ALLOC"] = alloc_id
    env["POTLUCK_SESSION"] = session_id
    env.update(trace_env)
    return env
