"""How many sessions one connection and one user, and how many connections one user, may have
open at once on the gateway.

Each session a user opens holds a channel here and makes its host take (and
then re-dial) a connection; without a cap one user could exhaust the
gateway's and the host's file descriptors. A session holds its places from
`take` until `give_back` (its channel closed). The user is the allocation's
owner (who placed it), so several connections, or several allocations of
theirs, share one cap.

Sessions opened are also rated per user (`SessionCaps.rates`): each session
is two events in the log (SessionStarted, SessionEnded), and a cap on the
sessions open at once bounds nothing over time. One user opening sessions in a
loop on a few connections (to an allocation already released, whose sessions
end at once) wrote 94 events a second, 300 MB of log an hour, which every
service reads again at each start; a faster database would have taken more.
Past `burst` sessions, a user opens `per_s` a second; one more is refused
before anything is recorded, saying so.

Connections are capped per user too (`UserConnections`): an authenticated
connection with no session costs the gateway a socket and its buffers for as
long as the client keeps it alive, and the per-address throttle (admission.py)
only slows the opening of new ones (2 a second from one address, any number
from many). Without the cap one user held 400 idle connections from a few
addresses in seconds, and in time would run the gateway out of descriptors
for everyone. A connection holds its place from authentication until it
closes.
"""

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from potluck.kernel.key_rates import KeyRates

__all__ = ["SessionCaps", "SessionPlace", "UserConnections"]


@dataclass
class SessionPlace:
    """One session's places; give it back once."""

    caps: "SessionCaps"
    connection: object
    user: str
    returned: bool = False

    def give_back(self) -> None:
        if not self.returned:
            self.returned = True
            self.caps._release(self)


@dataclass
class SessionCaps:
    per_connection: int
    per_user: int
    #: Sessions each user may open over time (None: no bound); see the module docstring.
    rates: KeyRates | None = None
    clock: Callable[[], float] = time.monotonic
    _by_connection: Counter[object] = field(default_factory=Counter)
    _by_user: Counter[str] = field(default_factory=Counter)

    def take(self, connection: object, user: str) -> SessionPlace | str:
        """A place for one more session of `user` on `connection`, or why there is none."""
        if self._by_connection[connection] >= self.per_connection:
            return (
                f"this connection has {self.per_connection} sessions open, the most allowed; "
                "close one or open another connection"
            )
        if self._by_user[user] >= self.per_user:
            return f"you have {self.per_user} sessions open, the most allowed; close one and try again"
        if self.rates is not None and not self.rates.check(user, self.clock()).allowed:
            return (
                f"you open sessions faster than {self.rates.policy.per_s:g} a second; "
                "wait a moment (or run several commands in one session)"
            )
        self._by_connection[connection] += 1
        self._by_user[user] += 1
        return SessionPlace(self, connection, user)

    def open_sessions(self, *, connection: object | None = None, user: str | None = None) -> int:
        if connection is not None:
            return self._by_connection[connection]
        if user is not None:
            return self._by_user[user]
        return self._by_connection.total()

    def _release(self, place: SessionPlace) -> None:
        _decrement(self._by_connection, place.connection)
        _decrement(self._by_user, place.user)


def _decrement(counter: "Counter[Any]", key: object) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


@dataclass
class UserConnections:
    """Authenticated connections open at once per user (the allocation's owner)."""

    per_user: int
    _user_of: dict[object, str] = field(default_factory=dict)
    _by_user: Counter[str] = field(default_factory=Counter)

    def take(self, connection: object, user: str) -> str | None:
        """None if `connection` may stay (give it back with `give_back`); else why not."""
        if self._by_user[user] >= self.per_user:
            return (
                f"you have {self.per_user} connections open to the gateway, the most allowed; "
                "close some (or share one: ssh's ControlMaster) and try again"
            )
        self._user_of[connection] = user
        self._by_user[user] += 1
        return None

    def give_back(self, connection: object) -> None:
        user = self._user_of.pop(connection, None)
        if user is not None:
            _decrement(self._by_user, user)

    def open_connections(self, user: str) -> int:
        return self._by_user[user]
