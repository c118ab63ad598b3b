"""Which join tokens' throwaway keys the NATS users file holds (services/registry/enrollment.py
`joining_keys`), from the hosts' states as the log folds them.

A member reads the registry's answer to its join on the token's throwaway identity, and
nats-server closes the connections of a key a reload removes. Every renderer of the file
(this registry, another replica, an operator enrolling a machine, another member's join)
reads the same log, so a spent token's key stays for JOIN_ANSWER_WINDOW after HostJoined
whoever renders; an unspent, unexpired token's key stays until it is spent or expires.
"""

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from potluck.contracts.host_events import HostEnrolled, HostJoined, HostJoinTokenIssued, HostLeft, HostRevoked
from potluck.events import Event
from potluck.readmodels.hosts import HostState, HostsView, evolve
from potluck.registry.enrollment import JOIN_ANSWER_WINDOW, joining_keys

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
