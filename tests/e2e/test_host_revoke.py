"""`potluck ops hosts revoke`: a stolen laptop is evicted, and nothing it holds is honoured any more.

Issue 15's acceptance: within 5 s the host's NATS connection is closed and cannot reconnect, its
gateway link is gone, its allocations are lost and their users see why; a report it sends with its
old key is refused. Replay of the log still agrees with the running services.
"""

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import aiohttp
import asyncssh
import nats.errors
import pytest
from nats.aio.client import Client as NATS

from potluck.contracts.reports import ContainerExited, report_subject
from potluck.hostd.docker_driver import DockerDriver
from potluck.kernel.ssh_identity import host_key_path, load_or_create_key
from potluck.localstack.docker_engine import DockerEngine
from tests.e2e.allocator_api import Api, small
from tests.e2e.conftest import (
    Gatewayed,
    consumer_removed,
    hostd_started_with,
    ops,
    replay_agrees,
    start_laptop,
    wait_for_status,
)
from tests.fixtures.pool import EnrolledHost, Pool, allocation, place, spec
from tests.helpers import json_log, wait_until

REASON = "stolen from a train"


async def revoke(pool: Pool, host: EnrolledHost, *extra: str) -> tuple[int, str, str]:
    """The real command, as operator `olga` (from $USER), with the pool's NATS files."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "potluck",
        "ops",
        "hosts",
        "revoke",
        host.host_id,
        "--reason",
        REASON,
        "--database-url",
        pool.database_url,
        "--nats-auth-file",
        str(pool.nats.auth_file),
        "--nats-pid-file",
        str(pool.nats.pid_file),
        "--service-seed-file",
        str(pool.services_seed_file),
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "USER": "olga", "POTLUCK_HOME": str(pool.workdir / "no-potluck-up")},
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def seed_of(host: EnrolledHost) -> str:
    return str(tomllib.loads(host.credentials.read_text())["nats_seed"])


async def connect_as(pool: Pool, host: EnrolledHost) -> None:
    """A fresh connection with the host's key, given up on the first refusal."""
    nc = NATS()
    try:
        await nc.connect(
            pool.nats.url,
            nkeys_seed_str=seed_of(host),
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=3,
        )
    finally:
        await nc.close()


async def send_report(pool: Pool, host: EnrolledHost, report: ContainerExited) -> None:
    """Publish `report` into the reports stream as the host would, with the host's key."""
    nc = NATS()
    try:
        await nc.connect(
            pool.nats.url, nkeys_seed_str=seed_of(host), allow_reconnect=False, max_reconnect_attempts=0
        )
        await nc.jetstream().publish(report_subject(host.host_id, report), report.model_dump_json().encode())
    finally:
        await nc.close()


class _AnyGateway(asyncssh.SSHServer):
    """hostd's side of a link, minus the sessions: any gateway client key will do here."""

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return True


async def dial_link(host: EnrolledHost) -> None:
    """Dial the gateway's tunnel port as the host's link does, with the host's own SSH key;
    raises when the gateway refuses the key."""
    config = tomllib.loads(host.config.read_text())
    address, port = config["gateways"][0]["address"].rsplit(":", 1)
    key = load_or_create_key(host_key_path(Path(config["state_dir"])))
    async with asyncio.timeout(15):
        conn = await asyncssh.connect_reverse(
            address,
            int(port),
            server_factory=_AnyGateway,
            server_host_keys=[key],
            gss_auth=False,
            gss_kex=False,
        )
    conn.close()
    await conn.wait_closed()


