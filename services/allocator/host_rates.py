"""How fast one host may ask the allocator: a token bucket per host and kind of request.

A host asks for its desired state (at start, after a reconnect or a wake) and for a registry
token per image pull; nothing else. Each answer costs a scan of the allocations and a read of
the log, and one subscription serves every host, so a host in a loop (its member controls it,
credentials and all) would hold the allocator and drop other hosts' requests as a slow
consumer. Past its rate a host's request is answered RATE_LIMITED at the cost of this check
(hostd asks again after a pause), logged for the first of a streak and then once a thousand,
as the registry holds hosts' requests to it (services/registry/host_rate.py). The buckets are
potluck.kernel.key_rates'. Before the rate, the reply subject: a message on the host's subject
that names no reply in its inbox is not its request (JetStream answers another host's requests
wherever that host says) and is refused by the ReplyGuard without costing the host its rate.
"""

import time
from collections.abc import Callable

import structlog
from nats.aio.msg import Msg

from potluck.contracts.messages import Reply
from potluck.contracts.subjects import host_of, inbox_prefix
from potluck.events.replies import ReplyGuard
from potluck.kernel.key_rates import KeyRates, RatePolicy
from potluck.kernel.rejections import Rejected

__all__ = ["DESIRED_RATE", "IMAGE_TOKEN_RATE", "HostRates"]

log = structlog.get_logger(__name__)

#: Desired states: a hostd asks once per (re)connect or wake, and again while the answer is older
#: than what it applied; 20 at once and one a second after leave every honest one room.
DESIRED_RATE = RatePolicy(per_s=1.0, burst=20)
#: Registry tokens: one per pull, so a job's tasks arriving together ask many at once.
IMAGE_TOKEN_RATE = RatePolicy(per_s=20.0, burst=500)


class HostRates:
    """Admits hosts' requests of one kind within their rate; refuses the rest cheaply."""

    def __init__(
        self, kind: str, policy: RatePolicy, guard: ReplyGuard, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.kind = kind
        self.rates = KeyRates(policy)
        self.guard = guard
        self.clock = clock

    async def admit(self, msg: Msg) -> bool:
        """Whether the asking host named its own inbox and is within its rate; past the rate it is
        answered RATE_LIMITED and nothing else is done."""
        host_id = host_of(msg.subject)
        # The reply subject first: what names no reply in the host's inbox is not the host's
        # request (JetStream's answers to another host land here too) and costs its rate nothing.
        if not self.guard.allows(msg, inbox_prefix(host_id), requester=host_id):
            return False
        verdict = self.rates.check(host_id, self.clock())
        if verdict.allowed:
            return True
        policy = self.rates.policy
        if verdict.log:
            log.warning(
                "allocator.host_rate_exceeded",
                host_id=host_id,
                kind=self.kind,
                refused_in_a_row=verdict.streak,
                refused=self.rates.refused[host_id],
                per_s=policy.per_s,
                burst=policy.burst,
            )
        refusal = Rejected(
            "RATE_LIMITED",
            f"host {host_id} asks for {self.kind} faster than {policy.per_s:g} a second; slow down",
            status=429,
        )
        reply = Reply(ok=False, error=refusal.as_dict()).model_dump_json().encode()
        await msg.respond(reply)
        return False

    def refused(self) -> dict[str, int]:
        return dict(sorted(self.rates.refused.items()))
