"""How fast one sender may go: a token bucket per key (a host, a subject), so one in a loop is
refused, or logged sparingly, while the others go on as before.

A bucket refills at a steady rate up to its burst, and every message of its key takes a
token. Refusals are counted per key; the first of a streak says to log it, then one in
`log_every`, so a loop cannot flood the log either. Pure: the clock is a parameter, so it is
tested without waiting. (The registry's per-host rates were the first user:
services/registry/host_rate.py.)
"""

from collections import Counter
from dataclasses import dataclass

__all__ = ["Bucket", "KeyRates", "RatePolicy", "Verdict"]


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

    def wait_s(self, policy: RatePolicy) -> float:
        """Seconds until the bucket, as last taken from, holds a whole token again."""
        return max(0.0, 1 - self.tokens) / policy.per_s

    def full(self, policy: RatePolicy, now: float) -> bool:
        return self.tokens + max(0.0, now - self.at) * policy.per_s >= policy.burst


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    #: Log this refusal: the first of a streak, or every `log_every`-th after it.
    log: bool = False
    #: Refusals of this key in a row, this one included.
    streak: int = 0
    #: Of a refusal: seconds until the key's next message would be let through.
    retry_after_s: float = 0.0


class KeyRates:
    """Token buckets per key (a host, a subject) for one kind of message; memory bounded by
    `max_keys` keys."""

    def __init__(self, policy: RatePolicy, *, max_keys: int = 10_000, log_every: int = 1000) -> None:
        self.policy = policy
        self.max_keys = max_keys
        self.log_every = log_every
        self._buckets: dict[str, Bucket] = {}
        self._streaks: Counter[str] = Counter()
        #: Refusals per key since these rates were made.
        self.refused: Counter[str] = Counter()

    def check(self, key: str, now: float) -> Verdict:
        bucket = self._buckets.get(key)
        if bucket is None:
            self._forget_idle(now)
            bucket = self._buckets[key] = Bucket(self.policy.burst, now)
        if bucket.take(self.policy, now):
            self._streaks.pop(key, None)
            return Verdict(True)
        self.refused[key] += 1
        self._streaks[key] += 1
        streak = self._streaks[key]
        return Verdict(
            False,
            log=streak == 1 or streak % self.log_every == 0,
            streak=streak,
            retry_after_s=bucket.wait_s(self.policy),
        )

    def _forget_idle(self, now: float) -> None:
        """Before a new key's bucket: drop the full ones (a full bucket is what a new one starts as)."""
        if len(self._buckets) < self.max_keys:
            return
        for key in [k for k, b in self._buckets.items() if b.full(self.policy, now)]:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:
            # Every key is busy: forget the oldest, which at worst gives it a fresh burst.
            del self._buckets[next(iter(self._buckets))]