async def test_a_revoked_host_is_cut_off_its_work_lost_and_its_users_told_why(
    gatewayed: Gatewayed, docker_engines: list[DockerEngine]
) -> None:
    """Revoke a linked host with a running allocation and an open NATS connection of its own.

    Afterwards: that connection is closed within 5 s and a new one with the host's key is refused
    (authorization); hostd stops for good (exit code 3, saying it was revoked); the gateway refuses
    a link with the host's SSH key (it accepted one just before); the allocation is lost and its
    user reads "host revoked by olga: <reason>" from the API; a report sent with the old key fails
    with an authorization error and nothing new lands in the log; `host status` says the key is
    no longer accepted, and hostd started again stops for good at once; `ops hosts list` says
    revoked; replay of the log agrees with both running services; a second revocation records
    nothing. The registry removes the revoked host's events consumer; another host's stays."""
    pool, host = gatewayed.pool, gatewayed.host
    async with aiohttp.ClientSession() as http:
        alloc_id = await gatewayed.allocate(http)
    # Only now: with two hosts up, the allocation could have been placed on this one instead.
    other = await pool.enroll("laptop-b")
    pool.write_config(other, docker_engines[1])
    pool.start_hostd(other)
    await pool.wait_for_host(other.host_id, "active")
    await dial_link(host)  # the gateway takes the host's key before the revocation
    errors: list[str] = []
    as_host = await pool.client(host, errors=errors)
    assert as_host.is_connected

    code, out, err = await revoke(pool, host, "--json")
    assert code == 0, err + pool.logs()
    answer = json.loads(out)
    assert answer["recorded"] == ["HostRevoked"], answer
    assert (answer["revoked_by"], answer["reason"]) == ("olga", REASON)

    try:
        await wait_until(lambda: not as_host.is_connected, 5, "the host's NATS connection to close")
    finally:
        with contextlib.suppress(Exception):  # a client cut off may fail its last flush
            await as_host.close()
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect_as(pool, host)

    assert host.process is not None
    await wait_until(lambda: not host.process.running(), 30, "hostd to stop")  # type: ignore[union-attr]
    assert host.process.exit_code() == 3, host.process.log_tail(40)
    assert "revoked" in host.process.log_tail(40)
    [stopped] = json_log(host.process.log_path, "hostd.stopped_for_good")
    assert stopped["level"] == "error", stopped  # not asked for by its member: an error
    await consumer_removed(pool, host, other)

    with pytest.raises((asyncssh.Error, OSError)):
        await dial_link(host)
    gateway_log = pool.processes["sshgateway"].log_tail(400)
    assert "gateway.host_revoked" in gateway_log
    assert "link.unknown_host_key" in gateway_log

    await wait_for_status(pool, alloc_id, "lost")
    headers = {"Authorization": f"Bearer {gatewayed.token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{pool.api}/v1/allocations/{alloc_id}?wait=lost&timeout=30", headers=headers) as r,
    ):
        shown = await r.json()
    assert (shown["state"], shown["reason"]) == ("lost", f"host revoked by olga: {REASON}"), shown

    # Quiet now: what the host sends with its old key is refused and nothing lands in the log.
    await asyncio.sleep(1)
    head = await pool.store.head_position()
    report = ContainerExited(alloc_id=alloc_id, container_id="c", exit_code=0, oom_killed=False)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await send_report(pool, host, report)
    await asyncio.sleep(1)
    assert await pool.store.head_position() == head

    status = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "potluck", "host", "status", "--config", str(host.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status.returncode == 2, status.stderr
    assert "no longer accepted (revoked?" in status.stderr
    pool.start_hostd(host)  # the thief starts it again: it stops for good at once
    await wait_until(lambda: not host.process.running(), 30, "hostd to stop again")  # type: ignore[union-attr]
    assert host.process.exit_code() == 3, host.process.log_tail(40)
    assert "no longer accepts this machine's key" in host.process.log_tail(40)

    code, out, err = await ops("hosts", "list", "--database-url", pool.database_url)
    assert code == 0, err
    [row] = [json.loads(line) for line in out.splitlines() if json.loads(line)["host_id"] == host.host_id]
    assert row["status"] == "revoked"
    assert row["revoked"] == {"by": "olga", "reason": REASON}
    await replay_agrees(pool)

    code, out, err = await revoke(pool, host, "--json")
    assert code == 0, err
    assert json.loads(out)["recorded"] == [], "a second revocation records nothing"


async def test_reports_a_revoked_host_sent_before_are_dropped_not_recorded(
    pool: Pool, laptop: EnrolledHost
) -> None:
    """With the allocator down, the host reports its allocation exited (into the reports stream),
    then is revoked. The allocator, started again, loses the allocation with the revocation's
    reason and drops the waiting report (logged), never recording the exit."""
    await place(pool.store, laptop.host_id, "held", spec())
    await wait_for_status(pool, "held", "running")
    pool.processes["allocator"].stop()
    as_host = await pool.client(laptop)
    try:
        report = ContainerExited(alloc_id="held", container_id="c", exit_code=0, oom_killed=False)
        ack = await as_host.jetstream().publish(
            report_subject(laptop.host_id, report),
            report.model_dump_json().encode(),
            headers={"Nats-Msg-Id": report.report_id},
        )
        assert not ack.duplicate
    finally:
        await as_host.close()
    code, _, err = await revoke(pool, laptop)
    assert code == 0, err
    pool.start_allocator()
    await wait_for_status(pool, "held", "lost")
    state = await allocation(pool.store, "held")
    assert state is not None
    assert state.reason == f"host revoked by olga: {REASON}"
    log = pool.processes["allocator"]
    await wait_until(
        lambda: "allocator.report_from_gone_host_dropped" in log.log_tail(400), 30, "the report to be dropped"
    )
    types = [r.type for r in await pool.store.read_stream("alloc-held")]
    assert "AllocationExited" not in types, types
    await replay_agrees(pool)


async def test_a_host_revoked_while_its_hostd_was_away_stops_the_pools_containers_on_return(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """Tried: a laptop runs two of the pool's containers, one of them frozen (as the owner policy
    or a pause freezes it); its hostd stops (the member's machine reboots hostd, or it is off),
    which leaves them running, as it always does; meanwhile an operator revokes the host; then
    the member's hostd starts again. Must hold: the allocations are lost in the log; hostd exits
    3 saying NATS refuses its key and that the pool's 2 containers were stopped, naming how to
    find them; on the engine both still exist (their files kept) and neither runs, so nothing of
    the pool goes on using the member's CPUs and memory with no hostd to hold it."""
    engine = docker_engines[0]
    laptop = await start_laptop(pool, engine)
    await place(pool.store, laptop.host_id, "away-1", spec())
    await place(pool.store, laptop.host_id, "away-2", spec())
    await wait_for_status(pool, "away-1", "running")
    await wait_for_status(pool, "away-2", "running")
    assert laptop.process is not None
    laptop.process.stop(timeout=30)
    with DockerDriver(engine.url) as driver:
        before = {c.allocation_id: c for c in driver.list_managed(laptop.host_id)}
        assert {a: c.running for a, c in before.items()} == {"away-1": True, "away-2": True}
        driver.pause(before["away-2"].container_id)

    code, _, err = await revoke(pool, laptop)
    assert code == 0, err
    await wait_for_status(pool, "away-1", "lost")
    await wait_for_status(pool, "away-2", "lost")
    returned = await asyncio.to_thread(hostd_started_with, laptop.config)
    assert returned.returncode == 3, returned.stderr
    assert "NATS no longer accepts this machine's key" in returned.stderr, returned.stderr
    assert "the pool's 2 container(s) still running here were stopped" in returned.stderr
    assert f"docker ps -a --filter label=potluck.host={laptop.host_id}" in returned.stderr
    with DockerDriver(engine.url) as driver:
        after = {c.allocation_id: c for c in driver.list_managed(laptop.host_id)}
    assert set(after) == {"away-1", "away-2"}, after
    assert not any(c.running for c in after.values()), after


async def test_work_while_the_pool_has_no_host_waits_for_one_and_runs_when_one_joins(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """What is tried: the pool's only laptop runs a job's task; the operator revokes it (as
    `potluck up` on a restored log revokes the old host before the new one joins), and a user
    asks for an allocation while the pool has no host at all. Before the fix the job's task,
    re-queued once lost, was refused for good on the queue's next look (the job failed:
    NO_HOST_COULD_EVER_FIT) and the new request got a 422 ("no host is registered in the pool").
    What must hold: both wait, saying the pool has no host (`waiting.reason`
    `no_host_registered`); once another laptop joins, the allocation runs and the job's task runs
    again and succeeds: nothing the pool accepted is lost to a moment without hosts."""
    laptop = await start_laptop(pool, docker_engines[0], "laptop-a")
    async with aiohttp.ClientSession() as http:
        erin = Api(http, pool.api, await pool.add_user("erin"))
        status, job = await erin.call("POST", "/v1/jobs", small(cpus=0.2, command=["sleep", "3"], tasks=1))
        assert status == 201, job
        tasks = f"/v1/jobs/{job['id']}/tasks"

        async def task_in(*states: str) -> dict[str, Any]:
            for _ in range(600):
                _, listed = await erin.call("GET", tasks)
                if listed["tasks"][0]["state"] in states:
                    return dict(listed["tasks"][0])
                await asyncio.sleep(0.1)
            raise AssertionError(f"the job's task never was {states}: {listed}\n{pool.logs()}")

        await task_in("running")
        code, _, err = await revoke(pool, laptop)
        assert code == 0, err
        await wait_until(lambda: not laptop.process.running(), 30, "hostd to stop")  # type: ignore[union-attr]

        status, asked = await erin.call("POST", "/v1/allocations", small(cpus=0.2))
        assert status == 202, asked
        assert asked["waiting"]["reason"] == "no_host_registered", asked
        assert "no host is in the pool" in asked["waiting"]["message"], asked
        requeued = await task_in("pending")
        assert requeued["attempts"] == 2, requeued
        await asyncio.sleep(2)  # the queue's looks, had it been going to refuse them, were made
        _, job_now = await erin.call("GET", f"/v1/jobs/{job['id']}")
        assert job_now["state"] == "running", job_now
        assert (await task_in("pending"))["attempts"] == 2
        _, still = await erin.call("GET", f"/v1/allocations/{asked['id']}")
        assert (still["state"], still["waiting"]["reason"]) == ("pending", "no_host_registered"), still

        other = await start_laptop(pool, docker_engines[1], "laptop-b")
        status, running = await erin.call("GET", f"/v1/allocations/{asked['id']}?wait=running&timeout=60")
        assert (status, running["state"], running["host_id"]) == (200, "running", other.host_id), running
        status, done = await erin.call("GET", f"/v1/jobs/{job['id']}?wait=done&timeout=120")
        assert (status, done["state"]) == (200, "succeeded"), done
