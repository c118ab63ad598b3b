"""One host cannot act as another, nor read another's placements (NATS permissions)."""

import asyncio
import os
import signal

import nats.errors
import nats.js.errors
import pytest
from nats.aio.msg import Msg

from potluck.contracts.messages import Heartbeat
from potluck.contracts.subjects import host_consumer
from potluck.events import EVENTS_STREAM
from potluck.localstack.docker_engine import DockerEngine
from tests.fixtures.pool import EnrolledHost, Pool, place, spec


@pytest.fixture
async def two_laptops(pool: Pool, docker_engines: list[DockerEngine]) -> tuple[EnrolledHost, EnrolledHost]:
    a = await pool.enroll("laptop-a")
    b = await pool.enroll("laptop-b")
    for host, engine in ((a, docker_engines[0]), (b, docker_engines[1])):
        pool.write_config(host, engine)
        pool.start_hostd(host)
    await pool.wait_for_host(a.host_id, "online")
    await pool.wait_for_host(b.host_id, "online")
    return a, b


async def test_a_host_cannot_beat_or_report_as_another(
    pool: Pool, two_laptops: tuple[EnrolledHost, EnrolledHost]
) -> None:
    """B falls silent; A publishes heartbeats and a report under B's subjects. NATS refuses
    them, so B still goes suspect and no report of A's lands under B's name."""
    a, b = two_laptops
    assert b.process is not None
    assert b.process.pid is not None
    errors: list[str] = []
    nc = await pool.client(a, errors=errors)
    os.kill(b.process.pid, signal.SIGSTOP)
    try:
        beat = Heartbeat(hostd_version="forged").model_dump_json().encode()
        for _ in range(20):
            await nc.publish(f"potluck.hb.{b.host_id}", beat)
            await asyncio.sleep(0.05)
        await nc.flush()
        await pool.wait_for_host(b.host_id, "suspect", timeout=5)
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await nc.jetstream().publish(f"potluck.report.{b.host_id}.started", b"{}", timeout=1)
    finally:
        os.kill(b.process.pid, signal.SIGCONT)
        await nc.close()
    assert any("permissions violation" in e.lower() and f"potluck.hb.{b.host_id}" in e for e in errors), (
        errors
    )
    js = (await pool.client()).jetstream()
    info = await js.stream_info("POTLUCK_REPORTS")
    for seq in range(1, info.state.last_seq + 1):
        msg = await js.get_msg("POTLUCK_REPORTS", seq=seq)
        assert not ((msg.subject or "").startswith(f"potluck.report.{b.host_id}.") and msg.data == b"{}")


async def test_a_host_cannot_read_another_hosts_placements(
    pool: Pool, two_laptops: tuple[EnrolledHost, EnrolledHost]
) -> None:
    """A tries B's consumer, a consumer of its own, and a plain subscription to events: all refused."""
    a, b = two_laptops
    await place(pool.store, b.host_id, "b-secret", spec())
    errors: list[str] = []
    nc = await pool.client(a, errors=errors)
    js = nc.jetstream()
    try:
        sub = await js.pull_subscribe_bind(durable=host_consumer(b.host_id), stream=EVENTS_STREAM)
        with pytest.raises((nats.errors.TimeoutError, nats.js.errors.APIError)):
            await sub.fetch(1, timeout=1)
        with pytest.raises(
            (nats.errors.TimeoutError, nats.js.errors.APIError, nats.errors.NoRespondersError)
        ):
            await js.add_consumer(
                EVENTS_STREAM, durable_name="spy", filter_subject="potluck.evt.>", timeout=1
            )
        seen: list[bytes] = []

        async def spy(msg: Msg) -> None:
            seen.append(msg.data)

        await nc.subscribe("potluck.evt.>", cb=spy)
        await nc.flush()
        await place(pool.store, b.host_id, "b-secret-2", spec())
        await asyncio.sleep(1)
        assert seen == []
    finally:
        await nc.close()
    assert any("permissions violation" in e.lower() for e in errors), errors
