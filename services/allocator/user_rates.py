"""How fast one user may change things: a token bucket per user over the requests that append
events on their behalf.

Quotas (decisions.check_quota) bound what a user holds at once, not how often they change it:
a script looping on create and release (or submit and cancel a job) held one allocation at a
time and still appended events without end, grew the allocator's in-memory model with every
allocation it made, and took the allocator's and Postgres' time from everyone else. Each
request that can append for a user (POST /v1/allocations, DELETE /v1/allocations/{id}, POST
/v1/allocations/{id}/extend, POST /v1/jobs, DELETE /v1/jobs/{id}, and the pages' extend and
release) takes a token from the user's bucket before anything else is done with it; past the
rate it is refused with 429 RATE_LIMITED and a Retry-After, nothing read, decided or recorded,
so retrying it later is always safe. Reads are not counted: they append nothing, and the long
polls among them have their own bound (long_polls.py).

A request takes its token whether or not it then succeeds: a loop of refused requests (a
release of an allocation already released) costs the allocator as much time as one of
accepted ones. A job is one request however many tasks it has: it is the way to ask for many
allocations at once, and MAX_UNFINISHED_JOBS bounds how many a user has going.

The default (DEFAULT_CHANGE_RATE) lets a script create or release tens of allocations at once
and a few a second for ever; an operator sets the allocator's --change-rate and
--change-burst for a pool whose users need more (the benchmarks' load does). The buckets are
potluck.kernel.key_rates' and live in memory: a restart gives every user a full burst, which
costs no more than a user who waited. Each allocator replica keeps its own, so behind N
replicas a user may go up to N times the rate: still bounded, and no shared state to keep.
"""

import math
import time
from collections.abc import Callable

import structlog
from aiohttp import web

from potluck.kernel.key_rates import KeyRates, RatePolicy
from potluck.kernel.rejections import Rejected

__all__ = ["DEFAULT_CHANGE_RATE", "USER_RATES", "TooManyChanges", "UserRates"]

log = structlog.get_logger(__name__)

#: Changes one user may make: 50 at once, then 5 a second (a create and its release are two).
DEFAULT_CHANGE_RATE = RatePolicy(per_s=5.0, burst=50)


class TooManyChanges(Rejected):
    """The user asked for changes faster than their rate (429, with Retry-After)."""

    def __init__(self, policy: RatePolicy, retry_after_s: int) -> None:
        super().__init__(
            "RATE_LIMITED",
            f"you make changes faster than this pool allows ({policy.burst:g} at once, then "
            f"{policy.per_s:g} a second); nothing was done: try again in {retry_after_s} s, "
            "or submit many tasks as one job (POST /v1/jobs)",
            status=429,
        )
        self.retry_after_s = retry_after_s


class UserRates:
    """Admits each user's changes within their rate; refuses the rest before they cost anything."""

    def __init__(
        self, policy: RatePolicy = DEFAULT_CHANGE_RATE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rates = KeyRates(policy)
        self.clock = clock

    @property
    def policy(self) -> RatePolicy:
        return self.rates.policy

    def admit(self, user: str) -> None:
        """Take one of `user`'s tokens; TooManyChanges when there is none."""
        verdict = self.rates.check(user, self.clock())
        if verdict.allowed:
            return
        # Whole seconds, as Retry-After carries them: rounded up, so the retry finds its token.
        retry_after = max(1, math.ceil(verdict.retry_after_s))
        if verdict.log:
            log.warning(
                "allocator.user_rate_exceeded",
                user=user,
                refused_in_a_row=verdict.streak,
                refused=self.rates.refused[user],
                per_s=self.policy.per_s,
                burst=self.policy.burst,
            )
        raise TooManyChanges(self.policy, retry_after)


#: The app's one UserRates, shared by the API's routes and the pages' forms.
USER_RATES: web.AppKey[UserRates] = web.AppKey("user_rates", UserRates)
