"""Members' and operators' web tokens, folded from the log: which hosts a token shows. Pure.

Tokens look like users' (`users.new_token`: 32 random bytes), so a plain
SHA-256 is enough to store them. A new token for a host replaces the older one.
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from potluck.contracts.member_events import MemberTokenIssued, OperatorWebTokenIssued
from potluck.events import Event

__all__ = ["Member", "MembersView", "new_member_token"]


def new_member_token() -> str:
    return "pm_" + secrets.token_urlsafe(32)


def _digest(token: str) -> str:
    # As users.token_hash: bytes a client sent that are not UTF-8 hash as sent, never raise.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class Member:
    token_sha256: str
    host_ids: tuple[str, ...]


@dataclass
class MembersView:
    by_token: dict[str, Member] = field(default_factory=dict)
    #: The token digest each host's member signs in with now.
    token_of_host: dict[str, str] = field(default_factory=dict)
    #: The operators' web token's digest (the newest only).
    operator_token: str | None = None

    def apply(self, event: Event) -> None:
        if isinstance(event, OperatorWebTokenIssued):
            self.operator_token = event.token_sha256
            return
        if not isinstance(event, MemberTokenIssued):
            return
        for host_id in event.host_ids:
            old = self.token_of_host.get(host_id)
            if old is not None and old in self.by_token:
                kept = tuple(h for h in self.by_token[old].host_ids if h != host_id)
                if kept:
                    self.by_token[old] = Member(old, kept)
                else:
                    del self.by_token[old]
            self.token_of_host[host_id] = event.token_sha256
        self.by_token[event.token_sha256] = Member(event.token_sha256, tuple(event.host_ids))

    def authenticate(self, token: str) -> Member | None:
        return self.by_token.get(_digest(token))

    def is_operator(self, token: str) -> bool:
        return self.operator_token is not None and hmac.compare_digest(self.operator_token, _digest(token))

    def operator_still(self, digest: str) -> bool:
        """Whether a session signed in with the operator token of this digest may go on."""
        return self.operator_token is not None and hmac.compare_digest(self.operator_token, digest)
