"""Checking a key a host claims (its SSH host key, its NATS key) against those every host holds.

The checks (ssh_keys.py: SSH_KEY_TAKEN; joining.py: NKEY_TAKEN) read the registry's view,
which folds the log a moment after each append: its follower hears of an append from
Postgres (LISTEN) and reads it. Asked against the view alone, a claim right behind its
holder's own registration was let through: machine B registered its key and deregistered,
and A's registration of B's key, a few milliseconds later on a busy machine, found a view
that had not yet folded B's, so A's claim was recorded and the gateways' links of B refused.
Two claims of one key at once both passed the same way, each before the other's append.

So a claim waits for the view to fold everything committed before it, and claims of one key
take turns (an in-process lock per key, from the check to the append). Replicas of the
registry each take their own turns: two claims of one key at the same moment on two replicas
can still both pass (keys have no stream to append on with an expected version); a claim
behind another's answer cannot.
"""

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Hashable

from potluck.events import EventStore, Fold
from potluck.kernel.rejections import Rejected

__all__ = ["CATCH_UP_S", "Claims"]

#: How long a claim waits for the view to fold the log; a host's request times out soon after.
CATCH_UP_S = 5.0


class Claims:
    def __init__(self, fold: Fold, store: EventStore, *, catch_up_s: float = CATCH_UP_S) -> None:
        self.fold = fold
        self.store = store
        self.catch_up_s = catch_up_s
        #: A lock per key being claimed; gone once no claim holds or awaits it.
        self._turns: weakref.WeakValueDictionary[Hashable, asyncio.Lock] = weakref.WeakValueDictionary()

    @contextlib.asynccontextmanager
    async def claiming(self, key: Hashable) -> AsyncIterator[None]:
        """Check and record a claim of `key` inside: alone for `key`, on a view of the whole log."""
        turn = self._turns.get(key)
        if turn is None:
            turn = self._turns[key] = asyncio.Lock()
        async with turn:
            try:
                await self.fold.caught_up_with(self.store, timeout=self.catch_up_s)
            except TimeoutError:
                raise Rejected(
                    "BUSY",
                    f"the registry has not read the pool's log this far after {self.catch_up_s:g} s, so it "
                    "cannot check this key against the other machines' yet; try again",
                    status=503,
                ) from None
            yield
