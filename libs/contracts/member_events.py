"""Facts about members' and operators' web tokens (streams `member-<host_id>`, `member-operators`).

A member signs in to the web page with a token tied to the hosts they donate;
`potluck ops hosts enroll` prints it beside the host's credentials. The log
keeps only the token's SHA-256, as for users' tokens.
"""

from pydantic import Field

from potluck.events import Event, event_type

__all__ = ["OPERATORS_STREAM", "MemberTokenIssued", "OperatorWebTokenIssued", "member_stream"]

#: Where operators' web tokens are recorded (host ids are `h-...`, so no host's stream).
OPERATORS_STREAM = "member-operators"


@event_type
class MemberTokenIssued(Event):
    """An operator gave the member of `host_ids` a web token; its hash only. A later one for
    the same host replaces the earlier token."""

    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    host_ids: list[str] = Field(min_length=1, max_length=64)


def member_stream(host_id: str) -> str:
    return f"member-{host_id}"


@event_type
class OperatorWebTokenIssued(Event):
    """An operator's web token (its hash): the page shows every user's allocations to it.
    A later one replaces the earlier token."""

    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
