"""The sweep for lost gateways' sessions on a real NATS (the runs' entries) and a real log.

Two gateways sweep at once over the open sessions of four runs: one dead (its entry
put once, never again), one alive (put between sweeps), each sweeper's own, and a
session recorded before runs were. Must hold: the dead run's session gets exactly one
`SessionEnded` GATEWAY_LOST, written once however the two sweepers' appends race, and
no other session gets anything.
"""

import asyncio

from nats.aio.client import Client as NATS

from potluck.events import EventStore, Fold
from potluck.sshgateway.events import session_stream
from potluck.sshgateway.gateway_sweep import LostSessionSweep
from potluck.sshgateway.liveness import RunEntry
from potluck.sshgateway.projection import GatewayView
from tests.unit.test_gateway_reactions import started

LOST_AFTER = 30.0


class Clock:
    """The sweepers' monotonic clock, moved by the test instead of waiting half a minute."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_two_sweepers_end_a_dead_runs_session_once_and_nothing_else(
    store: EventStore, nc: NATS
) -> None:
    js = nc.jetstream()
    entries = {
        run: RunEntry(js, run, gateway="gw", refresh_s=1.0, replicas=None)
        for run in ("dead", "live", "a", "b")
    }
    for entry in entries.values():
        await entry.put()
    sessions = {"s-dead": "dead", "s-live": "live", "s-a": "a", "s-b": "b", "s-old": None}
    for session_id, run in sessions.items():
        await store.append(session_stream(session_id), [started(session_id, run)], expected_version=0)

    clock = Clock()
    sweepers = []
    for run in ("a", "b"):
        view = GatewayView()
        await Fold(view, reader="test").catch_up(store)
        sweepers.append(
            LostSessionSweep(
                store, view, entries[run], gateway="gw", lost_after_s=LOST_AFTER, interval_s=1.0, clock=clock
            )
        )

    async def sweep_at(now: float) -> list[str]:
        """Both sweep at once, the live runs having refreshed since the last look."""
        clock.now = now
        for run in ("live", "a", "b"):
            await entries[run].put()
        swept = await asyncio.gather(*(s.sweep() for s in sweepers))
        return sorted(session_id for ids in swept for session_id in ids)

    for now in (0.0, 15.0, 29.0):
        assert await sweep_at(now) == [], now
    # Both see the dead run unchanged for the grace and race; one append wins.
    assert await sweep_at(30.0) == ["s-dead"]
    records = await store.read_stream(session_stream("s-dead"))
    assert [r.type for r in records] == ["SessionStarted", "SessionEnded"]
    end = records[1]
    assert (end.data["reason"], end.data["bytes_in"], end.data["bytes_out"]) == ("GATEWAY_LOST", 0, 0)
    assert end.data["detail"] == "the gateway gw run dead stopped without ending the session"
    assert end.data["started_at"] == records[0].data["started_at"]
    assert end.metadata["recorded_by"] in ("gw run a", "gw run b")
    for session_id in ("s-live", "s-a", "s-b", "s-old"):
        assert [r.type for r in await store.read_stream(session_stream(session_id))] == ["SessionStarted"]

    # A sweeper whose view has not caught up with the end tries again and is refused quietly.
    assert await sweep_at(60.0) == []
    assert len(await store.read_stream(session_stream("s-dead"))) == 2


async def test_a_withdrawn_entry_is_absent_and_the_bucket_is_made_once(nc: NATS) -> None:
    js = nc.jetstream()
    one = RunEntry(js, "one", gateway="gw", refresh_s=1.0, replicas=None)
    two = RunEntry(js, "two", gateway="gw", refresh_s=1.0, replicas=None)
    await asyncio.gather(one.put(), two.put())  # both find no bucket and make it at once
    first = await one.revisions(["one", "two", "never"])
    assert first["never"] is None
    assert None not in (first["one"], first["two"])
    await one.put()
    await two.withdraw()
    after = await one.revisions(["one", "two"])
    assert after["two"] is None
    assert (after["one"] or 0) > (first["one"] or 0)
