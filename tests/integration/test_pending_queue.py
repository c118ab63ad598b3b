"""The allocator's pending queue (services/allocator/reactions.py, `place_pending`) on a real
event store: a queue that cannot move is tried whole once, not once a tick nor once per
request that joins it, and still times out and still moves as soon as room frees."""

import asyncio
from datetime import UTC, datetime, timedelta

from potluck.allocator.engine import AllocatorEngine
from potluck.allocator.in_flight import InFlight
from potluck.allocator.users import add_user
from potluck.contracts.allocation_events import Quota, user_stream
from potluck.contracts.capacity import Capacity
from potluck.events import EventStore
from tests.helpers import stop, wait_until
from tests.integration.test_replay import add_a_user, one_task_job, register_host, request


class _Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_a_queue_that_cannot_move_is_tried_once_until_the_log_moves(store: EventStore) -> None:
    """Tried: three requests wait behind a full host while the queue is served again and again,
    requests in flight come and go, the clock passes one's queue timeout, then capacity frees.
    Must hold: the waiting queue is tried whole once while nothing changes, and again when a
    placement in flight fails to land (its room is free again); the timeout is still refused on
    time; the freed capacity is still given to the next in line at the next round."""
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

    # Requests in flight that come and go hold room only for a while, and change nothing once
    # they land; a placement whose append failed gives its room back: the queue is tried again.
    host_id = next(iter(engine.hosts.hosts))
    one_cpu = Capacity(cpus=1, memory_bytes=1, disk_bytes=1)
    engine.in_flight.add(InFlight("flying-1", "alice", one_cpu, None))
    engine.in_flight.settle("flying-1", landed=False)
    engine.in_flight.add(InFlight("flying-2", "alice", one_cpu, host_id))
    assert await engine.place_pending() == 0
    engine.in_flight.settle("flying-2")
    assert await engine.place_pending() == 0
    assert engine.reactions.queue_passes == passes
    engine.in_flight.add(InFlight("flying-3", "alice", one_cpu, host_id))
    engine.in_flight.settle("flying-3", landed=False)
    assert await engine.place_pending() == 0
    assert engine.reactions.queue_passes == passes + 1
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


async def test_requests_that_join_a_long_queue_are_tried_without_trying_it_all_again(
    store: EventStore,
) -> None:
    """Tried: with the reactions running, 300 requests of 2 CPUs wait behind a host whose 4 CPUs
    a 3-CPU allocation mostly holds; 30 more join, then a job whose 1-CPU task fits in the
    room left, then one that may wait half a second; then the 3-CPU allocation ends. Must
    hold: the requests that join are tried on their own, not with the whole queue again (an
    allocator that did so once per request starved its API behind a long queue), and the
    queue is not looked at for timeouts while none is due; the job's task, which only the
    queue places, is placed; the short wait is refused on time; the capacity freed is tried
    against the whole queue once and given to the first in line, and the rest still wait."""
    engine = AllocatorEngine(store)
    await engine.catch_up()
    following = asyncio.create_task(engine.follow())
    reacting = asyncio.create_task(engine.run_reactions(tick=0.05))
    try:
        await register_host(store, "laptop-a", 4)
        await engine.caught_up_with_log()
        events, _token = add_user(
            None, "heavy", Quota(allocations=1000, cpus=1e4, memory_bytes=1 << 50, disk_bytes=1 << 50)
        )
        await store.append(user_stream("heavy"), events, expected_version=0)
        await engine.caught_up_with_log()
        heavy = engine.users.users["heavy"]
        big = await request(engine, heavy, 3)
        waiting = [await request(engine, heavy, 2, queue_timeout=3600) for _ in range(300)]
        allocations = engine.allocations.allocations
        assert allocations[big].status == "placed"
        reactions = engine.reactions
        await wait_until(lambda: reactions.queue_passes > 0, 15, "the queue to be tried")
        passes, walks = reactions.queue_passes, reactions.timeout_walks

        joined = [await request(engine, heavy, 2, queue_timeout=3600) for _ in range(30)]
        job = (await engine.submit_job(heavy, one_task_job())).job

        def task_placed() -> bool:
            attempt = engine.model.jobs.jobs[job.job_id].latest(0)
            return attempt is not None and allocations[attempt].status == "placed"

        await wait_until(task_placed, 15, "the job's task to be placed from the queue")
        assert reactions.queue_passes == passes
        assert reactions.timeout_walks == walks  # none is due for an hour: none looked at
        assert {allocations[a].status for a in (*waiting, *joined)} == {"pending"}

        # One that joins with a short queue timeout is still refused on time.
        short = await request(engine, heavy, 2, queue_timeout=1)
        await wait_until(lambda: allocations[short].status == "refused", 15, "the short wait to time out")
        assert allocations[short].reason == "QUEUE_TIMEOUT"
        assert reactions.timeout_walks > walks

        await engine.release(heavy, big)
        # The pass ends after the placement it makes: wait for the pass, then look.
        await wait_until(lambda: reactions.queue_passes > passes, 15, "the queue to be tried again")
        assert reactions.queue_passes == passes + 1
        assert allocations[waiting[0]].status == "placed"
        assert {allocations[a].status for a in (*waiting[1:], *joined)} == {"pending"}
    finally:
        await stop(reacting)
        await stop(following)
