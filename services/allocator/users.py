"""Users of the HTTP API: bearer tokens (stored hashed) and quotas, folded from the log.

Tokens are 32 random bytes, so a plain SHA-256 is enough to store them: there
is nothing to brute-force that a slow password hash would protect.
"""

import hashlib
import re
import secrets
from dataclasses import dataclass, field

from potluck.contracts.allocation_events import Quota, UserAdded, UserTokenRotated
from potluck.events import Event
from potluck.kernel.rejections import Rejected

USER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def new_token() -> str:
    return "pl_" + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    # `surrogateescape`: a token read from a header holds bytes that are not UTF-8 as lone
    # surrogates (aiohttp decodes them so), which a plain encode() refuses with an exception;
    # hashed as the bytes that were sent, such a token is simply nobody's.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class User:
    name: str
    token_sha256: str
    quota: Quota


@dataclass
class UsersView:
    users: dict[str, User] = field(default_factory=dict)
    by_token: dict[str, str] = field(default_factory=dict)

    def apply(self, event: Event) -> None:
        match event:
            case UserAdded():
                self.users[event.user] = User(event.user, event.token_sha256, event.quota)
                self.by_token[event.token_sha256] = event.user
            case UserTokenRotated():
                old = self.users.get(event.user)
                if old is not None:
                    self.by_token.pop(old.token_sha256, None)
                    self.users[event.user] = User(old.name, event.token_sha256, old.quota)
                    self.by_token[event.token_sha256] = event.user

    def authenticate(self, token: str) -> User | None:
        name = self.by_token.get(token_hash(token))
        return self.users.get(name) if name else None


def add_user(existing: User | None, name: str, quota: Quota) -> tuple[list[Event], str]:
    """Decide adding a user; returns the events and the token to show once."""
    if not USER_NAME.match(name):
        raise Rejected(
            "BAD_USER_NAME",
            "a user name is 1-32 of [a-z0-9_-], starting with a letter",
            field="name",
            status=400,
        )
    if existing is not None:
        raise Rejected("USER_EXISTS", f"user {name} exists already; pick another name")
    token = new_token()
    return [UserAdded(user=name, token_sha256=token_hash(token), quota=quota)], token


def rotate_token(existing: User | None, name: str) -> tuple[list[Event], str]:
    """Decide a new token for a user (a leaked one, say); the old one stops working."""
    if existing is None:
        raise Rejected("USER_NOT_FOUND", f"there is no user {name}; `potluck ops users add {name}` adds one")
    token = new_token()
    return [UserTokenRotated(user=name, token_sha256=token_hash(token))], token
