"""Which keys the NATS users file holds (services/registry/admitted_keys.py: the machines' own
keys, `host_keys`, and join tokens' throwaway keys, `joining_keys`), from the hosts' states as the
log folds them.

A member reads the registry's answer to its join on the token's throwaway identity, and
nats-server closes the connections of a key a reload removes. Every renderer of the file
(this registry, another replica, an operator enrolling a machine, another member's join)
reads the same log, so a spent token's key stays for JOIN_ANSWER_WINDOW after HostJoined
whoever renders; an unspent, unexpired token's key stays until it is spent or expires. A
machine's own key stays while it is in the pool, deregistered included, and for LEFT_KEY_WINDOW
after its member made it leave. `next_key_change` says when time alone next changes those lists:
the registry renders then.
"""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.contracts.host_events import (
    Actor,
    HostDeregistered,
    HostEnrolled,
    HostJoined,
    HostJoinTokenIssued,
    HostLeft,
    HostRevoked,
)
from potluck.events import Event
from potluck.readmodels.hosts import HostState, HostsView, evolve
from potluck.registry.admitted_keys import (
    JOIN_ANSWER_WINDOW,
    LEFT_KEY_WINDOW,
    host_keys,
    joining_keys,
    next_key_change,
)

H = "h-1"
ISSUED_AT = datetime(2026, 1, 1, tzinfo=UTC)
JOINED_AT = ISSUED_AT + timedelta(minutes=3)
EXPIRES = ISSUED_AT + timedelta(hours=24)
THROWAWAY = "U" + "A" * 55
MEMBER_KEY = "U" + "B" * 55

ENROLLED = HostEnrolled(host_id=H, name="laptop-b", nkey="")
ISSUED = HostJoinTokenIssued(host_id=H, token_sha256="d" * 64, join_nkey=THROWAWAY, expires_at=EXPIRES)
JOINED = HostJoined(host_id=H, nkey=MEMBER_KEY)


def view_of(*timed: tuple[Event, datetime]) -> HostsView:
    state: HostState | None = None
    for version, (event, at) in enumerate(timed, start=1):
        state = evolve(state, event, version, at)
    view = HostsView()
    if state is not None:
        view.hosts[H] = state
    return view


def joined_then(*timed: tuple[Event, datetime]) -> HostsView:
    """The machine enrolled with a token and joined with it, then `timed`."""
    return view_of((ENROLLED, ISSUED_AT), (ISSUED, ISSUED_AT), (JOINED, JOINED_AT), *timed)


def test_an_unspent_token_keeps_its_key_until_it_expires() -> None:
    view = view_of((ENROLLED, ISSUED_AT), (ISSUED, ISSUED_AT))
    assert joining_keys(view, JOINED_AT) == [(H, THROWAWAY)]
    assert joining_keys(view, EXPIRES) == []


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=2)))
def test_a_spent_tokens_key_stays_for_the_answer_window_only(after: timedelta) -> None:
    """Tried: any render from the moment HostJoined is in the log until two hours later. Must
    hold: the throwaway key is rendered exactly while within JOIN_ANSWER_WINDOW of HostJoined's
    time in the log, and the member's own key is the host's."""
    view = joined_then()
    state = view.hosts[H]
    assert state.nkey == MEMBER_KEY
    assert (state.spent_join_nkey, state.joined_at) == (THROWAWAY, JOINED_AT)
    expected = [(H, THROWAWAY)] if after < JOIN_ANSWER_WINDOW else []
    assert joining_keys(view, JOINED_AT + after) == expected


def test_a_host_that_left_or_was_revoked_right_after_joining_keeps_no_throwaway() -> None:
    for gone in (
        HostLeft(host_id=H, by="member"),
        HostRevoked(host_id=H, by="operator", reason="stolen laptop"),
    ):
        view = joined_then((gone, JOINED_AT))
        assert joining_keys(view, JOINED_AT) == []


