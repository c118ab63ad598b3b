"""Answering a request on the bus only into the requester's own reply inbox.

A requester names its reply subject, and a service answers with an identity
NATS lets publish anywhere: answering wherever a host's request says would let
the host make the service publish into another host's subjects or call the
JetStream API (`$JS.API...`). So a service answers, and acts on, a request
only when its reply subject is under the inbox of the identity NATS authorised
to send it (a host's `_INBOX_<host_id>`, the services' `_INBOX`); any other is
refused, counted per requester, and nothing is published.

A refusal is the first thing a service checks of a host's request, before the
host's rate: JetStream answers a host's request on its own consumer into
whatever reply subject it names, so host A can have the server publish onto
host B's request subjects; such a message names no reply in B's inbox, and
must cost B nothing (charged to B's rate, it had B's own requests refused).
So refusals come at the pace the sender likes, and are logged sparingly: the
first few per requester, then one a second (REFUSAL_LOG_RATE), each line with
the count so far.
"""

import time
from collections import Counter
from collections.abc import Callable

import structlog
from nats.aio.msg import Msg

from potluck.kernel.key_rates import KeyRates, RatePolicy

__all__ = ["MAX_REPLY_LENGTH", "REFUSAL_LOG_RATE", "ReplyGuard", "reply_within"]

log = structlog.get_logger(__name__)

#: Longer reply subjects are refused outright: no inbox nats-py makes comes near it.
MAX_REPLY_LENGTH = 256

#: Refusals logged per requester: ten at once, then one a second.
REFUSAL_LOG_RATE = RatePolicy(per_s=1.0, burst=10)


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

    def __init__(self, service: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.service = service
        self.clock = clock
        self.refused: Counter[str] = Counter()
        self._logged = KeyRates(REFUSAL_LOG_RATE)

    def allows(self, msg: Msg, inbox: str, *, requester: str) -> bool:
        """May `msg` be acted on and answered? Counts a refusal, and logs it sparingly."""
        reply = msg.reply or ""
        if reply_within(reply, inbox):
            return True
        self.refused[requester] += 1
        if self._logged.check(requester, self.clock()).allowed:
            log.warning(
                "bus.reply_refused",
                service=self.service,
                requester=requester,
                subject=msg.subject,
                reply=reply[:120],
                reason="no reply subject" if not reply else f"reply subject not under {inbox}.",
                refused=self.refused[requester],
                hint="a request names a reply in its sender's own inbox; anything else on the subject "
                "is not the sender's request (JetStream answers another host's requests where it says)",
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
