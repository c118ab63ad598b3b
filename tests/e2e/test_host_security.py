"""One host cannot act as another, nor read another's placements (NATS permissions), nor have
the services answer it anywhere but in its own inbox."""

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable

import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from potluck.contracts.messages import Heartbeat, Reply
from potluck.contracts.reports import UsageSampled
from potluck.contracts.subjects import CONTROL, DESIRED, REGISTER, STATUS, host_consumer, inbox_prefix
from potluck.events import EVENTS_STREAM, REPORTS_STREAM
from potluck.events.bus import STREAM_SPECS
from potluck.localstack.docker_engine import DockerEngine
from potluck.registry.service import REQUEST_RATE
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


async def _answered(nc: NATS, subject: str, payload: bytes = b"{}") -> Reply:
    return Reply.model_validate_json((await nc.request(subject, payload, timeout=10)).data)


async def test_a_host_cannot_direct_the_services_answers_elsewhere(
    pool: Pool, two_laptops: tuple[EnrolledHost, EnrolledHost]
) -> None:
    """A sends requests the registry and the allocator answer (status, register, control,
    desired state), each on its own subjects but naming as reply subject B's inbox, B's report
    subject, or the JetStream API (purge the reports stream). Before: the services published
    there with their unrestricted identity: into B's inbox, and a "report" stored in the
    reports stream under B's name. Afterwards: nothing reaches B's inbox or B's reports, the
    reports stream keeps every message, each forged request is refused, logged and counted,
    and A's own requests (own inbox) are answered as before."""
    a, b = two_laptops
    services = await pool.client()
    js = services.jetstream()
    await wait_until(lambda: _reports_held(js), "hostd's first reports")
    reports_before = (await js.stream_info(REPORTS_STREAM)).state.messages
    spy_errors: list[str] = []
    as_b = await pool.client(b, errors=spy_errors)
    landed_in_b: list[str] = []

    async def spy(msg: Msg) -> None:
        landed_in_b.append(msg.subject)

    await as_b.subscribe(f"{inbox_prefix(b.host_id)}.forged.>", cb=spy)
    await as_b.flush()
    as_a = await pool.client(a)
    purge = f"$JS.API.STREAM.PURGE.{REPORTS_STREAM}"
    into_b = f"{inbox_prefix(b.host_id)}.forged.x"
    b_report = f"potluck.report.{b.host_id}.started"
    b_started_before = (await _subject_counts(js, b_report)).get(b_report, 0)
    forged = [
        (f"{STATUS}.{a.host_id}", purge),
        (f"{REGISTER}.{a.host_id}", purge),
        (f"{CONTROL}.{a.host_id}", into_b),
        (f"{STATUS}.{a.host_id}", into_b),
        (f"{DESIRED}.{a.host_id}", purge),
        (f"{DESIRED}.{a.host_id}", into_b),
        (f"{STATUS}.{a.host_id}", b_report),
        (f"{DESIRED}.{a.host_id}", b_report),
        (f"{STATUS}.{a.host_id}", f"{inbox_prefix(a.host_id)}.*"),
    ]
    try:
        for subject, reply in forged:
            await as_a.publish(subject, b"{}", reply=reply)
        # Each subscription handles its messages in order: once A's own request on a subject is
        # answered, the forged ones before it were handled.
        assert (await _answered(as_a, f"{STATUS}.{a.host_id}")).ok
        assert (await _answered(as_a, f"{REGISTER}.{a.host_id}")).error["code"] == "BAD_REQUEST"  # type: ignore[index]
        assert (await _answered(as_a, f"{CONTROL}.{a.host_id}")).error["code"] == "BAD_REQUEST"  # type: ignore[index]
        assert (await _answered(as_a, f"{DESIRED}.{a.host_id}")).ok
        await as_b.flush()
        await asyncio.sleep(0.5)
    finally:
        await as_a.close()
        await as_b.close()
    assert landed_in_b == []
    assert (await _subject_counts(js, b_report)).get(b_report, 0) == b_started_before
    assert (await js.stream_info(REPORTS_STREAM)).state.messages >= reports_before, pool.logs()
    refused = (await pool.live_hosts())["refused"]["reply_subjects"]
    assert refused.get(a.host_id) == 6, refused
    assert b.host_id not in refused
    allocator_log = pool.processes["allocator"].log_tail(400)
    assert allocator_log.count("bus.reply_refused") == 3, allocator_log
    await services.close()


