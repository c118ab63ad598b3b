"""A request no host could give is refused (422) only on the whole log: the allocator's fold
may not have taken in a host that registered a moment ago (services/allocator/engine.py,
`decided_on_the_whole_log`). On a real event store, with the fold held back by hand."""

import asyncio

import pytest

from potluck.allocator.engine import AllocatorEngine
from potluck.events import EventStore
from potluck.kernel.rejections import Rejected
from tests.helpers import stop
from tests.integration.test_replay import add_a_user, one_task_job, register_host, request


async def test_a_host_in_the_log_but_not_yet_folded_is_waited_for_not_refused(store: EventStore) -> None:
    """Tried: laptop-a registers while the allocator's fold is stopped; alice then asks for an
    allocation constrained to name=laptop-a, and the fold starts again only after she asked.
    Must hold: her request is not refused NO_HOST_MATCHES but placed on laptop-a once the fold
    has caught up; a request that no host in the log matches (name=laptop-z) is still refused
    NO_HOST_MATCHES, and a job constrained to laptop-a is accepted the same way."""
    engine = AllocatorEngine(store)
    await engine.catch_up()
    following = asyncio.create_task(engine.follow())
    alice = await add_a_user(engine, "alice")
    await stop(following)

    host_id = await register_host(store, "laptop-a", 2)
    asking = asyncio.create_task(request(engine, alice, 1, constraints={"name": "laptop-a"}))
    await asyncio.sleep(0.3)
    assert not asking.done(), asking  # before the fix: refused at once, the host not yet folded
    following = asyncio.create_task(engine.follow())
    try:
        async with asyncio.timeout(10):
            alloc_id = await asking
        placed = engine.allocations.allocations[alloc_id]
        assert (placed.status, placed.host_id) == ("placed", host_id)

        with pytest.raises(Rejected) as refused:
            await request(engine, alice, 1, constraints={"name": "laptop-z"})
        assert (refused.value.code, refused.value.status, refused.value.field) == (
            "NO_HOST_MATCHES",
            422,
            "constraints",
        )

        await stop(following)
        await register_host(store, "laptop-b", 2)
        job = one_task_job(constraints={"name": "laptop-b"})
        submitting = asyncio.create_task(engine.submit_job(alice, job))
        await asyncio.sleep(0.3)
        assert not submitting.done(), submitting
        following = asyncio.create_task(engine.follow())
        async with asyncio.timeout(10):
            submitted = (await submitting).job
        assert submitted.status != "failed", submitted
    finally:
        await stop(following)
