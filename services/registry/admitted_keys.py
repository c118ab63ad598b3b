"""Which keys the NATS users file admits at a given moment, from the hosts as the log folds them.

Pure: no I/O, and no clock of its own (every renderer passes the log's). Every renderer of the
file (the registry, another replica, an operator's command, a member's join) reads the same log,
so they all write the same keys at the same moment, and a key whose time there is limited leaves
at the end of that time whoever renders then. `next_key_change` says when time alone next
changes the keys: the registry renders at that moment (users_file.py).

A machine's own key is admitted while it is in the pool, deregistered included: its member
takes it back by starting hostd again, which registers anew. A machine its member took out of
the pool for good (`potluck host leave`) keeps its key for LEFT_KEY_WINDOW, so that its member's
tools and a restarted hostd hear HOST_LEFT from the registry, not a refused connection. One an
operator revoked, or made leave, has none. One whose key held more connections than a host may
(HostConnectionsCapped, connection_caps.py) is out of the file until its cap's end, its join
token's keys with it, and back then, whoever renders meanwhile.
"""

from collections.abc import Iterator
from datetime import datetime, timedelta

from potluck.readmodels.hosts import HostsView

__all__ = [
    "JOIN_ANSWER_WINDOW",
    "LEFT_KEY_WINDOW",
    "host_keys",
    "joining_keys",
    "next_key_change",
]

#: How long a spent join token's throwaway key stays in the NATS users file after HostJoined.
#: The member reads the registry's answer on that identity, and nats-server closes the
#: connections of a key a reload removes: any render in between (another member's join, an
#: operator's enrollment, another registry replica) would otherwise lose the answer, and the
#: member the key the registry just admitted. The key can only ask to join again meanwhile,
#: which the spent token refuses.
JOIN_ANSWER_WINDOW = timedelta(seconds=10)

#: How long a machine whose member left keeps its own key in the users file after HostLeft.
#: Meanwhile the registry answers everything it asks with HOST_LEFT (its member reads "left the
#: pool", `host status` says `left`); past it, nats-server refuses the key, so a machine that
#: left does not stay admitted to the bus until some unrelated render happens to drop it.
LEFT_KEY_WINDOW = timedelta(hours=1)

#: A key the users file may hold: the host it belongs to, the key, and when its time there ends
#: (None: never).
TimedKey = tuple[str, str, datetime | None]


def timed_host_keys(view: HostsView) -> Iterator[TimedKey]:
    """Each machine's own key: for good while it is in the pool, for LEFT_KEY_WINDOW after its
    member made it leave; none once revoked or made to leave by an operator."""
    for h in view.hosts.values():
        if not h.nkey:
            continue
        if not h.gone:
            yield h.host_id, h.nkey, None
        elif h.admin == "left" and h.left_by != "operator" and h.left_at is not None:
            yield h.host_id, h.nkey, h.left_at + LEFT_KEY_WINDOW


def timed_join_keys(view: HostsView) -> Iterator[TimedKey]:
    """Each join token's throwaway key: an unspent token's until it expires, a spent one's for
    JOIN_ANSWER_WINDOW after HostJoined. A host that left or was revoked holds none."""
    for h in view.hosts.values():
        if h.gone:
            continue
        if h.join_nkey:
            yield h.host_id, h.join_nkey, h.join_expires_at
        if h.spent_join_nkey and h.joined_at is not None:
            yield h.host_id, h.spent_join_nkey, h.joined_at + JOIN_ANSWER_WINDOW


def _in_time(keys: Iterator[TimedKey], now: datetime) -> list[tuple[str, str]]:
    return sorted((host_id, key) for host_id, key, ends in keys if ends is None or now < ends)


def host_keys(view: HostsView, now: datetime) -> list[tuple[str, str]]:
    """The machines' own keys the users file admits at `now`, with their hosts' permissions;
    none of a host whose connections are capped at `now`."""
    capped = {h.host_id for h in view.hosts.values() if h.capped(now)}
    return [(host_id, key) for host_id, key in _in_time(timed_host_keys(view), now) if host_id not in capped]


def joining_keys(view: HostsView, now: datetime) -> list[tuple[str, str]]:
    """The throwaway join keys the users file admits at `now`, allowed only to ask to join;
    none of a host whose connections are capped at `now`."""
    capped = {h.host_id for h in view.hosts.values() if h.capped(now)}
    return [(host_id, key) for host_id, key in _in_time(timed_join_keys(view), now) if host_id not in capped]


def next_key_change(view: HostsView, now: datetime) -> datetime | None:
    """When `host_keys` or `joining_keys` next change for a moment after `now`, as far as time
    alone changes them: the earliest end still ahead. None when no key is there for a time.

    Time removes keys from the users file (and brings a capped host's back), but only a render
    writes that down: the registry renders again at each of these moments, so no key outstays
    its time (a spent token's throwaway its window, an expired token's key its expiry, a machine
    that left its window) until some later join or enrollment, nor stays out past its cap."""
    ends = [end for *_, end in (*timed_host_keys(view), *timed_join_keys(view))]
    ends += [h.capped_until for h in view.hosts.values() if not h.gone]  # a capped key comes back
    return min((end for end in ends if end is not None and now < end), default=None)
