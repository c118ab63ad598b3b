"""The allocator's pending queue (services/allocator/reactions.py, `place_pending`) on a real
event store: a queue that cannot move is tried whole once, not once a tick, and still
times out and still moves as soon as the log does."""

import asyncio
from datetime import UTC, datetime, timedelta

from potluck.allocator.engine import AllocatorEngine
from potluck.allocator.in_flight import InFlight
from potluck.contracts.capacity import Capacity
from potluck.events import EventStore
from tests.helpers import stop
from tests.integration.test_replay import add_a_user, register_host, request


class _Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_a_queue_that_cannot_move_is_tried_once_until_the_log_moves(store: EventStore) -> None:
    """Tried: three requests wait behind a full host while the queue is served again and again,
    the clock passes one's queue timeout, then capacity frees. Must hold: the waiting queue is
    tried whole once while nothing changes, and again when the requests in flight change (even
    to as many as before); the timeout is still refused on time; the freed capacity is still
    given to the next in line at the next round."""
    clock = _Clock()
    engine = AllocatorEngine(store, clock=clock)
    await engine.catch_up()
    following = asyncio.create_task(engine.follow())
    try:
        await _served_again_and_again(engine, clock)
    finally:
        await stop(following)


async def _served_again_and_again(engine: AllocatorEngine, clock: _Clock) -> None:
    store = engine.store
    await register_host(store, "laptop-a", 2)
    await engine.caught_up_with_log()
    alice = await add_a_user(engine, "alice")
    first = await request(engine, alice, 2)
    short = await request(engine, alice, 2, queue_timeout=30)
    waiting = [await request(engine, alice, 2, queue_timeout=600) for _ in range(2)]
    allocations = engine.allocations.allocations
    assert allocations[first].status == "placed"
    assert {allocations[a].status for a in (short, *waiting)} == {"pending"}

    assert await engine.place_pending() == 0
    passes = engine.reactions.queue_passes
    for _ in range(5):
        assert await engine.place_pending() == 0
    assert engine.reactions.queue_passes == passes  # nothing changed: not tried again

    # One request in flight settles (its append failed: the log does not move) as another
    # comes: as many in flight as before, but not the same ones, so the queue is tried again.
    engine.in_flight.add(InFlight("flying-1", "alice", Capacity(cpus=1, memory_bytes=1, disk_bytes=1), None))
    assert await engine.place_pending() == 0
    engine.in_flight.settle("flying-1")
    engine.in_flight.add(InFlight("flying-2", "alice", Capacity(cpus=1, memory_bytes=1, disk_bytes=1), None))
    assert await engine.place_pending() == 0
    engine.in_flight.settle("flying-2")
    assert engine.reactions.queue_passes == passes + 2
    passes = engine.reactions.queue_passes

    clock.now += timedelta(seconds=31)
    assert await engine.place_pending() == 0
    assert allocations[short].status == "refused"
    assert allocations[short].reason == "QUEUE_TIMEOUT"
    assert {allocations[a].status for a in waiting} == {"pending"}

    await engine.release(alice, first)
    assert await engine.place_pending() == 1
    assert [allocations[a].status for a in waiting] == ["placed", "pending"]
    assert engine.reactions.queue_passes > passes


async def test_capacity_that_frees_goes_to_the_user_who_holds_nothing(store: EventStore) -> None:
    """Tried: alice runs on a full host and asks again; bob asks after her; alice's allocation
    ends. Must hold: the freed room goes to bob, whose request is newer but who holds nothing,
    and alice's second request still waits (the fair queue, services/allocator/queue.py); once
    bob's ends too, alice's is placed."""
    clock = _Clock()
    engine = AllocatorEngine(store, clock=clock)
    await engine.catch_up()
    following = asyncio.create_task(engine.follow())
    try:
        await register_host(store, "laptop-a", 2)
        await engine.caught_up_with_log()
        alice = await add_a_user(engine, "alice")
        bob = await add_a_user(engine, "bob")
        first = await request(engine, alice, 2)
        again = await request(engine, alice, 2)
        clock.now += timedelta(seconds=1)
        bobs = await request(engine, bob, 2)
        allocations = engine.allocations.allocations
        assert [allocations[a].status for a in (first, again, bobs)] == ["placed", "pending", "pending"]
        assert engine.queue_positions() == {again: 2, bobs: 1}

        await engine.release(alice, first)
        await engine.place_pending()
        assert [allocations[a].status for a in (again, bobs)] == ["pending", "placed"]
        await engine.release(bob, bobs)
        await engine.place_pending()
        assert allocations[again].status == "placed"
    finally:
        await stop(following)
