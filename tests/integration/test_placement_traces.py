"""A desired-state snapshot's trace contexts, read back from the log on a real Postgres."""

from potluck.allocator.placement_traces import placement_traces
from potluck.events import EventStore, NewEvent
from potluck.readmodels.allocations import AllocationState
from tests.fixtures.pool import spec
from tests.fixtures.sample_events import ThingHappened

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def placed(alloc_id: str, position: int | None) -> AllocationState:
    return AllocationState(
        alloc_id=alloc_id,
        user="alice",
        spec=spec(),
        lifetime_s=60.0,
        status="placed",
        placed_position=position,
    )


async def test_each_placement_gets_the_trace_context_it_was_logged_in(store: EventStore) -> None:
    """What is tried: three placements, one logged inside a trace, one outside any, one whose
    position the log does not hold. What must hold: only the first gets a carrier, exactly the
    one logged; `read_at` returns what the log holds at those positions, in log order."""
    traced, untraced = await store.append(
        "thing-1",
        [
            NewEvent(ThingHappened(thing_id="t1", count=1), metadata={"traceparent": TRACEPARENT}),
            NewEvent(ThingHappened(thing_id="t2", count=2)),
        ],
    )
    missing = untraced.position + 1000

    read = await store.read_at([missing, untraced.position, traced.position])
    assert [r.position for r in read] == [traced.position, untraced.position]

    carriers = await placement_traces(
        store, [placed("a", traced.position), placed("b", untraced.position), placed("c", missing)]
    )
    assert carriers == {"a": {"traceparent": TRACEPARENT}}
    assert await placement_traces(store, [placed("d", None)]) == {}


async def test_a_database_away_costs_the_snapshot_its_traces_not_the_snapshot(database_url: str) -> None:
    """What is tried: the lookup on a store whose connections are gone (closed pool). What must
    hold: no error reaches the snapshot's answer; it goes without trace contexts."""
    gone = await EventStore.open(database_url)
    await gone.close()
    assert await placement_traces(gone, [placed("a", 1)]) == {}
