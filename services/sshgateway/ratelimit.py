"""Failed logins slow down, then lock out: pure bookkeeping, the clock passed in.

A *failure* is one SSH connection that does not authenticate (however
many keys it offered: OpenSSH offers every key it has, one by one, and a
user with five keys must not look like an attacker). It is counted when it
happens, at the connection's first refused key (or, for one that offered
none, when it goes), not when the connection ends: parallel connections
then see each other's failures at once. A connection that authenticates
after a refused key takes its failure back (`forgive`). The gateway keeps one
`FailureLimiter` keyed by source address and one keyed by allocation id:

- after n failures within `window_s`, the next attempt waits
  `base_delay_s * 2**(n-1)`, at most `max_delay_s` (exponential delay);
- `lockout_after` failures within the window lock the key for `lockout_s`:
  every attempt is refused, even with the right key.

The allocation limiter locks only after many more failures than the source
limiter (see settings.py), and its lockout and delays hold back only keys
that are not registered on the allocation (server.py): anyone who knows an
allocation's id can fail logins to it, and when its lockout also kept out
its owner, one stranger failing from one address locked the owner out
(attempts refused by the source's lockout still count against the
allocation). It caps probing an allocation for its keys from many addresses. Failures are
counted for unknown allocation names too, so the limiter never tells whether
an allocation exists. A success clears the allocation's failures (its owner
proved who they are) but not the source's, which only age out.

Memory is bounded: at most `max_keys` keys are tracked, the least recently
failed forgotten first.
"""

import contextlib
from collections import OrderedDict, deque
from dataclasses import dataclass

__all__ = ["FailureLimiter", "LimitPolicy", "Verdict"]


@dataclass(frozen=True)
class LimitPolicy:
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    window_s: float = 600.0
    lockout_after: int = 10
    lockout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError("need 0 <= base_delay_s <= max_delay_s")
        if self.window_s <= 0 or self.lockout_s < 0:
            raise ValueError("window_s must be positive and lockout_s not negative")
        if self.lockout_after < 1:
            raise ValueError("lockout_after must be at least 1")


@dataclass(frozen=True)
class Verdict:
    """What to do with the next attempt for a key: wait `delay_s`, or refuse until `locked_for_s` passes."""

    delay_s: float = 0.0
    locked_for_s: float = 0.0
    failures: int = 0

    @property
    def locked(self) -> bool:
        return self.locked_for_s > 0


@dataclass
class _Record:
    failures: deque[float]
    locked_until: float = 0.0


class FailureLimiter:
    def __init__(self, policy: LimitPolicy, *, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.policy = policy
        self.max_keys = max_keys
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def _trim(self, record: _Record, now: float) -> None:
        horizon = now - self.policy.window_s
        while record.failures and record.failures[0] <= horizon:
            record.failures.popleft()

    def check(self, key: str, now: float) -> Verdict:
        """The verdict for an attempt starting `now`; changes nothing but forgetting old failures."""
        record = self._records.get(key)
        if record is None:
            return Verdict()
        if record.locked_until > now:
            left = min(record.locked_until - now, self.policy.lockout_s)  # no float overshoot
            return Verdict(locked_for_s=left, failures=len(record.failures))
        self._trim(record, now)
        n = len(record.failures)
        if n == 0:
            if record.locked_until <= now:
                del self._records[key]
            return Verdict()
        delay = min(self.policy.base_delay_s * 2 ** (n - 1), self.policy.max_delay_s)
        return Verdict(delay_s=delay, failures=n)

    def failed(self, key: str, now: float) -> Verdict:
        """Record a failure at `now`; returns the verdict the next attempt will get."""
        record = self._records.pop(key, None) or _Record(failures=deque())
        self._trim(record, now)
        record.failures.append(now)
        # Failures that arrive during a lockout (connections admitted before it, ending now)
        # count too: enough of them lock the key again from now, so parallel attempts gain nothing.
        if len(record.failures) >= self.policy.lockout_after:
            record.locked_until = now + self.policy.lockout_s
            record.failures.clear()
        self._records[key] = record  # most recently failed last
        while len(self._records) > self.max_keys:
            self._records.popitem(last=False)
        return self.check(key, now)

    def forgive(self, key: str, at: float) -> None:
        """Take back the failure recorded at `at` (its connection authenticated after all).

        A lockout it helped cause stays: by then other attempts were refused because of it."""
        record = self._records.get(key)
        if record is not None:
            with contextlib.suppress(ValueError):
                record.failures.remove(at)

    def succeeded(self, key: str) -> None:
        """Forget the key's failures (a lockout in force stays)."""
        record = self._records.get(key)
        if record is not None:
            record.failures.clear()
