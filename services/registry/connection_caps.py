"""Which hosts' NATS keys hold more connections than a host may, and for how long they are shut out.

Pure: connection counts, the hosts as the log folds them and the log's clock in, decisions out
(connection_watch.py reads the counts from nats-server and records what is decided here).

Why a watch at all: nats-server in config-file mode bounds connections per account, not per
user, and every client here shares one account, so one host's key could open connections up
to the server's `max_connections` (64K by default), some 65 KB of the server's memory each,
and take the bus from the whole pool. A hostd holds one connection; a member's commands
(`potluck host status`, ...) open one each for a moment, and a reconnect after a network blip
may leave the old one on the server until its pings go unanswered (minutes). HOST_CONNECTION_LIMIT
leaves room for all of that at once; a host past it is shut out (its key taken out of the users
file, which closes every connection it holds) for a cooldown, then let back in. One that does
it again soon after is shut out twice as long each time, up to LONGEST_CAP.

The services' key is never capped: it is no host's (a host whose key is the services' is left
out of the users file altogether, nats_auth._admissible), and it is passed in to be sure.
"""

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from potluck.readmodels.hosts import HostState

__all__ = [
    "CAP_COOLDOWN",
    "HOST_CONNECTION_LIMIT",
    "LONGEST_CAP",
    "REPEAT_WINDOW",
    "Cap",
    "CapPolicy",
    "cap_length",
    "caps_due",
    "count_connections",
]

#: Connections one host's key may hold at once: hostd's one, a join's throwaway is another key,
#: a few member commands at once, and old connections a flaky link left behind, with margin.
HOST_CONNECTION_LIMIT = 8

#: How long a host past the limit is first shut out.
CAP_COOLDOWN = timedelta(seconds=60)

#: The longest a host is shut out at once, however often it comes back past the limit.
LONGEST_CAP = timedelta(hours=1)

#: A host past the limit again within this long of its last cap's end is shut out twice as
#: long as that cap was: a script reopening connections after each cap gets ever fewer chances.
REPEAT_WINDOW = timedelta(minutes=10)


@dataclass(frozen=True)
class CapPolicy:
    limit: int = HOST_CONNECTION_LIMIT
    cooldown: timedelta = CAP_COOLDOWN
    longest: timedelta = LONGEST_CAP
    repeat_window: timedelta = REPEAT_WINDOW

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"a host must be allowed at least one connection, not {self.limit}")
        if self.cooldown <= timedelta(0) or self.longest < self.cooldown:
            raise ValueError(
                f"a cap's cooldown must be positive and no longer than the longest cap "
                f"({self.cooldown} and {self.longest})"
            )


@dataclass(frozen=True)
class Cap:
    """Shut `host_id` out until `until`: its key held `connections`."""

    host_id: str
    connections: int
    until: datetime


def count_connections(pages: Iterable[Mapping[str, Any]]) -> Counter[str]:
    """Connections per key over nats-server's `/connz?auth=true` pages (every node's).

    Each connection names the key it authenticated with as `authorized_user`; one with none (a
    connection still authenticating) is no key's yet."""
    counts: Counter[str] = Counter()
    for page in pages:
        for conn in page.get("connections") or ():
            key = conn.get("authorized_user") if isinstance(conn, Mapping) else None
            if isinstance(key, str) and key:
                counts[key] += 1
    return counts


def cap_length(state: HostState, now: datetime, policy: CapPolicy) -> timedelta:
    """How long to shut the host out now: the cooldown, or twice its last cap's length when that
    cap ended within the repeat window, never longer than the longest."""
    if state.capped_at is None or state.capped_until is None:
        return policy.cooldown
    if now - state.capped_until > policy.repeat_window:
        return policy.cooldown
    last = state.capped_until - state.capped_at
    return min(policy.longest, max(policy.cooldown, 2 * last))


def caps_due(
    counts: Mapping[str, int],
    hosts: Iterable[HostState],
    service_keys: Iterable[str],
    now: datetime,
    policy: CapPolicy,
) -> list[Cap]:
    """The hosts to shut out now: those whose keys hold more than the limit's connections
    together (its own key, and its join token's throwaway keys, which a token's holder can
    open connections with as well until the token is spent or expires).

    A host shut out already is not decided again: the connections still counted are the ones
    the cap is closing. A host that left or was revoked has no key in the file to take out."""
    services = set(service_keys)
    due: list[Cap] = []
    for state in hosts:
        if state.gone or state.capped(now):
            continue
        keys = {k for k in (state.nkey, state.join_nkey, state.spent_join_nkey) if k and k not in services}
        held = sum(counts.get(k, 0) for k in keys)
        if held > policy.limit:
            due.append(Cap(state.host_id, held, now + cap_length(state, now, policy)))
    return sorted(due, key=lambda cap: cap.host_id)
