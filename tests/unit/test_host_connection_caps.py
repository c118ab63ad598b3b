"""Bounding how many NATS connections one host's key holds (services/registry/connection_caps.py,
the Host aggregate's `cap_connections`, and what admitted_keys makes of a cap).

nats-server in config-file mode bounds connections per account, and every client shares one:
the registry counts each key's connections on nats-server's monitoring endpoint and shuts a
host past the limit out of the users file for a while. These pin the decisions: who is capped
(a host past the limit; never the services, never a host within it), for how long (a cooldown,
doubled for one that comes back soon, never past the longest), and that a capped key is out of
the users file until the cap ends and back then, whoever renders.
"""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.contracts.host_events import (
    HostConnectionsCapped,
    HostEnrolled,
    HostJoinTokenIssued,
    HostRevoked,
)
from potluck.events import Event
from potluck.kernel.records import changed
from potluck.readmodels.hosts import HostState, HostsView, evolve, host_as_dict
from potluck.registry import host as aggregate
from potluck.registry.admitted_keys import host_keys, joining_keys, next_key_change
from potluck.registry.connection_caps import Cap, CapPolicy, cap_length, caps_due, count_connections

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = CapPolicy(limit=8, cooldown=timedelta(seconds=60), longest=timedelta(hours=1))
SERVICES = "U" + "S" * 55


def key(host_id: str) -> str:
    return "U" + host_id[-1].upper() * 55


def host(host_id: str, *timed: tuple[Event, datetime]) -> HostState:
    state = evolve(None, HostEnrolled(host_id=host_id, name=host_id, nkey=key(host_id)), 1, T0)
    for version, (event, at) in enumerate(timed, start=2):
        state = evolve(state, event, version, at)
    assert state is not None
    return state


def capped(host_id: str, at: datetime, until: datetime, connections: int = 200) -> tuple[Event, datetime]:
    event = HostConnectionsCapped(
        host_id=host_id,
        connections=connections,
        limit=8,
        until=until,
        for_s=(until - at).total_seconds(),
    )
    return event, at


def page(*keys: str | None) -> dict[str, object]:
    conns = [{"cid": i, "authorized_user": k} if k else {"cid": i} for i, k in enumerate(keys)]
    return {"connections": conns}


def test_connections_are_counted_per_key_over_every_page_and_node() -> None:
    """Tried: two pages of one node and one of another, a connection with no key among them.
    Must hold: each key's connections summed over all of them; the keyless one counts for no key."""
    counts = count_connections([page("UA", "UB", None), page("UA"), page("UA", "UB")])
    assert counts == {"UA": 3, "UB": 2}


@given(st.integers(min_value=0, max_value=500))
def test_a_host_is_capped_exactly_when_its_key_holds_more_than_the_limit(held: int) -> None:
    """Tried: a host's key holding any number of connections. Must hold: capped when past the
    limit (for the cooldown, naming how many), left alone at or within it."""
    due = caps_due({key("h-a"): held}, [host("h-a")], [SERVICES], T0, POLICY)
    if held > POLICY.limit:
        assert due == [Cap("h-a", held, T0 + POLICY.cooldown)]
    else:
        assert due == []


def test_the_services_key_is_never_capped() -> None:
    """Tried: the services' key holding thousands of connections, and a host whose key is the
    services' (a log that holds one). Must hold: neither is capped; another host past the limit is."""
    odd = evolve(None, HostEnrolled(host_id="h-s", name="h-s", nkey=SERVICES), 1, T0)
    assert odd is not None
    counts = {SERVICES: 5000, key("h-b"): 9}
    due = caps_due(counts, [odd, host("h-b")], [SERVICES], T0, POLICY)
    assert due == [Cap("h-b", 9, T0 + POLICY.cooldown)]


def test_a_capped_or_gone_host_is_not_decided_again() -> None:
    """Tried: connections still counted for a host whose cap runs (the ones it is closing), and
    for a revoked host. Must hold: no cap for either until the running cap has ended."""
    until = T0 + timedelta(seconds=60)
    running = host("h-a", capped("h-a", T0, until))
    revoked = host("h-r", (HostRevoked(host_id="h-r", by="op", reason=""), T0))
    counts = {key("h-a"): 200, key("h-r"): 200}
    assert caps_due(counts, [running, revoked], [], T0 + timedelta(seconds=2), POLICY) == []
    assert [c.host_id for c in caps_due(counts, [running, revoked], [], until, POLICY)] == ["h-a"]


@given(
    last=st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(hours=3)),
    ended_ago=st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=1)),
)
def test_a_cap_doubles_for_a_host_that_comes_back_soon_and_never_passes_the_longest(
    last: timedelta, ended_ago: timedelta
) -> None:
    """Tried: a host capped before for any length, past the limit again any time after that cap
    ended. Must hold: within the repeat window it is shut out twice as long (at least the
    cooldown, at most the longest); after it, for the cooldown again."""
    now = T0 + last + ended_ago
    state = host("h-a", capped("h-a", T0, T0 + last))
    length = cap_length(state, now, POLICY)
    assert POLICY.cooldown <= length <= POLICY.longest
    if ended_ago <= POLICY.repeat_window:
        assert length == min(POLICY.longest, max(POLICY.cooldown, 2 * last))
    else:
        assert length == POLICY.cooldown


