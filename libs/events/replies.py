"""Answering a request on the bus only into the requester's own reply inbox.

A requester names its reply subject, and a service answers with an identity
NATS lets publish anywhere: answering wherever a host's request says would let
the host make the service publish into another host's subjects or call the
JetStream API (`$JS.API...`). So a service answers, and acts on, a request
only when its reply subject is under the inbox of the identity NATS authorised
to send it (a host's `_INBOX_<host_id>`, the services' `_INBOX`); any other is
refused, logged and counted per requester, and nothing is published.
"""

from collections import Counter

import structlog
from nats.aio.msg import Msg

__all__ = ["MAX_REPLY_LENGTH", "ReplyGuard", "reply_within"]

log = structlog.get_logger(__name__)

#: Longer reply subjects are refused outright: no inbox nats-py makes comes near it.
MAX_REPLY_LENGTH = 256


def reply_within(reply: str, inbox: str) -> bool:
    """Is `reply` a literal subject under `inbox` (the requester's own reply inboxes)?

    Wildcards, empty tokens and whitespace are refused too: no inbox is made of them.
    """
    if not reply.startswith(inbox + ".") or len(reply) > MAX_REPLY_LENGTH:
        return False
    tokens = reply[len(inbox) + 1 :].split(".")
    return all(t and "*" not in t and ">" not in t and not any(c.isspace() for c in t) for t in tokens)


class ReplyGuard:
    """One service's check of reply subjects, and its count of refused requests per requester."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.refused: Counter[str] = Counter()

    def allows(self, msg: Msg, inbox: str, *, requester: str) -> bool:
        """May `msg` be acted on and answered? Logs and counts a refusal."""
        reply = msg.reply or ""
        if reply_within(reply, inbox):
            return True
        self.refused[requester] += 1
        log.warning(
            "bus.reply_refused",
            service=self.service,
            requester=requester,
            subject=msg.subject,
            reply=reply[:120],
            reason="no reply subject" if not reply else f"reply subject not under {inbox}.",
            refused=self.refused[requester],
        )
        return False

    async def respond(self, msg: Msg, data: bytes, inbox: str, *, requester: str) -> bool:
        """Answer `msg` with `data` if its reply subject is the requester's own; whether it was answered."""
        if not self.allows(msg, inbox, requester=requester):
            return False
        await msg.respond(data)
        return True

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.refused.items()))
