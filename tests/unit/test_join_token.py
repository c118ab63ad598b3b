"""Join tokens (libs/contracts/join_token.py): one line that round-trips, and every damage refused.

`decode` is what `potluck join` runs first: a token that is not one, is cut short, was
edited into nonsense or has expired by its own `expires_at` is refused with a message that
says what to do, before anything is spent.
"""

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.contracts import join_token
from potluck.contracts.join_token import PREFIX, GatewayPin, JoinToken, JoinTokenError, decode, encode
from potluck.registry.nats_auth import new_user_key

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
SEED = new_user_key().seed

host_ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=64)
names = st.text(min_size=1, max_size=60)
pins = st.builds(
    GatewayPin,
    address=st.from_regex(r"\A[a-z0-9.]{1,30}:[0-9]{1,5}\Z"),
    client_key=st.from_regex(r"\Assh-ed25519 [A-Za-z0-9+/]{16,80}\Z"),
)


def token(**changes: object) -> JoinToken:
    fields: dict[str, object] = {
        "host_id": "h-0123456789ab",
        "name": "laptop-b",
        "nats_url": "nats://pool.example.org:4222",
        "join_seed": SEED,
        "secret": join_token.new_secret(),
        "gateways": (GatewayPin(address="pool.example.org:2223", client_key="ssh-ed25519 AAAAC3NzaC1lZDI1"),),
        "expires_at": NOW + timedelta(hours=24),
    }
    fields.update(changes)
    return JoinToken.model_validate(fields)


@given(
    host_id=host_ids,
    name=names,
    gateways=st.lists(pins, max_size=3),
    lifetime_s=st.integers(min_value=1, max_value=30 * 86400),
)
def test_round_trip(host_id: str, name: str, gateways: list[GatewayPin], lifetime_s: int) -> None:
    """Any token encodes to one line with the prefix and decodes to itself before it expires."""
    original = token(
        host_id=host_id, name=name, gateways=tuple(gateways), expires_at=NOW + timedelta(seconds=lifetime_s)
    )
    text = encode(original)
    assert text.startswith(PREFIX)
    assert "\n" not in text
    assert " " not in text
    assert decode(f"  {text}\n", NOW) == original


@given(lifetime_s=st.integers(min_value=-30 * 86400, max_value=0))
def test_expired_by_its_own_clock(lifetime_s: int) -> None:
    """A token at or past its expires_at is refused, naming when it expired and what to do."""
    text = encode(token(expires_at=NOW + timedelta(seconds=lifetime_s)))
    with pytest.raises(JoinTokenError, match=r"expired at .*ask the operator for a new one"):
        decode(text, NOW)


@given(st.text(max_size=300))
def test_arbitrary_text_is_refused_cleanly(text: str) -> None:
    """Whatever a member pastes, decode either returns a token or raises JoinTokenError: nothing else."""
    try:
        decode(text, NOW)
    except JoinTokenError as exc:
        refused = str(exc)
    else:
        return
    assert refused.strip(), "a refusal says why"


@given(cut=st.integers(min_value=1, max_value=200))
def test_a_cut_token_is_refused(cut: int) -> None:
    """A token cut short (a lost tail when copying) never decodes to a token."""
    text = encode(token())
    with pytest.raises(JoinTokenError):
        decode(text[: max(len(PREFIX), len(text) - cut)], NOW)


@given(position=st.integers(min_value=0, max_value=10_000), char=st.sampled_from("!*@# ~"))
def test_a_character_outside_base64url_is_refused(position: int, char: str) -> None:
    """A body with a character base64url does not have is damaged, whatever its place."""
    text = encode(token())
    body = text[len(PREFIX) :]
    at = position % len(body)
    with pytest.raises(JoinTokenError):
        decode(PREFIX + body[:at] + char + body[at + 1 :], NOW)


def body_of(fields: object) -> str:
    return PREFIX + base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("host_id", "H/1", "host_id"),
        ("join_seed", "SAAAA", "join_seed"),
        ("secret", "short", "secret"),
        ("expires_at", "2026-01-02T00:00:00", "expires_at"),
        ("extra", "x", "extra"),
    ],
)
def test_bad_fields_are_named(field: str, value: str, named: str) -> None:
    """An edited field is refused naming it."""
    fields = json.loads(token().model_dump_json())
    fields[field] = value
    with pytest.raises(JoinTokenError, match=f"damaged: {named}"):
        decode(body_of(fields), NOW)


def test_other_text_is_not_a_token() -> None:
    """Without the prefix (say, a credentials file pasted instead) the message says to copy the line."""
    with pytest.raises(JoinTokenError, match="not a join token"):
        decode('host_id = "h-1"', NOW)
    with pytest.raises(JoinTokenError, match="not an object"):
        decode(body_of([1, 2]), NOW)


def test_the_log_keeps_a_digest_not_the_secret() -> None:
    """The digest is SHA-256 hex, differs per secret and does not contain it."""
    a, b = join_token.new_secret(), join_token.new_secret()
    assert a != b
    assert len(join_token.secret_digest(a)) == 64
    assert join_token.secret_digest(a) != join_token.secret_digest(b)
    assert a not in join_token.secret_digest(a)
