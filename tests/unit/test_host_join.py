"""The Host aggregate's join decisions (services/registry/host.py `issue_token`, `join`).

States are built by folding the events the registry would hold (`evolve`), so each decision
is checked on a real state: an enrolled host with an unspent token joins once; an unknown
digest, a spent token, an expired token, and a host that left or was revoked are refused,
each with its own code and a message that says what to do.
"""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.contracts.host_events import HostEnrolled, HostJoined, HostJoinTokenIssued, HostLeft, HostRevoked
from potluck.contracts.join_token import secret_digest
from potluck.events import Event
from potluck.kernel.rejections import Rejected
from potluck.readmodels.hosts import HostState, evolve
from potluck.registry import host

H = "h-1"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
EXPIRES = T0 + timedelta(hours=24)
SECRET = "s" * 43
THROWAWAY = "U" + "A" * 55
MEMBER_KEY = "U" + "B" * 55


def fold(*events: Event) -> HostState | None:
    state: HostState | None = None
    for version, event in enumerate(events, start=1):
        state = evolve(state, event, version, T0)
    return state


ENROLLED = HostEnrolled(host_id=H, name="laptop-b", nkey="")
ISSUED = HostJoinTokenIssued(
    host_id=H, token_sha256=secret_digest(SECRET), join_nkey=THROWAWAY, expires_at=EXPIRES
)


def join(state: HostState | None, secret: str = SECRET, now: datetime = T0) -> list[Event]:
    return host.join(state, H, token_sha256=secret_digest(secret), nkey=MEMBER_KEY, now=now)


def test_an_unspent_token_joins_once() -> None:
    """HostJoined with the member's key; folded, the token is spent and a second try is TOKEN_SPENT."""
    state = fold(ENROLLED, ISSUED)
    events = join(state)
    assert events == [HostJoined(host_id=H, nkey=MEMBER_KEY)]
    after = fold(ENROLLED, ISSUED, *events)
    assert after is not None
    assert after.nkey == MEMBER_KEY
    assert not after.join_nkey
    with pytest.raises(Rejected) as refused:
        join(after)
    assert refused.value.code == "TOKEN_SPENT"
    assert "already used or has expired" in refused.value.message


@given(secret=st.text(min_size=16, max_size=64))
def test_another_secret_is_unknown(secret: str) -> None:
    """Any secret but the token's is UNKNOWN_TOKEN, and nothing is recorded."""
    if secret == SECRET:
        return
    with pytest.raises(Rejected) as refused:
        join(fold(ENROLLED, ISSUED), secret)
    assert refused.value.code == "UNKNOWN_TOKEN"


def test_no_such_host_or_no_token_is_unknown() -> None:
    """A host id the log does not have, or a host enrolled without a token, has no token to redeem."""
    for state in (None, fold(ENROLLED)):
        with pytest.raises(Rejected) as refused:
            join(state)
        assert refused.value.code == "UNKNOWN_TOKEN"


@given(late_s=st.integers(min_value=0, max_value=365 * 86400))
def test_an_expired_token_is_refused(late_s: int) -> None:
    """At or after expires_at the token is TOKEN_EXPIRED, naming the time."""
    with pytest.raises(Rejected) as refused:
        join(fold(ENROLLED, ISSUED), now=EXPIRES + timedelta(seconds=late_s))
    assert refused.value.code == "TOKEN_EXPIRED"
    assert EXPIRES.isoformat() in refused.value.message


@pytest.mark.parametrize(
    "gone", [HostLeft(host_id=H, by="member"), HostRevoked(host_id=H, by="operator", reason="stolen")]
)
def test_a_host_that_left_or_was_revoked_cannot_join(gone: Event) -> None:
    """Left or revoked is for good: its token, unspent or not, is HOST_GONE; so is a new token."""
    state = fold(ENROLLED, ISSUED, gone)
    with pytest.raises(Rejected) as refused:
        join(state)
    assert refused.value.code == "HOST_GONE"
    with pytest.raises(Rejected) as again:
        host.issue_token(state, H, token_sha256="0" * 64, join_nkey=THROWAWAY, expires_at=EXPIRES)
    assert again.value.code == "HOST_GONE"


def test_a_token_for_a_joined_host_is_refused() -> None:
    """A host with its own key has joined: no new token for it (enroll the machine anew)."""
    state = fold(ENROLLED, ISSUED, HostJoined(host_id=H, nkey=MEMBER_KEY))
    with pytest.raises(Rejected) as refused:
        host.issue_token(state, H, token_sha256="0" * 64, join_nkey=THROWAWAY, expires_at=EXPIRES)
    assert refused.value.code == "ALREADY_JOINED"
    with pytest.raises(Rejected) as unknown:
        host.issue_token(None, H, token_sha256="0" * 64, join_nkey=THROWAWAY, expires_at=EXPIRES)
    assert unknown.value.code == "NOT_ENROLLED"


def test_a_new_token_replaces_an_unspent_one() -> None:
    """Issuing again (a lost token) makes the old secret unknown and the new one good."""
    new = "n" * 43
    reissued = host.issue_token(
        fold(ENROLLED, ISSUED), H, token_sha256=secret_digest(new), join_nkey=THROWAWAY, expires_at=EXPIRES
    )
    state = fold(ENROLLED, ISSUED, *reissued)
    with pytest.raises(Rejected) as refused:
        join(state)
    assert refused.value.code == "UNKNOWN_TOKEN"
    assert join(state, new) == [HostJoined(host_id=H, nkey=MEMBER_KEY)]