def test_the_aggregate_records_one_cap_and_not_a_second_while_it_runs() -> None:
    """Tried: capping a host, then capping it again while the first cap runs. Must hold: one
    HostConnectionsCapped, with how long it lasts, and nothing for the second."""
    until = T0 + timedelta(seconds=60)
    first = aggregate.cap_connections(host("h-a"), "h-a", 200, 8, until, T0)
    assert first == [HostConnectionsCapped(host_id="h-a", connections=200, limit=8, until=until, for_s=60.0)]
    after = host("h-a", (first[0], T0))
    assert aggregate.cap_connections(after, "h-a", 150, 8, until + timedelta(seconds=5), T0) == []
    assert aggregate.cap_connections(host("h-b"), "h-b", 8, 8, until, T0) == []


def test_a_capped_key_is_out_of_the_users_file_until_the_cap_ends_and_back_then() -> None:
    """Tried: rendering the users file's host keys during a cap and at its end. Must hold: the
    capped host's key is absent meanwhile (another host's stays), present again at the end,
    and the end is when time next changes the keys (the registry renders then)."""
    until = T0 + timedelta(seconds=60)
    view = HostsView(hosts={"h-a": host("h-a", capped("h-a", T0, until)), "h-b": host("h-b")})
    assert host_keys(view, T0 + timedelta(seconds=1)) == [("h-b", key("h-b"))]
    assert next_key_change(view, T0 + timedelta(seconds=1)) == until
    assert host_keys(view, until) == [("h-a", key("h-a")), ("h-b", key("h-b"))]
    assert next_key_change(view, until) is None


def test_a_capped_host_says_why_it_cannot_reach_the_bus() -> None:
    """Tried: the host's row as operators read it after a cap. Must hold: it names the count,
    the limit and the end of the cap."""
    until = T0 + timedelta(seconds=60)
    row = host_as_dict(host("h-a", capped("h-a", T0, until, connections=200)))
    capped_row = row["connections_capped"]
    assert isinstance(capped_row, dict)
    said = (capped_row["connections"], capped_row["limit"], capped_row["until"])
    assert said == (200, 8, until.isoformat())
    assert "200 connections" in str(capped_row["why"])


@pytest.mark.parametrize(
    ("limit", "cooldown", "longest"),
    [(0, 60, 3600), (8, 0, 3600), (8, 120, 60)],
)
def test_a_policy_that_cannot_work_is_refused(limit: int, cooldown: float, longest: float) -> None:
    """Tried: no connection allowed, no cooldown, a cooldown past the longest. Must hold: refused."""
    with pytest.raises(ValueError, match=r"connection|cooldown"):
        CapPolicy(limit=limit, cooldown=timedelta(seconds=cooldown), longest=timedelta(seconds=longest))


def test_a_join_tokens_key_counts_with_the_host_and_leaves_with_it() -> None:
    """Tried: a machine enrolled with a join token (no key of its own yet) whose throwaway key
    holds 9 connections: a token's holder can open connections with it until it is spent.
    Must hold: the host is capped, and the throwaway key is out of the users file until the cap
    ends, back then (the token still unspent)."""
    throwaway = "U" + "J" * 55
    enrolled = evolve(None, HostEnrolled(host_id="h-j", name="h-j", nkey=""), 1, T0)
    issued = HostJoinTokenIssued(
        host_id="h-j", token_sha256="d" * 64, join_nkey=throwaway, expires_at=T0 + timedelta(hours=24)
    )
    state = evolve(enrolled, issued, 2, T0)
    assert state is not None
    [cap] = caps_due({throwaway: 9}, [state], [SERVICES], T0, POLICY)
    [event] = aggregate.cap_connections(state, "h-j", cap.connections, POLICY.limit, cap.until, T0)
    capped_state = evolve(state, event, 3, T0)
    assert capped_state is not None
    view = HostsView(hosts={"h-j": capped_state})
    assert joining_keys(view, T0 + timedelta(seconds=1)) == []
    assert joining_keys(view, cap.until) == [("h-j", throwaway)]


def test_a_capped_host_is_unreachable_at_once_and_its_first_beat_back_recovers_it() -> None:
    """Tried: an online registered host capped. Must hold: it is unreachable from the cap on
    (nothing is placed there: the allocator could otherwise place on it in the second or two
    before its silence is noticed), and a beat after the cap is HostRecovered."""
    registered = host("h-a")
    registered = changed(registered, registered=True, liveness="online")
    after = evolve(registered, capped("h-a", T0, T0 + timedelta(seconds=60))[0], 2, T0)
    assert after is not None
    assert (after.status, after.liveness_since, after.schedulable) == ("unreachable", T0, False)
    assert [type(e).__name__ for e in aggregate.beat_returned(after)] == ["HostRecovered"]


def test_a_beat_while_the_cap_holds_does_not_recover_the_host() -> None:
    """Tried: an online registered host capped for 60 s; a beat 0.06 s into the cap (one on a
    connection the server was closing: seen in a full test run, the host then recovered and an
    allocation was placed on it), then a beat once the cap ended.
    Must hold: the beat during the cap decides nothing (the host stays unreachable and not
    schedulable); the beat after it is HostRecovered."""
    registered = host("h-a")
    registered = changed(registered, registered=True, liveness="online")
    after = evolve(registered, capped("h-a", T0, T0 + timedelta(seconds=60))[0], 2, T0)
    assert after is not None
    assert aggregate.beat_returned(after, T0 + timedelta(seconds=0.06)) == []
    assert [type(e).__name__ for e in aggregate.beat_returned(after, T0 + timedelta(seconds=60))] == [
        "HostRecovered"
    ]
