"""Which join tokens' throwaway keys the NATS users file holds (services/registry/enrollment.py
`joining_keys`), from the hosts' states as the log folds them.

A member reads the registry's answer to its join on the token's throwaway identity, and
nats-server closes the connections of a key a reload removes. Every renderer of the file
(this registry, another replica, an operator enrolling a machine, another member's join)
reads the same log, so a spent token's key stays for JOIN_ANSWER_WINDOW after HostJoined
whoever renders; an unspent, unexpired token's key stays until it is spent or expires.
`next_key_change` says when time alone next changes that list: the registry renders then.
"""

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from potluck.contracts.host_events import HostEnrolled, HostJoined, HostJoinTokenIssued, HostLeft, HostRevoked
from potluck.events import Event
from potluck.readmodels.hosts import HostState, HostsView, evolve
from potluck.registry.enrollment import JOIN_ANSWER_WINDOW, joining_keys, next_key_change

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


def test_an_unspent_token_keeps_its_key_until_it_expires() -> None:
    view = view_of((ENROLLED, ISSUED_AT), (ISSUED, ISSUED_AT))
    assert joining_keys(view, JOINED_AT) == [(H, THROWAWAY)]
    assert joining_keys(view, EXPIRES) == []


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=2)))
def test_a_spent_tokens_key_stays_for_the_answer_window_only(after: timedelta) -> None:
    """Tried: any render from the moment HostJoined is in the log until two hours later. Must
    hold: the throwaway key is rendered exactly while within JOIN_ANSWER_WINDOW of HostJoined's
    time in the log, and the member's own key is the host's."""
    view = view_of((ENROLLED, ISSUED_AT), (ISSUED, ISSUED_AT), (JOINED, JOINED_AT))
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
        view = view_of((ENROLLED, ISSUED_AT), (ISSUED, ISSUED_AT), (JOINED, JOINED_AT), (gone, JOINED_AT))
        assert joining_keys(view, JOINED_AT) == []


def test_the_next_change_is_the_window_end_or_the_expiry_whichever_is_ahead() -> None:
    unspent = view_of((ENROLLED, ISSUED_AT), (ISSUED, ISSUED_AT))
    assert next_key_change(unspent, JOINED_AT) == EXPIRES
    assert next_key_change(unspent, EXPIRES) is None
    spent = view_of((ENROLLED, ISSUED_AT), (ISSUED, ISSUED_AT), (JOINED, JOINED_AT))
    assert next_key_change(spent, JOINED_AT) == JOINED_AT + JOIN_ANSWER_WINDOW
    assert next_key_change(spent, JOINED_AT + JOIN_ANSWER_WINDOW) is None
    assert next_key_change(HostsView(), JOINED_AT) is None


MINUTE = timedelta(minutes=1)


@st.composite
def pools(draw: st.DrawFn) -> HostsView:
    """Up to six machines, each enrolled with a token that is spent or not, some of them gone
    since, at times within an hour and a half."""
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
        if draw(st.booleans()):
            timed.append((HostLeft(host_id=host, by="member"), timed[-1][1]))
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
    now = ISSUED_AT + minutes * MINUTE
    keys = joining_keys(view, now)
    change = next_key_change(view, now)
    if change is None:
        assert joining_keys(view, now + timedelta(days=2)) == keys
        return
    assert change > now
    for fraction in fractions:
        assert joining_keys(view, now + (change - now) * fraction * 0.999) == keys
    assert joining_keys(view, change) != keys
