"""The allocator's retention window on a real Postgres log, over real HTTP (retention.py).

What must hold: an allocation ended longer than the window ago, on the log's clock, is no
longer in the allocator's model, yet `GET /v1/allocations/{id}` answers for it exactly as
before (folded from its own stream), to its owner only; `replay --check` (which folds with the
running allocator's window) finds no difference; and an allocator started again over the same
log, from zero or from a checkpoint, holds the same model.
"""

import asyncio
from datetime import timedelta
from typing import Any

from nats.aio.client import Client as NATS

from potluck.allocator.engine import AllocatorEngine
from potluck.allocator.live_state import state_responder
from potluck.allocator.users import add_user
from potluck.contracts.allocation_events import Quota, user_stream
from potluck.contracts.subjects import ALLOCATOR_STATE
from potluck.events import EventStore
from potluck.events.checkpoints import Checkpointer
from potluck.ops.live import allocator_source
from potluck.ops.replay import check
from potluck.projections import ReadModels
from tests.fixtures.web_app import WebApp, serving
from tests.helpers import wait_until
from tests.unit.test_allocator_model import state_of

#: Short, so that the test waits only that long for the log's clock to pass it.
WINDOW_S = 2.0
NEVER_ALLOC = "a-0123456789ab"


async def _get(app: WebApp, who: str, path: str) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {app.tokens[who]}"}
    async with app.http.get(f"{app.url}{path}", headers=headers) as r:
        return r.status, await r.json()


async def _tick(app: WebApp, name: str) -> None:
    """An event on the log (a user added), folded: the log's clock moves only with events."""
    store = app.engine.store
    events, _ = add_user(None, name, Quota())
    await store.append(user_stream(name), events, expected_version=0)
    head = await store.head_position()
    await wait_until(lambda: app.engine.position >= head, 10, "the allocator to fold the log")


async def test_an_allocation_past_the_window_leaves_the_model_and_still_answers_from_the_log(
    store: EventStore, nc: NATS
) -> None:
    """Tried: alice creates an allocation and releases it over HTTP, on an allocator keeping
    what ended for 2 s; the log's clock (Postgres') passes the window and an event lands. Must
    hold: the model no longer holds it, nor her list (her pending one stays), and a page after it
    goes on from its place; her GET answers what it answered before, ended and released, also
    with `?wait=`; bob's GET, and his list after it, are the 404 of an id that never was; the
    replay check, asked over NATS, agrees with the allocator; allocators started again from
    zero and from a checkpoint taken before it left hold what the running one holds, and one
    with another window does not resume from that checkpoint."""
    async with serving(store, ("alice", "bob"), lambda app: None, retention_s=WINDOW_S) as app:
        await app.paused_host()
        alice = {"Authorization": f"Bearer {app.tokens['alice']}"}
        spec = {"cpus": 0.5, "memory": "64M", "disk": "64M", "image": "x:1"}
        async with app.http.post(f"{app.url}/v1/allocations", json=spec, headers=alice) as r:
            assert r.status == 202, await r.text()
            alloc_id = (await r.json())["id"]
        async with app.http.delete(f"{app.url}/v1/allocations/{alloc_id}", headers=alice) as r:
            assert r.status == 200, await r.text()
        async with app.http.post(f"{app.url}/v1/allocations", json=spec, headers=alice) as r:
            assert r.status == 202, await r.text()
            later = (await r.json())["id"]  # still pending: it never leaves
        status, before = await _get(app, "alice", f"/v1/allocations/{alloc_id}")
        assert (status, before["state"]) == (200, "released")
        engine = app.engine
        await Checkpointer(engine.checkpoints(), engine.checkpoint_state, lambda: engine.position).take()

        ended = engine.allocations.allocations[alloc_id].ended_at
        assert ended is not None
        past = ended + timedelta(seconds=WINDOW_S)

        async def log_clock_past() -> bool:
            return await store.log_clock() > past

        while not await log_clock_past():
            await asyncio.sleep(0.2)
        await _tick(app, "carol")

        assert alloc_id not in engine.allocations.allocations
        assert engine.model.retirement.allocations_retired == 1
        status, listed = await _get(app, "alice", "/v1/allocations")
        assert status == 200
        assert [a["id"] for a in listed["allocations"]] == [later]
        # A page that ended on it goes on from its place; to bob it is an unknown cursor.
        status, following = await _get(app, "alice", f"/v1/allocations?after={alloc_id}")
        assert (status, [a["id"] for a in following["allocations"]]) == (200, [later])
        theirs = await _get(app, "bob", f"/v1/allocations?after={alloc_id}")
        never = await _get(app, "bob", f"/v1/allocations?after={NEVER_ALLOC}")
        assert theirs == never
        assert theirs[0] == 404
        assert await _get(app, "alice", f"/v1/allocations/{alloc_id}") == (200, before)
        assert await _get(app, "alice", f"/v1/allocations/{alloc_id}?wait=running&timeout=5") == (200, before)
        theirs = await _get(app, "bob", f"/v1/allocations/{alloc_id}")
        never = await _get(app, "bob", f"/v1/allocations/{NEVER_ALLOC}")
        assert theirs[0] == never[0] == 404
        assert str(theirs[1]).replace(alloc_id, "ID") == str(never[1]).replace(NEVER_ALLOC, "ID")

        await nc.subscribe(ALLOCATOR_STATE, cb=state_responder(engine))
        result = await check(store, [allocator_source(nc)])
        assert result.ok, [c.differences for c in result.comparisons]
        assert alloc_id not in result.models.allocations.allocations
        # The replay folded with the allocator's window: with its own default it would still
        # hold the allocation, and the check would have reported it.
        assert alloc_id in (await ReadModels.rebuild(store)).allocations.allocations

        again = AllocatorEngine(store, retention_s=WINDOW_S)
        await again.catch_up()
        resumed = AllocatorEngine(store, retention_s=WINDOW_S)
        await resumed.catch_up(resume=True)
        other = AllocatorEngine(store, retention_s=WINDOW_S * 2)
        await other.catch_up(resume=True)
        assert resumed.resumed_from > 0
        assert other.resumed_from == 0
        for started in (again, resumed):
            assert started.position == engine.position
            assert state_of(started.model) == state_of(engine.model)
            assert started.model.retirement == engine.model.retirement
