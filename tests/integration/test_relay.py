"""The outbox relay on real Postgres and NATS servers."""

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pytest
from nats.aio.client import Client as NATS

from potluck.events import EVENTS_STREAM, EventStore, OutboxRelay, event_subscriber
from potluck.localstack import NatsServer
from tests.fixtures.sample_events import HostThingHappened, ThingHappened, sample
from tests.helpers import Received, append_raw_row, stop, wait_until


async def test_relay_publishes_the_log_in_order_with_msg_ids(store: EventStore, nc: NATS) -> None:
    recorded = await store.append("thing-1", [ThingHappened(thing_id="a", count=i) for i in range(50)])
    recorded += await store.append("host-h1", [HostThingHappened(host_id="h1", value=1)])
    relay = OutboxRelay(store, nc.jetstream(), batch_size=16)
    task = asyncio.create_task(relay.run())
    try:
        await wait_until(lambda: relay.checkpoint == recorded[-1].position, 10, "the relay to catch up")
        js = nc.jetstream()
        info = await js.stream_info(EVENTS_STREAM)
        assert info.state.messages == 51
        first = await js.get_msg(EVENTS_STREAM, seq=1)
        assert first.headers is not None
        assert first.headers["Nats-Msg-Id"] == str(recorded[0].event_id)
        last = await js.get_msg(EVENTS_STREAM, seq=51)
        assert last.subject == "potluck.evt.host.HostThingHappened.h1"
        stored = await js.get_msg(EVENTS_STREAM, seq=20)
        assert stored.headers is not None
        assert int(stored.headers["Potluck-Position"]) == recorded[19].position
    finally:
        await stop(task)


async def test_only_one_of_two_relays_leads(store: EventStore, nc: NATS) -> None:
    """Two relays on one log: one holds the lock, every event is in the stream once."""
    a = OutboxRelay(store, nc.jetstream(), retry_interval=0.1)
    b = OutboxRelay(store, nc.jetstream(), retry_interval=0.1)
    tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
    try:
        recorded = await store.append("thing-1", [ThingHappened(thing_id="a", count=i) for i in range(30)])
        await wait_until(lambda: max(a.checkpoint, b.checkpoint) == recorded[-1].position, 10, "catch-up")
        assert [a.is_leader, b.is_leader].count(True) == 1
        info = await nc.jetstream().stream_info(EVENTS_STREAM)
        assert info.state.messages == 30
        assert a.published + b.published == 30
    finally:
        await stop(*tasks)


