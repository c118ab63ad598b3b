"""Which new user connections the gateway takes: pure bookkeeping, the clock passed in.

Before a connection costs a key exchange, `Admission.admit` decides on its
source address alone:

- a token bucket per address: `burst` connections at once, then `rate` per
  second (the DHEat attack and `ssh-audit`'s rate test open dozens a second);
- at most `max_unauthenticated` connections not yet logged in, and
  `source_max_unauthenticated` from one address (OpenSSH's MaxStartups and
  PerSourceMaxStartups): a connection holds its place from `admit` until
  `done` (it authenticated, or went away).

When all `max_unauthenticated` places are taken, a connection from an address
that holds fewer of them than the address holding the most (once it is
counted) is still admitted: the oldest connection of that heaviest address is
given up (`on_evict`, which ends it) to make room. Before, 7 addresses holding
their 10 each filled the 64 places, and every user was refused until those
connections' login deadline, which the flood renewed by reconnecting. A fair
share rather than OpenSSH's random early drop (MaxStartups start:rate:full):
random drop refuses a user's connection as often as the flood's, and a flood
that reconnects as fast as it is dropped keeps the places full all the same;
here a user with one connection logging in always has a place while some
address holds two, and the flood cannot take it back (an eviction only ever
takes from the heaviest). Only many addresses, each holding as few as the
user, fill the places for good; IPv6 addresses are counted by /64
(potluck.kernel.client_address), so those must be IPv4 addresses.

Memory is bounded: buckets that have refilled are forgotten, and at most
`max_sources` are kept (the least recently used dropped first, which can only
make that address's next connection welcome).
"""

from collections import OrderedDict
from collections.abc import Callable
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
        #: Ends the oldest connection `admit` took from an address that is still logging in
        #: (the listener that holds them sets it): its place is already free, so `done` is
        #: not called for it.
        self.on_evict: Callable[[str], None] = lambda source: None
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
        held = self._pending.get(source, 0)
        if held >= self.policy.source_max_unauthenticated:
            return "too many connections from your address are still logging in; try again in a few seconds"
        victim = None
        if self.unauthenticated >= self.policy.max_unauthenticated:
            victim = self._heaviest()
            if victim is None or held + 1 >= self._pending[victim]:
                return "the gateway has too many connections still logging in; try again in a few seconds"
        bucket = self._refill(source, now)
        if bucket.tokens < 1:
            self._keep(source, bucket)
            wait = (1 - bucket.tokens) / self.policy.rate
            return f"too many new connections from your address; try again in {max(1, round(wait))} s"
        bucket.tokens -= 1
        self._keep(source, bucket)
        if victim is not None:
            self.done(victim)
            self.on_evict(victim)
        self._pending[source] = self._pending.get(source, 0) + 1
        self.unauthenticated += 1
        return None

    def _heaviest(self) -> str | None:
        """The address holding the most places (the first to get there, of equals)."""
        return max(self._pending, key=self._pending.__getitem__, default=None)

    def held(self, source: str) -> int:
        """Places `source` holds: its connections still logging in."""
        return self._pending.get(source, 0)

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
