"""Which new user connections the gateway takes: pure bookkeeping, the clock passed in.

Before a connection costs a key exchange, `Admission.admit` decides on its
source address alone:

- a token bucket per address: `burst` connections at once, then `rate` per
  second (the DHEat attack and `ssh-audit`'s rate test open dozens a second);
- at most `max_unauthenticated` connections not yet logged in, and
  `source_max_unauthenticated` from one address (OpenSSH's MaxStartups and
  PerSourceMaxStartups): a connection holds its place from `admit` until
  `done` (it authenticated, or went away).

Memory is bounded: buckets that have refilled are forgotten, and at most
`max_sources` are kept (the least recently used dropped first, which can only
make that address's next connection welcome).
"""

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["Admission", "AdmissionPolicy"]


@dataclass(frozen=True)
class AdmissionPolicy:
    rate: float = 2.0
    burst: int = 10
    max_unauthenticated: int = 64
    source_max_unauthenticated: int = 10

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        if not 1 <= self.source_max_unauthenticated <= self.max_unauthenticated:
            raise ValueError("need 1 <= source_max_unauthenticated <= max_unauthenticated")


@dataclass
class _Bucket:
    tokens: float
    at: float


class Admission:
    def __init__(self, policy: AdmissionPolicy, *, max_sources: int = 100_000) -> None:
        if max_sources < 1:
            raise ValueError("max_sources must be at least 1")
        self.policy = policy
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._pending: dict[str, int] = {}
        self.unauthenticated = 0

    def _refill(self, source: str, now: float) -> _Bucket:
        bucket = self._buckets.pop(source, None)
        if bucket is None:
            bucket = _Bucket(tokens=float(self.policy.burst), at=now)
        else:
            elapsed = max(0.0, now - bucket.at)
            bucket.tokens = min(float(self.policy.burst), bucket.tokens + elapsed * self.policy.rate)
            bucket.at = now
        return bucket

    def admit(self, source: str, now: float) -> str | None:
        """None if a connection from `source` is taken (call `done` later); else why not."""
        if self.unauthenticated >= self.policy.max_unauthenticated:
            return "the gateway has too many connections still logging in; try again in a few seconds"
        if self._pending.get(source, 0) >= self.policy.source_max_unauthenticated:
            return "too many connections from your address are still logging in; try again in a few seconds"
        bucket = self._refill(source, now)
        if bucket.tokens < 1:
            self._keep(source, bucket)
            wait = (1 - bucket.tokens) / self.policy.rate
            return f"too many new connections from your address; try again in {max(1, round(wait))} s"
        bucket.tokens -= 1
        self._keep(source, bucket)
        self._pending[source] = self._pending.get(source, 0) + 1
        self.unauthenticated += 1
        return None

    def done(self, source: str) -> None:
        """A connection `admit` took has authenticated or gone: its place is free."""
        left = self._pending.get(source, 0) - 1
        if left < 0:
            return
        if left:
            self._pending[source] = left
        else:
            del self._pending[source]
        self.unauthenticated -= 1

    def _keep(self, source: str, bucket: _Bucket) -> None:
        self._buckets[source] = bucket  # most recently used last
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        # Forget full buckets at the old end: they say nothing a new one would not.
        while self._buckets:
            oldest, first = next(iter(self._buckets.items()))
            if oldest == source:
                break
            refilled = first.tokens + max(0.0, bucket.at - first.at) * self.policy.rate
            if refilled < self.policy.burst:
                break
            del self._buckets[oldest]

    def __len__(self) -> int:
        return len(self._buckets)
