"""The web pages' sessions (services/allocator/web/sessions.py) without a server: which session a
sign-in ends, and when it is refused instead.

What must hold: a sign-in past an owner's cap ends that owner's own oldest session and nobody
else's; members (by token) and operators are owners of their own; a full table first drops what
has expired, then refuses (SessionsFull) rather than ending another owner's session.
"""

import pytest

from potluck.allocator.web.sessions import Sessions, SessionsFull


def test_past_its_cap_an_owner_loses_its_own_oldest_session_only() -> None:
    sessions = Sessions(max_sessions=100, per_owner=3)
    alice, _ = sessions.open("alice", token="a")
    bobs = [sessions.open("bob", token="b")[0] for _ in range(5)]
    assert sessions.get(alice) is not None
    assert [sessions.get(s) is not None for s in bobs] == [False, False, True, True, True]
    assert sessions.count_of("user:bob") == 3
    assert len(sessions) == 4


def test_members_by_token_and_operators_are_owners_of_their_own() -> None:
    sessions = Sessions(max_sessions=100, per_owner=1)
    one, _ = sessions.open("member", member="digest-1")
    two, _ = sessions.open("member", member="digest-2")
    operator, _ = sessions.open("(operator)", operator="digest-op")
    user, _ = sessions.open("member", token="t")  # a user who happens to be called "member"
    assert all(sessions.get(s) is not None for s in (one, two, operator, user))
    again, _ = sessions.open("member", member="digest-1")
    assert sessions.get(one) is None
    assert all(sessions.get(s) is not None for s in (again, two, operator, user))


def test_a_full_table_refuses_a_new_owner_and_ends_nobody_elses_session() -> None:
    sessions = Sessions(max_sessions=2, per_owner=5)
    alice, _ = sessions.open("alice")
    bob, _ = sessions.open("bob")
    with pytest.raises(SessionsFull):
        sessions.open("carol")
    assert sessions.get(alice) is not None
    assert sessions.get(bob) is not None
    assert sessions.count_of("user:carol") == 0


def test_a_full_table_still_lets_an_owner_at_its_cap_replace_its_oldest() -> None:
    sessions = Sessions(max_sessions=2, per_owner=1)
    alice, _ = sessions.open("alice")
    bob, _ = sessions.open("bob")
    again, _ = sessions.open("alice")
    assert sessions.get(alice) is None
    assert sessions.get(again) is not None
    assert sessions.get(bob) is not None


def test_expired_sessions_make_room_before_a_sign_in_is_refused() -> None:
    sessions = Sessions(max_sessions=2, per_owner=5, lifetime_s=-1.0)  # expired as soon as made
    sessions.open("alice")
    sessions.open("bob")
    sessions.lifetime_s = 3600.0
    carol, _ = sessions.open("carol")
    assert sessions.get(carol) is not None
    assert len(sessions) == 1
