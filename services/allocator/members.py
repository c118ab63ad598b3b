"""Members' web tokens, folded from the log: which hosts a token shows. Pure.

Tokens look like users' (`users.new_token`: 32 random bytes), so a plain
SHA-256 is enough to store them. A new token for a host replaces the older one.
"""

import hashlib
import secrets
from dataclasses import dataclass, field

from potluck.contracts.member_events import MemberTokenIssued
from potluck.events import Event

__all__ = ["Member", "MembersView", "new_member_token"]


def new_member_token() -> str:
    return "pm_" + secrets.token_urlsafe(32)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Member:
    token_sha256: str
    host_ids: tuple[str, ...]


@dataclass
class MembersView:
    by_token: dict[str, Member] = field(default_factory=dict)
    #: The token digest each host's member signs in with now.
    token_of_host: dict[str, str] = field(default_factory=dict)

    def apply(self, event: Event) -> None:
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