def test_the_next_change_is_the_window_end_or_the_expiry_whichever_is_ahead() -> None:
    unspent = view_of((ENROLLED, ISSUED_AT), (ISSUED, ISSUED_AT))
    assert next_key_change(unspent, JOINED_AT) == EXPIRES
    assert next_key_change(unspent, EXPIRES) is None
    spent = joined_then()
    assert next_key_change(spent, JOINED_AT) == JOINED_AT + JOIN_ANSWER_WINDOW
    assert next_key_change(spent, JOINED_AT + JOIN_ANSWER_WINDOW) is None
    assert next_key_change(HostsView(), JOINED_AT) is None


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=3)))
def test_a_machine_its_member_took_out_keeps_its_key_for_the_left_window_only(after: timedelta) -> None:
    """Tried: any render from the moment the member's HostLeft is in the log until three hours
    later. Must hold: the machine's own key is rendered exactly while within LEFT_KEY_WINDOW of
    HostLeft's time in the log (its tools hear HOST_LEFT meanwhile), and that end is the next
    change."""
    left_at = JOINED_AT + timedelta(days=3)
    view = joined_then((HostLeft(host_id=H, by="member"), left_at))
    assert view.hosts[H].left_at == left_at
    expected = [(H, MEMBER_KEY)] if after < LEFT_KEY_WINDOW else []
    assert host_keys(view, left_at + after) == expected
    assert joining_keys(view, left_at + after) == []
    ahead = left_at + LEFT_KEY_WINDOW if after < LEFT_KEY_WINDOW else None
    assert next_key_change(view, left_at + after) == ahead


def test_a_machine_revoked_or_made_leave_by_an_operator_has_no_key_at_once() -> None:
    for gone in (
        HostLeft(host_id=H, by="operator"),
        HostRevoked(host_id=H, by="operator", reason="stolen laptop"),
    ):
        view = joined_then((gone, JOINED_AT))
        assert host_keys(view, JOINED_AT) == [], gone
        assert next_key_change(view, JOINED_AT + JOIN_ANSWER_WINDOW) is None, gone


@pytest.mark.parametrize("by", ["member", "operator"])
def test_a_deregistered_machine_keeps_its_key_for_good(by: Actor) -> None:
    """Registering again lifts a deregistration (the Host aggregate), which needs the key: a
    render after it, by anyone at any time, keeps the machine's key."""
    deregistered = HostDeregistered(host_id=H, by=by)
    view = joined_then((deregistered, JOINED_AT))
    assert view.hosts[H].admin == "deregistered"
    assert host_keys(view, JOINED_AT + timedelta(days=30)) == [(H, MEMBER_KEY)]
    assert next_key_change(view, JOINED_AT + JOIN_ANSWER_WINDOW) is None


MINUTE = timedelta(minutes=1)


@st.composite
def pools(draw: st.DrawFn) -> HostsView:
    """Up to six machines, each enrolled with a token that is spent or not, some of them
    deregistered, left (by their member or an operator) or revoked since, at times within an hour
    and a half."""
    view = HostsView()
    for i in range(draw(st.integers(0, 6))):
        host = f"h-{i}"
        offset = draw(st.integers(0, 60))
        at = ISSUED_AT + offset * MINUTE
        expires = at + draw(st.integers(1, 60)) * MINUTE
        timed: list[tuple[Event, datetime]] = [
            (HostEnrolled(host_id=host, name=host, nkey=""), at),
            (
                HostJoinTokenIssued(
                    host_id=host, token_sha256="d" * 64, join_nkey=f"U{i:055d}", expires_at=expires
                ),
                at,
            ),
        ]
        if draw(st.booleans()):
            timed.append(
                (HostJoined(host_id=host, nkey=f"V{i:055d}"), at + draw(st.integers(0, 30)) * MINUTE)
            )
        after: Event | None = draw(
            st.sampled_from(
                [
                    None,
                    HostLeft(host_id=host, by="member"),
                    HostLeft(host_id=host, by="operator"),
                    HostRevoked(host_id=host, by="operator", reason="stolen"),
                    HostDeregistered(host_id=host, by="member"),
                ]
            )
        )
        if after is not None:
            timed.append((after, timed[-1][1] + draw(st.integers(0, 30)) * MINUTE))
        state: HostState | None = None
        for version, (event, when) in enumerate(timed, start=1):
            state = evolve(state, event, version, when)
        assert state is not None
        view.hosts[host] = state
    return view


@given(pools(), st.integers(0, 150), st.lists(st.floats(0, 1), max_size=8))
def test_the_keys_stay_as_they_are_until_the_next_change(
    view: HostsView, minutes: int, fractions: list[float]
) -> None:
    """Tried: any pool of tokens issued, spent and gone, looked at any moment. Must hold: the
    rendered keys are the same at every moment before `next_key_change` and differ at it; with no
    next change, they never change again (two days on)."""

    def keys(at: datetime) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        return host_keys(view, at), joining_keys(view, at)

    now = ISSUED_AT + minutes * MINUTE
    rendered = keys(now)
    change = next_key_change(view, now)
    if change is None:
        assert keys(now + timedelta(days=2)) == rendered
        return
    assert change > now
    for fraction in fractions:
        assert keys(now + (change - now) * fraction * 0.999) == rendered
    assert keys(change) != rendered
