"""One host cannot act as another, nor read another's placements (NATS permissions), nor have
the services answer it anywhere but in its own inbox."""

import asyncio
import contextlib
import os
import signal
from collections import Counter
from collections.abc import Awaitable, Callable

import aiohttp
import docker
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from potluck.allocator.host_rates import DESIRED_RATE, IMAGE_TOKEN_RATE
from potluck.allocator.service import ENGINE_LOG_RATE, LOGGED_DETAIL
from potluck.contracts.host_events import host_stream
from potluck.contracts.messages import Heartbeat, ImageTokenRequest, Reply
from potluck.contracts.reports import DETAIL_CHARS, EngineStatus, UsageSampled
from potluck.contracts.subjects import (
    CONTROL,
    DESIRED,
    IMAGE_TOKEN,
    LOG_TAIL,
    REGISTER,
    STATUS,
    host_consumer,
    inbox_prefix,
)
from potluck.events import DEAD_LETTER_STREAM, EVENTS_STREAM, REPORTS_STREAM
from potluck.events.bus import STREAM_SPECS, dead_letter_subject
from potluck.hostd.container_config import ContainerSpec
from potluck.hostd.docker_driver import DockerDriver, DockerDriverError
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG
from potluck.registry.service import REQUEST_RATE
from tests.e2e.conftest import start_laptop, wait_for_status
from tests.fixtures.pool import EnrolledHost, Pool, allocation, place, release, spec
from tests.helpers import json_log


@pytest.fixture
async def two_laptops(pool: Pool, docker_engines: list[DockerEngine]) -> tuple[EnrolledHost, EnrolledHost]:
    a = await pool.enroll("laptop-a")
    b = await pool.enroll("laptop-b")
    for host, engine in ((a, docker_engines[0]), (b, docker_engines[1])):
        pool.write_config(host, engine)
        pool.start_hostd(host)
    await pool.central_services_ready()  # see HOST_FIXTURES_THAT_WAIT
    await pool.wait_for_host(a.host_id, "active")
    await pool.wait_for_host(b.host_id, "active")
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
        await pool.wait_for_host(b.host_id, "unreachable", timeout=5)
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
        # "active" comes from B's registration; its first report may follow a moment later.
        b_reports = f"potluck.report.{b.host_id}.>"
        await wait_until(lambda: _has_reports(js, b_reports), "a report from B before the loop")
        b_before = await _subject_counts(js, b_reports)

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
    await pool.wait_for_host(b.host_id, "active")