async def _reports_held(js: JetStreamContext) -> bool:
    return (await js.stream_info(REPORTS_STREAM)).state.messages > 0


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never saw {what}")
        await asyncio.sleep(0.1)


async def test_a_host_in_a_loop_is_refused_and_bounded_while_others_are_served(
    pool: Pool, two_laptops: tuple[EnrolledHost, EnrolledHost]
) -> None:
    """A sends requests, heartbeats and reports in a loop. Before: the registry served every
    request and beat, and the reports stream (age limit only) kept every report, and took
    reports on subjects A made up. Afterwards: A's requests beyond its rate are answered
    RATE_LIMITED and its beats beyond it ignored, counted per host and logged, while B's are
    served; A's reports are bounded per subject (its oldest go, no one else's), and a report
    kind that does not exist is refused by NATS."""
    a, b = two_laptops
    services = await pool.client()
    js = services.jetstream()
    errors: list[str] = []
    as_a = await pool.client(a, errors=errors)
    as_b = await pool.client(b)
    limits = STREAM_SPECS[REPORTS_STREAM]
    try:
        b_before = await _subject_counts(js, f"potluck.report.{b.host_id}.>")
        assert b_before, "B has reported nothing yet"

        replies = await asyncio.gather(
            *(_answered(as_a, f"{STATUS}.{a.host_id}") for _ in range(int(REQUEST_RATE.burst) * 3))
        )
        limited = [r for r in replies if not r.ok and (r.error or {}).get("code") == "RATE_LIMITED"]
        assert len(limited) >= REQUEST_RATE.burst, [r.error for r in replies]
        assert (await _answered(as_b, f"{STATUS}.{b.host_id}")).ok

        beat = Heartbeat(hostd_version="loop").model_dump_json().encode()
        for _ in range(200):
            await as_a.publish(f"potluck.hb.{a.host_id}", beat)
        await as_a.flush()

        usage = UsageSampled(samples=[]).model_dump_json().encode()
        acks = [
            await as_a.jetstream().publish_async(f"potluck.report.{a.host_id}.usage", usage)
            for _ in range(limits.max_msgs_per_subject + 50)
        ]
        await asyncio.gather(*acks)
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await as_a.jetstream().publish(f"potluck.report.{a.host_id}.made-up", usage, timeout=1)

        a_after = await _subject_counts(js, f"potluck.report.{a.host_id}.>")
        assert a_after[f"potluck.report.{a.host_id}.usage"] == limits.max_msgs_per_subject
        assert f"potluck.report.{a.host_id}.made-up" not in a_after
        b_after = await _subject_counts(js, f"potluck.report.{b.host_id}.>")
        assert all(b_after.get(subject, 0) >= n for subject, n in b_before.items()), (b_before, b_after)
    finally:
        await as_a.close()
        await as_b.close()
        await services.close()
    refused = (await pool.live_hosts())["refused"]
    assert refused["requests_over_rate"].get(a.host_id, 0) >= REQUEST_RATE.burst, refused
    assert refused["beats_over_rate"].get(a.host_id, 0) > 0, refused
    assert b.host_id not in refused["requests_over_rate"]
    assert b.host_id not in refused["beats_over_rate"]
    assert "registry.host_rate_exceeded" in pool.processes["registry"].log_tail(400)
    assert any("permissions violation" in e.lower() and "made-up" in e for e in errors), errors
    await pool.wait_for_host(b.host_id, "online")


async def _subject_counts(js: JetStreamContext, subjects: str) -> dict[str, int]:
    info = await js.stream_info(REPORTS_STREAM, subjects_filter=subjects)
    return dict(info.state.subjects or {})