def _start_relay_process(database_url: str, nats_url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "potluck",
                "--log-level",
                "DEBUG",
                "relay",
                "--database-url",
                database_url,
                "--nats-url",
                nats_url,
                "--batch-size",
                "100",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
async def test_relay_killed_mid_batch_resumes_without_loss_or_duplicates(
    store: EventStore, nats_server: NatsServer, nc: NATS, database_url: str, tmp_path: Path
) -> None:
    """SIGKILL the relay process while it is part-way through the log, start it again:
    a durable consumer receives every event exactly once."""
    total = 20_000
    appended: list[UUID] = []
    for chunk in range(0, total, 1000):
        appended += [
            r.event_id
            for r in await store.append(
                f"thing-{chunk}", [ThingHappened(thing_id="k", count=i) for i in range(1000)]
            )
        ]
    received = Received()
    consumer = event_subscriber(
        nc, durable="kill-test", subjects=["potluck.evt.>"], handle=received, events=sample
    )
    consuming = asyncio.create_task(consumer.run())
    log = tmp_path / "relay.log"
    relay = _start_relay_process(database_url, nats_server.url, log)
    try:

        async def checkpoint() -> int:
            value = await store.pool.fetchval("SELECT position FROM relay_checkpoints WHERE name = 'main'")
            return int(value or 0)

        deadline = asyncio.get_running_loop().time() + 60
        while (at := await checkpoint()) < 2000:
            assert relay.poll() is None, log.read_text()
            assert asyncio.get_running_loop().time() < deadline, "relay made no progress:\n" + log.read_text()
            await asyncio.sleep(0.01)
        os.kill(relay.pid, signal.SIGKILL)
        relay.wait()
        killed_at = await checkpoint()
        assert 0 < killed_at < (await store.head_position()), "the kill must land mid-log"

        relay = _start_relay_process(database_url, nats_server.url, log)
        await wait_until(lambda: len(received.counts) >= total, 90, "every event at the consumer")
        await asyncio.sleep(0.5)  # give any duplicate a chance to arrive
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(timeout=20)
        await stop(consuming)
    assert set(received.counts) == set(appended)
    assert max(received.counts.values()) == 1
    assert received.positions == sorted(received.positions)
    assert at >= 2000


async def test_a_row_no_publish_can_carry_is_skipped_and_the_relay_goes_on(
    store: EventStore, nc: NATS
) -> None:
    """Tried: rows in the log that no publish could ever carry, ahead of a good event: a routing
    key with a space, a type with a wildcard, a stream category with a dot, data bigger than
    nats-server's max_payload; and a row whose metadata is a JSON array, not an object.
    Must hold: the relay publishes the good event after them (before, it raised on the first and
    every service running a relay exited into the same row again); the array-metadata row goes
    out with metadata read as none; the four others are skipped, each counted once."""
    thing = '{"thing_id": "a", "count": 1}'
    skipped = [
        await append_raw_row(store, "host-h1", "HostThingHappened", "{}", '{"routing_key": "h1 h2"}'),
        await append_raw_row(store, "thing-2", "Thing>Happened", thing, "{}"),
        await append_raw_row(store, "th.ing-3", "ThingHappened", thing, "{}"),
        await append_raw_row(
            store, "thing-4", "ThingHappened", json.dumps({"pad": "x" * (nc.max_payload + 1)}), "{}"
        ),
    ]
    odd_metadata = await append_raw_row(store, "thing-5", "ThingHappened", thing, "[1, 2]")
    good = await store.append("thing-1", [ThingHappened(thing_id="a", count=2)])
    relay = OutboxRelay(store, nc.jetstream(), batch_size=3, retry_interval=0.1)
    task = asyncio.create_task(relay.run())
    try:
        await wait_until(
            lambda: relay.checkpoint >= good[-1].position or task.done(), 20, "the relay past the rows"
        )
        assert not task.done(), task.exception()
        assert relay.checkpoint == good[-1].position
        assert relay.skipped == len(skipped)
        js = nc.jetstream()
        info = await js.stream_info(EVENTS_STREAM)
        assert info.state.messages == 2
        first = await js.get_msg(EVENTS_STREAM, seq=1)
        last = await js.get_msg(EVENTS_STREAM, seq=2)
        assert first.headers is not None
        assert last.headers is not None
        assert int(first.headers["Potluck-Position"]) == odd_metadata
        assert first.headers["Potluck-Metadata"] == "{}"
        assert int(last.headers["Potluck-Position"]) == good[-1].position
    finally:
        await stop(task)


async def test_a_service_that_crashes_says_so_in_one_json_line(
    store: EventStore, nats_server: NatsServer, database_url: str, tmp_path: Path
) -> None:
    """Tried: `potluck relay` (a service as `serve` runs them all) started on a log whose
    relay_checkpoints table was dropped by hand: a failure nothing in it expects.
    Must hold: it exits with code 1 and every line of its log is JSON: one `relay.crashed` error
    naming the exception, its traceback inside the line's `exception` (before, Python's bare
    traceback was printed across dozens of lines that no log reader parses)."""
    await store.pool.execute("DROP TABLE relay_checkpoints")
    log = tmp_path / "relay.log"
    relay = _start_relay_process(database_url, nats_server.url, log)
    try:
        code = await asyncio.to_thread(relay.wait, 60)
    finally:
        if relay.poll() is None:
            relay.kill()
    said = log.read_text()
    assert code == 1, said
    lines = [json.loads(line) for line in said.splitlines()]  # raises on a line that is not JSON
    [crashed] = [line for line in lines if line["event"] == "relay.crashed"]
    assert crashed["level"] == "error"
    assert 'relation "relay_checkpoints" does not exist' in crashed["error"]
    assert crashed["exception"].startswith("Traceback")
