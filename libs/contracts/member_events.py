"""Facts about members' web tokens (streams `member-<host_id>`).

A member signs in to the web page with a token tied to the hosts they donate;
`potluck ops hosts enroll` prints it beside the host's credentials. The log
keeps only the token's SHA-256, as for users' tokens.
"""

from pydantic import Field

from potluck.events import Event, event_type

__all__ = ["MemberTokenIssued", "member_stream"]


@event_type
class MemberTokenIssued(Event):
    """An operator gave the member of `host_ids` a web token; its hash only. A later one for
    the same host replaces the earlier token."""

    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    host_ids: list[str] = Field(min_length=1, max_length=64)


def member_stream(host_id: str) -> str:
    return f"member-{host_id}"