async def test_a_report_another_host_pushed_out_through_jetstreams_answers_is_made_good(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """NATS does not check the reply subject of a request, and JetStream answers a pull request
    on the asker's own consumer into whatever reply subject it names: a host can so have the
    server publish onto another host's report subjects, where its own permissions would refuse.
    Tried: with the allocator stopped, A's task exits (its `exited` report waits in the stream);
    B, with its own credentials, asks for its own consumer's next message 120 times naming A's
    `exited` subject as the reply, and JetStream's answers push A's report out of the subject's
    bound. Must hold: A's report is gone (the attack worked), and yet, once the allocator is
    back, A's next state report (every 3 s here, 5 minutes by default) ends the allocation as
    exited with the task's own exit code: it does not hold A's capacity as `running`."""
    timing = {"heartbeat_interval_s": pool.liveness[0], "drain_grace_s": 2, "state_report_interval_s": 3}
    a = await start_laptop(pool, docker_engines[0], "laptop-a", timing=timing)
    b = await start_laptop(pool, docker_engines[1], "laptop-b")
    await place(pool.store, a.host_id, "task", spec(command=["sh", "-c", "sleep 6; exit 7"]))
    await wait_for_status(pool, "task", "running")
    pool.processes["allocator"].stop()

    services = await pool.client()
    js = services.jetstream()
    as_b = await pool.client(b)
    exited = f"potluck.report.{a.host_id}.exited"
    try:
        await wait_until(lambda: _has_reports(js, exited), "A's exited report in the stream", timeout=30)
        first = await js.get_msg(REPORTS_STREAM, subject=exited, seq=1, next=True)
        assert first.data, "A's own report has a body"
        pull = f"$JS.API.CONSUMER.MSG.NEXT.{EVENTS_STREAM}.{host_consumer(b.host_id)}"
        for _ in range(STREAM_SPECS[REPORTS_STREAM].max_msgs_per_subject + 20):
            await as_b.publish(pull, b'{"batch": 1, "no_wait": true}', reply=exited)
        await as_b.flush()

        async def pushed_out() -> bool:
            oldest = await js.get_msg(REPORTS_STREAM, subject=exited, seq=1, next=True)
            return not oldest.data  # JetStream's empty "no messages" answers, nothing of A's

        await wait_until(pushed_out, "A's report pushed out by JetStream's answers to B")
    finally:
        await as_b.close()
        await services.close()

    pool.start_allocator(port=pool.api_port)
    await pool.wait_api()
    await wait_for_status(pool, "task", "exited", timeout=60)
    state = await allocation(pool.store, "task")
    assert state is not None
    assert state.exit_code == 7


async def test_a_host_flooding_reports_and_poison_does_not_flood_the_services_logs(
    pool: Pool, two_laptops: tuple[EnrolledHost, EnrolledHost]
) -> None:
    """Tried: B publishes 150 engine reports with a detail as long as a report may carry
    (DETAIL_CHARS; a longer one is a dead letter), then 150 messages that
    are no report, on its own subjects. Must hold: the allocator logs only the first of B's
    engine reports (ENGINE_LOG_RATE's burst, and what refills meanwhile), each detail cut to
    LOGGED_DETAIL characters, and says it now logs them sparingly; of the poison it logs a
    burst and says so, while each it read is still kept as a dead letter; A's engine report
    afterwards is logged."""
    a, b = two_laptops
    services = await pool.client()
    js = services.jetstream()
    as_a = await pool.client(a)
    as_b = await pool.client(b)
    dlq = dead_letter_subject("allocator-reports")
    try:
        before = (await js.stream_info(DEAD_LETTER_STREAM, subjects_filter=dlq)).state.subjects or {}
        engine = EngineStatus(available=False, detail="y" * DETAIL_CHARS).model_dump_json().encode()
        for _ in range(150):
            await as_b.jetstream().publish(f"potluck.report.{b.host_id}.engine", engine)
        for n in range(150):
            await as_b.jetstream().publish(f"potluck.report.{b.host_id}.usage", b"not a report %d" % n)

        async def all_dead_lettered() -> bool:
            info = await js.stream_info(DEAD_LETTER_STREAM, subjects_filter=dlq)
            # The subject keeps its newest 100 (its bound): at least these reach the allocator.
            return (info.state.subjects or {}).get(dlq, 0) - before.get(dlq, 0) >= bound

        bound = STREAM_SPECS[REPORTS_STREAM].max_msgs_per_subject
        await wait_until(all_dead_lettered, "B's messages that are no report dead-lettered", timeout=60)
        mark = EngineStatus(available=True, detail="engine of A is back").model_dump_json().encode()
        await as_a.jetstream().publish(f"potluck.report.{a.host_id}.engine", mark)

        allocator_log = pool.workdir / "allocator.log"

        async def a_logged() -> bool:
            return any(e.get("detail") == "engine of A is back" for e in json_log(allocator_log))

        await wait_until(a_logged, "A's engine report in the allocator's log")
    finally:
        await as_a.close()
        await as_b.close()
        await services.close()
    entries = json_log(allocator_log)
    b_engine = [
        e for e in entries if e.get("event") == "allocator.host_engine" and e.get("host_id") == b.host_id
    ]
    assert 1 <= len(b_engine) <= ENGINE_LOG_RATE.burst + 5, len(b_engine)  # hostd's own report too
    assert all(len(e["detail"]) == LOGGED_DETAIL for e in b_engine if e["detail"].startswith("y"))
    assert any(e.get("event") == "allocator.host_engine_reports_logged_sparingly" for e in entries)
    b_usage = f"potluck.report.{b.host_id}.usage"
    poison = [
        e for e in entries if e.get("event") == "subscriber.dead_letter" and e.get("subject") == b_usage
    ]
    assert 1 <= len(poison) < 100, len(poison)
    assert any(
        e.get("event") == "subscriber.dead_letters_logged_sparingly" and e.get("subject") == b_usage
        for e in entries
    )


async def _has_reports(js: JetStreamContext, subjects: str) -> bool:
    return bool(await _subject_counts(js, subjects))


async def _subject_counts(js: JetStreamContext, subjects: str) -> dict[str, int]:
    info = await js.stream_info(REPORTS_STREAM, subjects_filter=subjects)
    return dict(info.state.subjects or {})


async def _exec(driver: DockerDriver, alloc_id: str, host_id: str, command: str) -> tuple[int, str]:
    [container] = [c for c in driver.list_managed(host_id) if c.allocation_id == alloc_id]
    result = await asyncio.to_thread(driver.exec_run, container.container_id, ["sh", "-c", command])
    return result.exit_code, result.output.decode(errors="replace")


async def test_members_decide_what_runs_and_containers_keep_their_secrets_and_their_distance(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """Laptop A allows `potluck-test:*` and no network; laptop B allows networks (internal ones,
    as its engine runs without iptables). Tried, and what must hold:
    - an image whose `*`-matched text names another registry (`potluck-test:5000/evil/img:1`)
      is refused by A's hostd as image_not_allowed, not pulled;
    - a networked allocation sent to A anyway fails as network_not_allowed; asked through the
      API, one is placed on B, whose registration says it allows networks, and one that only
      A's labels match is refused (422 NO_HOST_ALLOWS_NETWORK);
    - two networked containers on B each have a network of their own (never the default
      bridge): each reaches its own server, neither reaches the other's; releasing one
      removes its network;
    - a container name already taken, made from another spec with a secret in its
      environment, makes the allocation fail naming the differing fields: neither secret
      shows in the failure event or any service's log."""
    a = await pool.enroll("laptop-a")
    b = await pool.enroll("laptop-b")
    pool.write_config(a, docker_engines[0], allowed_images=["potluck-test:*"])
    pool.write_config(b, docker_engines[1], allow_network=True, internal_network=True)
    for host in (a, b):
        pool.start_hostd(host)
    await pool.wait_for_host(a.host_id, "active")
    await pool.wait_for_host(b.host_id, "active")
    hosts = (await pool.hosts()).hosts
    assert (hosts[a.host_id].allow_network, hosts[b.host_id].allow_network) == (False, True)

    await place(pool.store, a.host_id, "evil", spec(image="potluck-test:5000/evil/img:1"))
    networked = spec().model_copy(update={"network": True})
    await place(pool.store, a.host_id, "net-on-a", networked)
    await wait_for_status(pool, "evil", "failed")
    await wait_for_status(pool, "net-on-a", "failed")
    evil, net_on_a = await allocation(pool.store, "evil"), await allocation(pool.store, "net-on-a")
    assert evil is not None
    assert evil.reason == "image_not_allowed"
    assert net_on_a is not None
    assert net_on_a.reason == "network_not_allowed"

    await pool.wait_api()
    token = await pool.add_user("alice")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        body = {"cpus": 0.5, "memory": "64M", "disk": "64M", "image": DEFAULT_TAG, "network": True,
                "command": ["sh", "-c", "echo served > /index.html; httpd -f -p 8080 -h /"]}  # fmt: skip
        async with http.post(
            pool.api + "/v1/allocations", json={**body, "constraints": {"name": "laptop-a"}}
        ) as r:
            assert (r.status, (await r.json())["error"]["code"]) == (422, "NO_HOST_ALLOWS_NETWORK")
        async with http.post(pool.api + "/v1/allocations", json=body) as response:
            created = await response.json()
            assert response.status == 201, created
    assert created["host_id"] == b.host_id
    server = networked.model_copy(update={"command": body["command"]})
    await place(pool.store, b.host_id, "other", server)
    await wait_for_status(pool, created["id"], "running")
    await wait_for_status(pool, "other", "running")

    with DockerDriver(docker_engines[1].url) as driver:
        addresses = {}
        for alloc_id in (created["id"], "other"):
            [container] = [c for c in driver.list_managed(b.host_id) if c.allocation_id == alloc_id]
            networks = driver.inspect(container.container_id)["NetworkSettings"]["Networks"]
            assert list(networks) == [f"potluck-{alloc_id}"]
            addresses[alloc_id] = networks[f"potluck-{alloc_id}"]["IPAddress"]
            assert addresses[alloc_id]
        for alloc_id, address in addresses.items():
            # busybox wget's own -T crashes (static build); timeout bounds it instead. A try
            # before httpd listens (a loaded machine) says so on stderr: not the answer checked.
            fetch = (
                "for i in 1 2 3 4 5 6 7 8 9 10; do "
                f"timeout 2 wget -q -O - http://{address}:8080/ 2>/dev/null && exit 0; "
                "sleep 0.5; done; exit 1"
            )
            assert await _exec(driver, alloc_id, b.host_id, fetch) == (0, "served\n")
            [peer] = [p for p in addresses if p != alloc_id]
            code, output = await _exec(
                driver, peer, b.host_id, f"timeout 3 wget -q -O - http://{address}:8080/"
            )
            assert code != 0
            assert "served" not in output
        await release(pool.store, b.host_id, "other")
        await wait_for_status(pool, "other", "released")
        client = docker.DockerClient(base_url=docker_engines[1].url)
        try:
            for _ in range(50):
                if "potluck-other" not in {n.name for n in client.networks.list()}:
                    break
                await asyncio.sleep(0.2)
            names = {n.name for n in client.networks.list()}
            assert "potluck-other" not in names
            assert f"potluck-{created['id']}" in names
        finally:
            client.close()

    # A container left by another spec under the allocation's name: the failure names fields only.
    leftover = ContainerSpec(
        allocation_id="dup", host_id="elsewhere", image=DEFAULT_TAG, cpus=0.5, memory_bytes=64 << 20,
        disk_bytes=64 << 20, pids_limit=64, command=["sleep", "3600"], env={"TOKEN": "first-s3cret"},
    )  # fmt: skip
    with DockerDriver(docker_engines[0].url) as driver:
        await asyncio.to_thread(driver.run, leftover)
        try:
            await place(
                pool.store, a.host_id, "dup", spec().model_copy(update={"env": {"TOKEN": "second-s3cret"}})
            )
            await wait_for_status(pool, "dup", "failed")
        finally:
            with contextlib.suppress(DockerDriverError):  # hostd may be removing it already
                await asyncio.to_thread(driver.remove, "potluck-dup")
    failed = [e.data_json for e in await pool.store.read_stream("alloc-dup") if e.type == "AllocationFailed"]
    assert failed, pool.logs()
    detail = "\n".join(failed)
    assert "env" in detail
    for secret in ("first-s3cret", "second-s3cret"):
        assert secret not in detail
        for log in pool.workdir.glob("*.log"):
            assert secret not in log.read_text(errors="replace"), log.name


async def test_a_placement_past_the_members_donation_is_refused_by_hostd(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """The member donates 1 CPU, 256M of memory and 1G of disk. Tried: placements appended to
    the log exactly as the allocator appends them, but past what the allocator's books allow (a
    buggy or compromised allocator): one of 0.75 CPU that fits, then one of 0.5 CPU (1.25 with
    the first), one of 224M of memory (288M with the first's 64M), and one of 1G of disk (1.0625G
    with the first's 64M); then the member lowers the donation to 0.5 CPU and restarts hostd.
    Must hold: the first runs and is never disturbed by the others; each other fails as
    beyond_donation (not invalid_spec, which reads as the user's fault) with a detail naming the
    resource and the donation, and no container of it ever exists on the member's engine;
    after the restart the first, which no longer fits, fails the same way and its container is
    gone: the member's caps hold whatever is placed."""
    engine = docker_engines[0]
    a = await pool.enroll("laptop-a")
    donate = {"cpus": 1, "memory": "256M", "disk": "1G"}
    pool.write_config(a, engine, donate=donate)
    pool.start_hostd(a)
    await pool.wait_for_host(a.host_id, "active")

    await place(pool.store, a.host_id, "fits", spec(cpus=0.75))
    await wait_for_status(pool, "fits", "running")
    past = {
        "past-cpus": (spec(cpus=0.5), "1.25 CPUs of the 1 donated"),
        "past-memory": (spec(cpus=0.1, memory=224 << 20), "288M of the 256M of memory donated"),
        "past-disk": (spec(cpus=0.1, disk=1 << 30), "of the 1G of disk donated"),
    }
    for alloc_id, (wanted, _) in past.items():
        await place(pool.store, a.host_id, alloc_id, wanted)
    for alloc_id, (_, named) in past.items():
        await wait_for_status(pool, alloc_id, "failed")
        state = await allocation(pool.store, alloc_id)
        assert state is not None
        assert state.reason == "beyond_donation", state
        assert "placed past this host's donation" in (state.detail or ""), state.detail
        assert named in (state.detail or ""), state.detail
    with DockerDriver(engine.url) as driver:
        names = {c.allocation_id for c in driver.list_managed(a.host_id)}
    assert names == {"fits"}, names
    fits = await allocation(pool.store, "fits")
    assert fits is not None
    assert fits.status == "running", fits

    assert a.process is not None
    a.process.stop(timeout=30)
    pool.write_config(a, engine, donate={**donate, "cpus": 0.5})
    pool.start_hostd(a)
    await wait_for_status(pool, "fits", "failed")
    lowered = await allocation(pool.store, "fits")
    assert lowered is not None
    assert lowered.reason == "beyond_donation", lowered
    assert "0.75 CPUs of the 0.5 donated" in (lowered.detail or ""), lowered.detail
    with DockerDriver(engine.url) as driver:
        deadline = asyncio.get_running_loop().time() + 15
        while driver.list_managed(a.host_id):
            assert asyncio.get_running_loop().time() < deadline, driver.list_managed(a.host_id)
            await asyncio.sleep(0.2)


async def test_a_host_asking_the_allocator_in_a_loop_is_refused_while_others_are_served(
    pool: Pool, two_laptops: tuple[EnrolledHost, EnrolledHost]
) -> None:
    """A, with its own credentials, asks the allocator for its desired state in a loop (three
    bursts' worth at once), then for registry tokens for allocations it does not hold. Before:
    the allocator scanned the pool's allocations and read the log for every one (a loop of
    850,000 in 8 s held its answers to users at 0.1-0.45 s and dropped other hosts' requests as
    a slow consumer), and logged every token refusal. Afterwards: A's requests past its rate are
    answered RATE_LIMITED without that work, B's desired state and the API are answered at once
    meanwhile, and the allocator's log holds a few lines about A's loop, not one per request."""
    a, b = two_laptops
    as_a = await pool.client(a)
    as_b = await pool.client(b)
    allocator_log = pool.processes["allocator"].log_path
    try:
        burst = int(DESIRED_RATE.burst)
        replies = await asyncio.gather(*(_answered(as_a, f"{DESIRED}.{a.host_id}") for _ in range(burst * 3)))
        limited = [r for r in replies if not r.ok and (r.error or {}).get("code") == "RATE_LIMITED"]
        assert len(limited) >= burst, [r.error for r in replies]
        assert "faster than 1 a second" in str(limited[0].error)
        assert (await _answered(as_b, f"{DESIRED}.{b.host_id}")).ok

        request = ImageTokenRequest(alloc_id="a-000000000000", image=f"{DEFAULT_TAG}").model_dump_json()
        tokens = int(IMAGE_TOKEN_RATE.burst) + 400
        loop = asyncio.get_running_loop()
        started = loop.time()
        replies = await asyncio.gather(
            *(_answered(as_a, f"{IMAGE_TOKEN}.{a.host_id}", request.encode()) for _ in range(tokens))
        )
        # What the bucket may admit: its burst, and what it refilled while the loop ran (a
        # loaded machine answers the 900 requests in seconds rather than a fraction of one).
        admissible = int(IMAGE_TOKEN_RATE.burst + IMAGE_TOKEN_RATE.per_s * (loop.time() - started + 1))
        codes = Counter((r.error or {}).get("code") for r in replies)
        assert codes["RATE_LIMITED"] >= tokens - admissible, (codes, admissible)
        assert set(codes) <= {"RATE_LIMITED", "NOT_YOUR_ALLOCATION"}, codes
        await pool.wait_api()
        async with aiohttp.ClientSession() as http:
            token = await pool.add_user("bob")
            async with http.get(f"{pool.api}/v1/pool", headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200
    finally:
        await as_a.close()
        await as_b.close()
    text = allocator_log.read_text(errors="replace")
    over = [line for line in text.splitlines() if "allocator.host_rate_exceeded" in line]
    # A streak of refusals is logged at its first: each token refilled mid-loop may start one.
    assert 1 <= len(over) <= 4 + (admissible - int(IMAGE_TOKEN_RATE.burst)), over
    refused_tokens = [line for line in text.splitlines() if "allocator.image_token_refused" in line]
    assert len(refused_tokens) <= admissible + 10, (len(refused_tokens), admissible)


async def test_jetstreams_answers_on_another_hosts_subjects_cost_that_host_nothing(
    pool: Pool, two_laptops: tuple[EnrolledHost, EnrolledHost]
) -> None:
    """JetStream answers a request on A's own consumer into whatever reply subject A names, so A
    can have the server publish onto B's heartbeat and request subjects, which A's permissions
    refuse it. Tried: A, with its own credentials, asks for its consumer's next message (no
    wait: answered at once, "no messages") and for its consumer's info, 600 times each, naming
    as the reply B's heartbeat subject, B's status request subject and the subject B's hostd
    takes log-page requests on, for well past the silence that makes a host unreachable (1.5 s
    here). Before: the registry charged each answer to B's rates before reading it, so B's own
    beats were ignored as over its rate and B went unreachable, and B's own requests were
    refused RATE_LIMITED; B's hostd logged a line for each answer. Must hold: none of it is
    charged to B: B is never suspected, nothing of B's is counted over its rate, B's own
    status request is answered, and every log (the registry's, B's hostd's) holds only a few
    lines about it."""
    a, b = two_laptops
    as_a = await pool.client(a)
    as_b = await pool.client(b)
    consumer = host_consumer(a.host_id)
    pull = f"$JS.API.CONSUMER.MSG.NEXT.{EVENTS_STREAM}.{consumer}"
    info = f"$JS.API.CONSUMER.INFO.{EVENTS_STREAM}.{consumer}"
    targets = (f"potluck.hb.{b.host_id}", f"{STATUS}.{b.host_id}", f"{LOG_TAIL}.{b.host_id}")
    try:
        for _ in range(600):
            for reply in targets:
                await as_a.publish(pull, b'{"batch": 1, "no_wait": true}', reply=reply)
                await as_a.publish(info, b"", reply=reply)
            await as_a.flush()
            await asyncio.sleep(0.005)
        assert (await _answered(as_b, f"{STATUS}.{b.host_id}")).ok
    finally:
        await as_a.close()
        await as_b.close()
    refused = (await pool.live_hosts())["refused"]
    # The answers did land on B's subjects, and were refused there as none of B's doing.
    assert refused["bad_beats"].get(b.host_id, 0) > 0, refused
    assert refused["reply_subjects"].get(b.host_id, 0) > 0, refused
    assert b.host_id not in refused["beats_over_rate"], refused
    assert b.host_id not in refused["requests_over_rate"], refused
    b_events = await pool.store.read_stream(host_stream(b.host_id))
    assert [e.type for e in b_events if e.type == "HostSuspected"] == [], pool.logs()
    registry_log = pool.processes["registry"].log_tail(5000)
    assert registry_log.count("registry.bad_heartbeat") < 100, "bad beats logged at the loop's pace"
    assert registry_log.count("bus.reply_refused") < 100, "refused replies logged at the loop's pace"
    # B's hostd, asked for log pages by JetStream's answers, refuses them and keeps its
    # member's log to a few lines about it (before: one line each, at A's pace).
    assert b.process is not None
    b_refusals = b.process.log_path.read_text(errors="replace").count("bus.reply_refused")
    assert 0 < b_refusals < 100, b_refusals
    await pool.wait_for_host(b.host_id, "active")


async def test_a_hosts_key_can_neither_destroy_jetstream_nor_listen_beyond_its_own(pool: Pool) -> None:
    """Tried: with host A's own NATS key (a member holds it), the JetStream API requests that
    would lose or rewrite what the pool keeps: delete and purge each stream, delete a message,
    change a stream's configuration, create a stream, delete B's events consumer and its own,
    create a consumer of its own choosing; then subscriptions to everything (`>`), to the
    system account's subjects, to every inbox, to B's inbox and to all events, after which the
    services publish into B's inbox and place work on B. Must hold: NATS refuses each (a
    permissions violation, no answer), every stream keeps every message with its configuration,
    A's and B's consumers are still there, and nothing reaches A's subscriptions."""
    a = await pool.enroll("laptop-a")
    b = await pool.enroll("laptop-b")
    await place(pool.store, b.host_id, "b-before", spec())
    services = await pool.client()
    js = services.jetstream()
    streams = (EVENTS_STREAM, REPORTS_STREAM, DEAD_LETTER_STREAM)
    await js.publish(
        f"potluck.report.{b.host_id}.engine", EngineStatus(available=True).model_dump_json().encode()
    )
    await js.publish(dead_letter_subject("allocator-reports"), b"kept")
    consumers = [host_consumer(a.host_id), host_consumer(b.host_id)]
    for durable in consumers:
        with contextlib.suppress(nats.js.errors.BadRequestError):  # the registry made it already
            await js.add_consumer(EVENTS_STREAM, durable_name=durable, filter_subject="potluck.evt.>")

    async def every_stream_holds_messages() -> bool:
        # The relay publishes `place()`'s events a moment after their append.
        counts = [(await js.stream_info(s)).state.messages for s in streams]
        return all(counts)

    await wait_until(every_stream_holds_messages, "a message in every stream")
    before = {s: await js.stream_info(s) for s in streams}
    errors: list[str] = []
    as_a = await pool.client(a, errors=errors)
    heard: list[str] = []

    async def spy(msg: Msg) -> None:
        heard.append(msg.subject)

    try:
        destructive = [
            *(f"$JS.API.STREAM.DELETE.{s}" for s in streams),
            *(f"$JS.API.STREAM.PURGE.{s}" for s in streams),
            *(f"$JS.API.STREAM.MSG.DELETE.{s}" for s in streams),
            f"$JS.API.STREAM.UPDATE.{EVENTS_STREAM}",
            "$JS.API.STREAM.CREATE.TAKEN",
            *(f"$JS.API.CONSUMER.DELETE.{EVENTS_STREAM}.{durable}" for durable in consumers),
            f"$JS.API.CONSUMER.CREATE.{EVENTS_STREAM}",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{EVENTS_STREAM}.spy",
        ]

        async def refused(subject: str) -> None:
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await as_a.request(subject, b'{"seq": 1}', timeout=1)

        # All at once: each waits its own second for an answer that must not come (one after
        # another they waited 15 s).
        await asyncio.gather(*(refused(subject) for subject in destructive))
        listened = [">", "$SYS.>", "_INBOX.>", f"{inbox_prefix(b.host_id)}.>", "potluck.evt.>", "$JS.API.>"]
        for subject in listened:
            await as_a.subscribe(subject, cb=spy)
        await as_a.flush()
        await services.publish(f"{inbox_prefix(b.host_id)}.answer", b"for B only")
        await place(pool.store, b.host_id, "b-after", spec())
        await services.flush()
        await asyncio.sleep(1)  # what must not arrive: a while for it to (not) come
    finally:
        await as_a.close()
    assert heard == []
    for subject in (*destructive, *listened):
        assert any("permissions violation" in e.lower() and subject.lower() in e.lower() for e in errors), (
            subject,
            errors,
        )
    for name, info in before.items():
        now = await js.stream_info(name)
        assert now.state.first_seq == info.state.first_seq, name
        assert now.state.messages >= info.state.messages, name
        assert now.config == info.config, name
    for durable in consumers:
        await js.consumer_info(EVENTS_STREAM, durable)  # NotFoundError if it was deleted
    assert await allocation(pool.store, "b-before") is not None
