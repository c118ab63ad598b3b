"""Sessions to an allocation that is still starting wait for it, a little, instead of failing.

A user who creates an allocation and connects at once (`potluck create`, then
`ssh`; a script that waits for "running" through the HTTP API, then connects)
can reach the gateway before its view of the log has the allocation running:
the container is still being created or its image pulled, or the allocator
answered "running" a moment before this gateway folded the same event.
Refusing then ("not running yet; try again in a moment") is a failure the user
did nothing to cause, and one a script cannot tell from a real one.

So a session to an allocation that is pending, placed or pulling waits up to
the gateway's `start_wait_s` for the allocation to change: the reactions to
the log (reactions.py) tell `StartWaits` of every allocation that changed,
which wakes the sessions waiting on it; each looks again and goes on (running,
or ended: the usual refusal then says why). What a wait holds is one future
per waiting session, and sessions are capped per connection and per user.
"""

import asyncio
from collections.abc import Callable

from potluck.readmodels.allocations import AllocationState

__all__ = ["NOT_STARTED", "StartWaits"]

#: Statuses an allocation passes through before its container runs.
NOT_STARTED: frozenset[str] = frozenset({"pending", "placed", "pulling"})


def _starting(state: AllocationState | None) -> bool:
    return state is not None and state.status in NOT_STARTED


class StartWaits:
    """Sessions waiting for an allocation to start, woken when the log changes it."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}

    def changed(self, alloc_id: str) -> None:
        """The allocation changed in the gateway's view: wake whoever waits on it."""
        for waiter in self._waiting.pop(alloc_id, ()):
            if not waiter.done():
                waiter.set_result(None)

    async def settled(
        self, alloc_id: str, lookup: Callable[[str], AllocationState | None], timeout_s: float
    ) -> AllocationState | None:
        """The allocation as `lookup` gives it, once it is no longer starting or `timeout_s` has
        passed (then as it is: the caller refuses the session, saying so)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        state = lookup(alloc_id)
        while _starting(state) and (left := deadline - loop.time()) > 0:
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiting.setdefault(alloc_id, set()).add(waiter)
            try:
                async with asyncio.timeout(left):
                    await waiter
            except TimeoutError:
                pass
            finally:
                self._forget(alloc_id, waiter)
            state = lookup(alloc_id)
        return state

    def waiting(self) -> int:
        """Sessions waiting now, all allocations together."""
        return sum(len(w) for w in self._waiting.values())

    def _forget(self, alloc_id: str, waiter: asyncio.Future[None]) -> None:
        waiters = self._waiting.get(alloc_id)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiting[alloc_id]
