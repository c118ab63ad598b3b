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
so retrying it later is always safe. Reads are not counted as changes: they append nothing, and
the long polls among them have their own bound (long_polls.py).

Reads the allocator must fetch from elsewhere (fetches) are counted on a rate of their own
(DEFAULT_FETCH_RATE): the model in memory answers every read of what a user holds now, but an
allocation it no longer holds (ended longer than the retention window ago, or never made: any
`a-` and 12 hex digits) is read from Postgres, as is every allocation's history, and the list
of the user's images (GET /v1/images) asks the pool registry once for its catalog and once
more for each repository's tags. One user asking for random ids in a loop
(200 at once) made over 2,000 reads of Postgres a second, each holding one of the allocator's
10 connections to it, which every other user's reads and the allocator's own appends waited
for; GET /v1/images in a loop did the same to the registry, which hosts pull from. Each
fetch takes a token from the user's bucket of fetches first; past the rate it
is refused with 429 RATE_LIMITED and a Retry-After, nothing read. Reads the model answers (a
live allocation, any job: jobs are all in memory, a page of a listing) take none, so a user
who reads what they hold is never held back. (What the rate does not bound is the work of
answering the refusals: a flood of requests, 429s or not, still takes the allocator's time,
as any flood does; connection_caps.py bounds how many at once one address may have going.)

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

__all__ = [
    "DEFAULT_CHANGE_RATE",
    "DEFAULT_FETCH_RATE",
    "USER_RATES",
    "RateExceeded",
    "TooManyChanges",
    "TooManyFetches",
    "UserRates",
]

log = structlog.get_logger(__name__)

#: Changes one user may make: 50 at once, then 5 a second (a create and its release are two).
DEFAULT_CHANGE_RATE = RatePolicy(per_s=5.0, burst=50)
#: Fetches one user may make: 100 at once, then 20 a second (a script reading the histories
#: of its last hundred allocations gets them at once).
DEFAULT_FETCH_RATE = RatePolicy(per_s=20.0, burst=100)


class RateExceeded(Rejected):
    """A user's request past one of their rates (429, with Retry-After in whole seconds)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__("RATE_LIMITED", message, status=429)
        self.retry_after_s = retry_after_s


class TooManyChanges(RateExceeded):
    """The user asked for changes faster than their rate."""

    def __init__(self, policy: RatePolicy, retry_after_s: int) -> None:
        super().__init__(
            f"you make changes faster than this pool allows ({policy.burst:g} at once, then "
            f"{policy.per_s:g} a second); nothing was done: try again in {retry_after_s} s, "
            "or submit many tasks as one job (POST /v1/jobs)",
            retry_after_s,
        )


class TooManyFetches(RateExceeded):
    """The user asked for what the allocator must fetch (from the log, the pool registry) faster
    than their rate."""

    def __init__(self, policy: RatePolicy, retry_after_s: int) -> None:
        super().__init__(
            "you read allocations that ended long ago (or never were), their events, or your "
            f"images faster than this pool allows ({policy.burst:g} at once, then "
            f"{policy.per_s:g} a second); nothing was read: try again in {retry_after_s} s",
            retry_after_s,
        )


class UserRates:
    """Admits each user's changes (or, with `refusal=TooManyFetches`, fetches) within
    their rate; refuses the rest before they cost anything."""

    def __init__(
        self,
        policy: RatePolicy = DEFAULT_CHANGE_RATE,
        clock: Callable[[], float] = time.monotonic,
        *,
        refusal: Callable[[RatePolicy, int], RateExceeded] = TooManyChanges,
    ) -> None:
        self.rates = KeyRates(policy)
        self.clock = clock
        self.refusal = refusal

    @property
    def policy(self) -> RatePolicy:
        return self.rates.policy

    def admit(self, user: str) -> None:
        """Take one of `user`'s tokens; the refusal (TooManyChanges) when there is none."""
        verdict = self.rates.check(user, self.clock())
        if verdict.allowed:
            return
        # Whole seconds, as Retry-After carries them: rounded up, so the retry finds its token.
        retry_after = max(1, math.ceil(verdict.retry_after_s))
        refused = self.refusal(self.policy, retry_after)
        if verdict.log:
            log.warning(
                "allocator.user_rate_exceeded",
                user=user,
                refusal=type(refused).__name__,
                refused_in_a_row=verdict.streak,
                refused=self.rates.refused[user],
                per_s=self.policy.per_s,
                burst=self.policy.burst,
            )
        raise refused


#: The app's one UserRates, shared by the API's routes and the pages' forms.
USER_RATES: web.AppKey[UserRates] = web.AppKey("user_rates", UserRates)
