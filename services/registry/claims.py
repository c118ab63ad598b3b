"""Checking a key a host claims (its SSH host key, its NATS key) against those every host holds.

The checks (ssh_keys.py: SSH_KEY_TAKEN; joining.py: NKEY_TAKEN) read the registry's view,
which folds the log a moment after each append: its follower hears of an append from
Postgres (LISTEN) and reads it. Asked against the view alone, a claim right behind its
holder's own registration was let through: machine B registered its key and deregistered,
and A's registration of B's key, a few milliseconds later on a busy machine, found a view
that had not yet folded B's, so A's claim was recorded and the gateways' links of B refused.
Two claims of one key at once both passed the same way, each before the other's append.

So a claim waits for the view to fold everything committed before it, and claims of one key
take turns from the check to the append: in this process (a lock per key), and across the
registry's replicas (a Postgres advisory lock of the key's, taken in a transaction that ends
after the append, so that another replica's turn begins with the append committed, and its
wait for the view to fold the log then shows it the claim). Keys have no stream of their own
to append on with an expected version, which would do the same without the lock.
"""

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator

from potluck.events import EventStore, Fold
from potluck.kernel.rejections import Rejected

__all__ = ["CATCH_UP_S", "CLAIMS_LOCK_CLASS", "TAKE_TURN", "Claims", "claim_name"]

#: How long a claim waits for its turn and for the view to fold the log; a host's request times
#: out soon after.
CATCH_UP_S = 5.0

#: The first half of every claim's advisory lock (the second is its key's hash): apart from the
#: pool's other advisory locks (one-bigint ones: the relay's, the migrations', the archiver's).
CLAIMS_LOCK_CLASS = 0x504C4B43  # "PLKC"
#: Takes a claim's turn (its class, its name): held until the transaction ends.
TAKE_TURN = "SELECT pg_advisory_xact_lock($1, hashtext($2))"

#: Claims of different keys under way at once in this process: each holds one of the store's
#: connections for its turn, and must leave the rest to the appends and reads it waits on.
CLAIMS_AT_ONCE = 3


def claim_name(kind: str, key: str | bytes) -> str:
    """What a claim's turns are taken by, in every replica alike."""
    return f"{kind}:{key.hex() if isinstance(key, bytes) else key}"


class Claims:
    def __init__(self, fold: Fold, store: EventStore, *, catch_up_s: float = CATCH_UP_S) -> None:
        self.fold = fold
        self.store = store
        self.catch_up_s = catch_up_s
        #: A lock per key being claimed; gone once no claim holds or awaits it.
        self._turns: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._at_once = asyncio.Semaphore(CLAIMS_AT_ONCE)

    @contextlib.asynccontextmanager
    async def claiming(self, kind: str, key: str | bytes) -> AsyncIterator[None]:
        """Check and record a claim of `key` (a `kind` of key) inside: alone for it, across the
        registry's replicas too, on a view of the whole log."""
        name = claim_name(kind, key)
        turn = self._turns.get(name)
        if turn is None:
            turn = self._turns[name] = asyncio.Lock()
        async with turn, self._at_once, self.store.pool.acquire() as conn, conn.transaction():
            try:
                # One wait for both, within what the host's request allows.
                async with asyncio.timeout(self.catch_up_s):
                    # Released with the transaction: at its commit after the append, or its
                    # rollback, or by the server when the connection drops.
                    await conn.execute(TAKE_TURN, CLAIMS_LOCK_CLASS, name)
                    await self.fold.caught_up_with(self.store, timeout=self.catch_up_s)
            except TimeoutError:
                raise Rejected(
                    "BUSY",
                    f"the registry could not check this key against the other machines' within "
                    f"{self.catch_up_s:g} s (another claim of it, or the pool's log not read this far "
                    "yet); try again",
                    status=503,
                ) from None
            yield
