"""The join token `potluck ops hosts enroll` prints and `potluck join` redeems: one line, pure text.

    potluck-join-1.<base64url of JSON {host_id, name, nats_url, join_seed, secret, gateways,
                                        expires_at}>

It carries what a new member's machine needs to become the host: its identity (`host_id`),
where the pool's NATS is, the SSH gateways to dial with their pinned keys, and two secrets
that are good for one thing only. `join_seed` is a throwaway NATS identity whose only
permission is asking to join as this host (JOIN.<host_id>) and reading its answers; `secret`
is what the registry checks (the log keeps only its SHA-256). Nothing in it lets anyone act
as the pool or as another host: the member's own NATS key pair is made on its machine, and
only its public half is sent.

Not signed: the registry decides on the secret's digest, and a token whose other fields were
changed only misleads its holder.
"""

import base64
import binascii
import hashlib
import json
import secrets
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from potluck.kernel.rejections import error_line

__all__ = [
    "PREFIX",
    "GatewayPin",
    "JoinToken",
    "JoinTokenError",
    "decode",
    "encode",
    "new_secret",
    "secret_digest",
]

PREFIX = "potluck-join-1."
#: A token is one line a member pastes; anything much larger is not ours.
MAX_LENGTH = 16_384


class JoinTokenError(ValueError):
    """The text is not a join token, or this one has expired; the message says which."""


class GatewayPin(BaseModel):
    """An SSH gateway hostd dials out to, and the public key it must present."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)  # see Event's

    address: str = Field(min_length=3, max_length=300)
    client_key: str = Field(min_length=16, max_length=2000)


class JoinToken(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)  # see Event's

    host_id: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")
    name: str = Field(min_length=1, max_length=200)
    nats_url: str = Field(min_length=1, max_length=500)
    join_seed: str = Field(min_length=58, max_length=58, pattern=r"^SU[A-Z2-7]+$", repr=False)
    secret: str = Field(min_length=16, max_length=256, repr=False)
    gateways: tuple[GatewayPin, ...] = ()
    expires_at: datetime

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("expires_at must carry its time zone")
        return value.astimezone(UTC)

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def secret_digest(secret: str) -> str:
    """What the log keeps of a token: never the secret itself."""
    return hashlib.sha256(secret.encode()).hexdigest()


def encode(token: JoinToken) -> str:
    body = token.model_dump_json().encode()
    return PREFIX + base64.urlsafe_b64encode(body).decode().rstrip("=")


def decode(text: str, now: datetime | None = None) -> JoinToken:
    """The token in `text` (surrounding blanks ignored); refused when malformed, or expired at `now`."""
    text = text.strip()
    if len(text) > MAX_LENGTH:
        raise JoinTokenError(f"a join token is at most {MAX_LENGTH} characters; this is {len(text)}")
    if not text.startswith(PREFIX):
        raise JoinTokenError(
            f"not a join token: it must start with {PREFIX!r}; copy the whole line "
            "`potluck ops hosts enroll` printed"
        )
    payload = text[len(PREFIX) :]
    try:
        body = base64.b64decode(payload + "=" * (-len(payload) % 4), altchars=b"-_", validate=True)
        raw = json.loads(body)
    except (binascii.Error, ValueError):
        raise JoinTokenError(
            "the join token is damaged (not base64url JSON); copy the whole line again"
        ) from None
    if not isinstance(raw, dict):
        raise JoinTokenError("the join token is damaged (its JSON is not an object)")
    try:
        token = JoinToken.model_validate(raw)
    except ValidationError as exc:
        raise JoinTokenError(f"the join token is damaged: {error_line(exc.errors()[0], '(token)')}") from None
    if token.expired(now or datetime.now(UTC)):
        raise JoinTokenError(
            f"this join token expired at {token.expires_at.isoformat()}; ask the operator for a new one"
        )
    return token
