"""Where a gateway session is in its life, and which steps may move it on: pure, no I/O.

A session (sessions.py) goes through these states:

    NEW ──start──> RECORDING ──recorded──> CONNECTING ──connected──> OPEN
                      │                        │                       │
                     end                      end                     end
                      v                        v                       │
                   ENDING ──recorded───────> ENDED <───────────────────┘

    and UNRECORDED: from NEW on end, from RECORDING or ENDING on not_recorded.

- NEW: the user's channel is open; its requests (pty, env, exec...) arrive.
- RECORDING: `SessionStarted` is being appended; nothing reaches the container
  before it is in the log, and the user's input is held.
- CONNECTING: recorded; waiting for one of the host's links and opening the
  session on it; input is still held.
- OPEN: bridged to the host's session, both ways.
- ENDING: the session ended (the user left) while `SessionStarted` was still
  being appended; `SessionEnded` must wait until it is in.
- ENDED: over, and both events are (or are being) written. `SessionEnded` is
  queued exactly when a session enters ENDED, so no session gets it twice and
  none that got `SessionStarted` misses it.
- UNRECORDED: over, and the log holds nothing of it: the log refused
  `SessionStarted` (the session was refused), or the user left before asking
  for anything.

The first end wins: once a session has ended (`ended`), later ends (the host
dropping after the user left, a release racing an exit) change nothing, and
the session does not ask. Any other step not in the table is a bug, and
`advance` raises `IllegalTransition`.

Whether the user is still there is not a state: a user who leaves ends the
session (`CLIENT_DISCONNECTED`), so "gone" is one way of being ended.
"""

from collections.abc import Mapping
from enum import Enum

__all__ = ["TRANSITIONS", "IllegalTransition", "SessionState", "Step", "advance"]


class SessionState(Enum):
    NEW = "new"
    RECORDING = "recording"
    CONNECTING = "connecting"
    OPEN = "open"
    ENDING = "ending"
    ENDED = "ended"
    UNRECORDED = "unrecorded"

    @property
    def ended(self) -> bool:
        """The session is over: nothing more reaches the container, later ends are ignored."""
        return self in _OVER

    @property
    def terminal(self) -> bool:
        """No step leads anywhere from here."""
        return self in (SessionState.ENDED, SessionState.UNRECORDED)


class Step(Enum):
    START = "start"  # the user's requests are in (asyncssh's session_started)
    RECORDED = "recorded"  # SessionStarted is in the log
    NOT_RECORDED = "not_recorded"  # the log could not take SessionStarted
    CONNECTED = "connected"  # the session on the host's link is open
    END = "end"  # the session ends, for whatever reason (the first end only)


_OVER = frozenset({SessionState.ENDING, SessionState.ENDED, SessionState.UNRECORDED})

_S, _T = SessionState, Step

#: Every allowed step: (from, step) -> to. Anything else is refused.
TRANSITIONS: Mapping[tuple[SessionState, Step], SessionState] = {
    (_S.NEW, _T.START): _S.RECORDING,
    (_S.NEW, _T.END): _S.UNRECORDED,
    (_S.RECORDING, _T.RECORDED): _S.CONNECTING,
    (_S.RECORDING, _T.NOT_RECORDED): _S.UNRECORDED,
    (_S.RECORDING, _T.END): _S.ENDING,
    (_S.ENDING, _T.RECORDED): _S.ENDED,
    (_S.ENDING, _T.NOT_RECORDED): _S.UNRECORDED,
    (_S.CONNECTING, _T.CONNECTED): _S.OPEN,
    (_S.CONNECTING, _T.END): _S.ENDED,
    (_S.OPEN, _T.END): _S.ENDED,
}


class IllegalTransition(Exception):
    """A step the session's state does not allow: a bug in the session, never the user's doing."""

    def __init__(self, state: SessionState, step: Step) -> None:
        super().__init__(f"a session cannot take step {step.value!r} when {state.value!r}")
        self.state = state
        self.step = step


def advance(state: SessionState, step: Step) -> SessionState:
    """The state `step` leads to from `state`; IllegalTransition if it is not allowed."""
    try:
        return TRANSITIONS[(state, step)]
    except KeyError:
        raise IllegalTransition(state, step) from None
