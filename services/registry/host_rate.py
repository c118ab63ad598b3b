"""How fast one host may ask the registry: a token bucket per host, so a host in a loop is refused
while the others are served as before.

Every request (register, control, status) and every heartbeat of a host takes
a token from that host's bucket of its kind; a bucket refills at a steady rate
up to its burst. A host with an empty bucket is refused without the registry
reading or writing anything: a request is answered RATE_LIMITED, a heartbeat
is ignored. The first refusal of a streak is logged (then one log line per
`log_every` refusals, so a loop cannot flood the log either), and every one is
counted per host.

The policy is pure: the clock is a parameter, so it is tested without waiting.
`log_refusal` is the one place the refusal's log line is written.
"""

from collections import Counter
from dataclasses import dataclass

import structlog

__all__ = ["Bucket", "HostRates", "RatePolicy", "Verdict", "log_refusal"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RatePolicy:
    """`per_s` tokens a second, at most `burst` saved up."""

    per_s: float
    burst: float

    def __post_init__(self) -> None:
        if self.per_s <= 0 or self.burst < 1:
            raise ValueError(f"a rate needs per_s > 0 and burst >= 1 (got {self.per_s}, {self.burst})")


@dataclass
class Bucket:
    tokens: float
    at: float

    def take(self, policy: RatePolicy, now: float) -> bool:
        # A clock that goes back (it should not) never adds tokens.
        self.tokens = min(policy.burst, self.tokens + max(0.0, now - self.at) * policy.per_s)
        self.at = max(self.at, now)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def full(self, policy: RatePolicy, now: float) -> bool:
        return self.tokens + max(0.0, now - self.at) * policy.per_s >= policy.burst


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    #: Log this refusal: the first of a streak, or every `log_every`-th after it.
    log: bool = False
    #: Refusals of this host in a row, this one included.
    streak: int = 0


class HostRates:
    """Token buckets per host for one kind of message; memory bounded by `max_hosts`."""

    def __init__(self, policy: RatePolicy, *, max_hosts: int = 10_000, log_every: int = 1000) -> None:
        self.policy = policy
        self.max_hosts = max_hosts
        self.log_every = log_every
        self._buckets: dict[str, Bucket] = {}
        self._streaks: Counter[str] = Counter()
        #: Refusals per host since the registry started.
        self.refused: Counter[str] = Counter()

    def check(self, host_id: str, now: float) -> Verdict:
        bucket = self._buckets.get(host_id)
        if bucket is None:
            self._forget_idle(now)
            bucket = self._buckets[host_id] = Bucket(self.policy.burst, now)
        if bucket.take(self.policy, now):
            self._streaks.pop(host_id, None)
            return Verdict(True)
        self.refused[host_id] += 1
        self._streaks[host_id] += 1
        streak = self._streaks[host_id]
        return Verdict(False, log=streak == 1 or streak % self.log_every == 0, streak=streak)

    def _forget_idle(self, now: float) -> None:
        """Before a new host's bucket: drop the full ones (a full bucket is what a new one starts as)."""
        if len(self._buckets) < self.max_hosts:
            return
        for host_id in [h for h, b in self._buckets.items() if b.full(self.policy, now)]:
            del self._buckets[host_id]
        if len(self._buckets) >= self.max_hosts:
            # Every host is busy: forget the oldest, which at worst gives it a fresh burst.
            del self._buckets[next(iter(self._buckets))]


def log_refusal(rates: HostRates, verdict: Verdict, host_id: str, subject: str) -> None:
    """Log a refusal when `verdict` says this one is logged (the first of a streak, then sparsely)."""
    if verdict.log:
        log.warning(
            "registry.host_rate_exceeded",
            host_id=host_id,
            subject=subject,
            refused_in_a_row=verdict.streak,
            refused=rates.refused[host_id],
            per_s=rates.policy.per_s,
            burst=rates.policy.burst,
        )
