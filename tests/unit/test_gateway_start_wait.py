"""Sessions to a starting allocation wait for the log to show it running (start_wait.py).

The log is folded through the gateway's own `Fold` and reactions, as service.py
does, and a session's wait is `StartWaits.settled` on the view, as sessions.py
calls it: no server is needed to check who is woken, by what, and when a wait
gives up.
"""

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from potluck.contracts.allocation_events import AllocationFailed, alloc_stream
from potluck.events import Fold
from potluck.sshgateway.context import SessionRegistry
from potluck.sshgateway.links import LinkPool
from potluck.sshgateway.projection import GatewayView
from potluck.sshgateway.reactions import GatewayReactions
from potluck.sshgateway.start_wait import StartWaits
from tests.unit.test_gateway_reactions import Log, running

T = TypeVar("T")


async def within(awaitable: Awaitable[T], seconds: float) -> T:
    async with asyncio.timeout(seconds):
        return await awaitable


def folded() -> tuple[Fold, GatewayView, StartWaits]:
    view, starts = GatewayView(), StartWaits()
    return (
        Fold(GatewayReactions(view, SessionRegistry(), LinkPool(), starts), reader="sshgateway"),
        view,
        starts,
    )


async def test_a_session_waiting_on_a_placed_allocation_goes_on_once_it_runs() -> None:
    """What is tried: a session asks for an allocation the view has as placed (requested and
    placed folded, running not yet), then the running event is folded. What must hold: the
    wait ends with the allocation running, long before its timeout, and nothing is left
    waiting."""
    fold, view, starts = folded()
    log = Log()
    requested, placed, started = running(log, "a1")
    fold.apply_all([requested, placed])
    waiting = asyncio.create_task(starts.settled("a1", view.allocation, 60.0))
    await asyncio.sleep(0)
    assert not waiting.done()
    assert starts.waiting() == 1

    fold.apply(started)

    state = await within(waiting, 5.0)
    assert state is not None
    assert state.status == "running"
    assert starts.waiting() == 0


async def test_a_session_waiting_on_an_allocation_that_fails_to_start_is_told_at_once() -> None:
    """What is tried: the allocation fails while a session waits for it to start. What must
    hold: the wait ends with the failed state (the session then refuses, saying why), not
    after its timeout."""
    fold, view, starts = folded()
    log = Log()
    requested, placed, _ = running(log, "a1")
    fold.apply_all([requested, placed])
    waiting = asyncio.create_task(starts.settled("a1", view.allocation, 60.0))
    await asyncio.sleep(0)

    fold.apply(
        log(alloc_stream("a1"), AllocationFailed(alloc_id="a1", host_id="h1", reason="image not found"))
    )

    state = await within(waiting, 5.0)
    assert state is not None
    assert state.status == "failed"
    assert starts.waiting() == 0


async def test_a_change_to_another_allocation_does_not_end_the_wait() -> None:
    """What is tried: a session waits on a1 while a2 starts and runs. What must hold: the wait
    on a1 goes on (woken only by its own allocation) and ends at its timeout with a1 still
    placed; a running allocation and an unknown one are answered without waiting."""
    fold, view, starts = folded()
    log = Log()
    a1_requested, a1_placed, _ = running(log, "a1")
    fold.apply_all([a1_requested, a1_placed])
    waiting = asyncio.create_task(starts.settled("a1", view.allocation, 0.3))
    await asyncio.sleep(0)

    fold.apply_all(running(log, "a2"))
    await asyncio.sleep(0.05)
    assert not waiting.done()

    state = await within(waiting, 5.0)
    assert state is not None
    assert state.status == "placed"
    assert starts.waiting() == 0
    a2 = await within(starts.settled("a2", view.allocation, 60.0), 1.0)
    assert a2 is not None
    assert a2.status == "running"
    assert await within(starts.settled("nobody", view.allocation, 60.0), 1.0) is None
