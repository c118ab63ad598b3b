"""Session audit: who reached which allocation, from where, when, how much, how it ended.

One stream per session, `session-<session_id>`: `SessionStarted` is appended
before any byte reaches the container (if the log cannot take it, the session
is refused: no unrecorded sessions), `SessionEnded` when the session is over,
with the byte counts and the exit status. A session refused after
authentication (allocation not running, host not connected) gets both events,
with the reason in `SessionEnded.reason`. Failed authentications are not
events (they would let strangers fill the log); they are logged and rate
limited (ratelimit.py).

`reason` codes are stable UPPER_SNAKE strings:

    EXITED                  the command or shell ended; exit_status or exit_signal says how
    CLIENT_DISCONNECTED     the user's side closed before the command ended (it was ended)
    HOST_DISCONNECTED       the connection to the host dropped (laptop asleep, offline, hostd stopped)
    HOST_NOT_CONNECTED      no connection from the host reached this gateway in time
    ALLOCATION_NOT_RUNNING  the allocation was not running when the session opened
    ALLOCATION_ENDED        the allocation stopped running (released, expired, lost) during the session
    UPSTREAM_FAILED         the host refused or failed to start the session (detail says why)
    GATEWAY_STOPPING        the gateway shut down
    GATEWAY_LOST            the gateway carrying it stopped without ending it (killed, its machine
                            died, or cut off from the bus): another gateway recorded the end
                            (gateway_sweep.py), with no byte counts (only the lost one knew them)

`SessionStarted.gateway_run` names the gateway process that carries the
session (a new id each start; `gateway` is its configured name, which replicas
on one machine share). It is how a session whose gateway is gone is told from
one whose gateway is alive; sessions recorded before it existed have none and
are never declared lost.
"""

from datetime import datetime
from typing import Literal

from pydantic import Field

from potluck.events import Event, event_type

SessionKind = Literal["shell", "exec", "subsystem"]
EndReason = Literal[
    "EXITED",
    "CLIENT_DISCONNECTED",
    "HOST_DISCONNECTED",
    "HOST_NOT_CONNECTED",
    "ALLOCATION_NOT_RUNNING",
    "ALLOCATION_ENDED",
    "UPSTREAM_FAILED",
    "GATEWAY_STOPPING",
    "GATEWAY_LOST",
]

#: Commands are recorded up to this many characters.
MAX_COMMAND = 512


class SessionEvent(Event):
    session_id: str
    alloc_id: str


@event_type
class SessionStarted(SessionEvent):
    """A user authenticated with a key registered on the allocation and opened a session."""

    user: str
    host_id: str | None
    key_fingerprint: str
    source_address: str
    source_port: int
    gateway: str
    #: The gateway process's run id; None before runs were recorded, or for a gateway without a bus.
    gateway_run: str | None = None
    kind: SessionKind
    #: The command (or subsystem) as asked, its first MAX_COMMAND characters.
    command: str | None = Field(default=None, max_length=MAX_COMMAND)
    #: The whole command's length in characters and SHA-256 (hex of its UTF-8), so that a
    #: command padded past MAX_COMMAND cannot hide what follows: the record says it was cut
    #: and pins what ran. None for a session without a command, and before these were recorded.
    command_length: int | None = Field(default=None, ge=0)
    command_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    pty: bool = False
    term_type: str | None = None
    started_at: datetime


@event_type
class SessionEnded(SessionEvent):
    reason: EndReason
    detail: str = ""
    exit_status: int | None = None
    exit_signal: str | None = None
    bytes_in: int = Field(default=0, ge=0)
    bytes_out: int = Field(default=0, ge=0)
    started_at: datetime
    ended_at: datetime


def session_stream(session_id: str) -> str:
    return f"session-{session_id}"
