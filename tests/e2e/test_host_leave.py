"""`potluck host leave`: the member takes the machine back for good.

Issue 15's acceptance: after the drain, restarting hostd and reconnecting NATS does not bring the
host back; `ops hosts list` shows "left". Replay of the log still agrees with the running services.
"""

import asyncio
import json
import os
import signal

import pytest

from potluck.events import EventStore
from potluck.localstack.docker_engine import DockerEngine
from potluck.registry.admitted_keys import LEFT_KEY_WINDOW
from potluck.registry.enrollment import current_hosts, read_seed, render_nats_authorization
from tests.e2e.conftest import consumer_removed, member, ops, replay_agrees, wait_for_status
from tests.e2e.test_host_revoke import connect_as
from tests.fixtures.pool import EnrolledHost, Pool, place, spec
from tests.helpers import json_log, wait_until


async def host_event_types(store: EventStore, host_id: str) -> list[str]:
    return [r.type for r in await store.read_stream(f"host-{host_id}")]


async def hostd_stops_for_good(pool: Pool, host: EnrolledHost) -> str:
    """Until hostd exits; it must exit with 3 (stopped for good). Its log's tail."""
    assert host.process is not None
    try:
        await wait_until(lambda: not host.process.running(), 30, "hostd to stop")  # type: ignore[union-attr]
    except AssertionError:
        pid = host.process.pid
        assert pid is not None
        os.kill(pid, signal.SIGUSR1)  # its stacks, into its log, for the failure
        await asyncio.sleep(0.5)
        raise AssertionError(f"hostd did not stop:\n{host.process.log_tail(120)}") from None
    tail = host.process.log_tail(40)
    assert host.process.exit_code() == 3, tail
    return tail


async def reloaded_with(pool: Pool, host: EnrolledHost, *, admitted: bool = True) -> None:
    """Until nats-server has reloaded a users file that admits `host` (or, with `admitted=False`,
    refuses its key): a render only signals nats-server, which reloads on its own time."""
    async with asyncio.timeout(10):
        while True:
            try:
                await connect_as(pool, host)
            except Exception as exc:
                if not admitted and "Authorization Violation" in str(exc):
                    return
            else:
                if admitted:
                    return
            await asyncio.sleep(0.1)


async def test_a_host_that_left_after_its_drain_never_comes_back_on_its_own(
    pool: Pool, laptop: EnrolledHost
) -> None:
    """`host leave --grace 1` with an allocation running: it drains (the allocation exits), then
    records HostLeft; hostd stops (exit 3). Starting hostd again, and again after NATS restarted,
    is refused (HOST_LEFT, exit 3) and records nothing: the host stays "left" in `ops hosts list`
    and in `host status`. Its controls are refused; replay agrees. Its key stays admitted through
    a render inside LEFT_KEY_WINDOW (another enrollment), so its tools keep hearing HOST_LEFT, and
    a render at the window's end takes it out: NATS refuses it from then on."""
    await place(pool.store, laptop.host_id, "work", spec())
    await wait_for_status(pool, "work", "running")

    left = await asyncio.to_thread(member, laptop, "leave", "--grace", "1")
    assert left.returncode == 0, left.stderr + pool.logs()
    assert "draining" in left.stderr
    assert f"left: host {laptop.host_id} left the pool" in left.stdout
    await wait_for_status(pool, "work", "exited")  # drained, not lost
    await pool.wait_for_host(laptop.host_id, "left")
    tail = await hostd_stops_for_good(pool, laptop)
    assert "left the pool" in tail
    # The member asked for it: said as news, not as an error, in the log and on the console.
    assert laptop.process is not None
    [stopped] = json_log(laptop.process.log_path, "hostd.stopped_for_good")
    assert stopped["level"] == "info", stopped
    assert "error: this machine left" not in tail, tail
    events_when_left = await host_event_types(pool.store, laptop.host_id)
    assert events_when_left[-2:] == ["HostDrainStarted", "HostLeft"], events_when_left

    pool.start_hostd(laptop)
    assert "HOST_LEFT" in await hostd_stops_for_good(pool, laptop)
    await asyncio.to_thread(pool.nats.restart)
    pool.start_hostd(laptop)
    assert "HOST_LEFT" in await hostd_stops_for_good(pool, laptop)
    assert await host_event_types(pool.store, laptop.host_id) == events_when_left
    await pool.wait_for_host(laptop.host_id, "left")
    await consumer_removed(pool, laptop)  # and hostd's refused restarts did not bring it back

    again = await asyncio.to_thread(member, laptop, "leave")
    assert again.returncode == 0, again.stderr
    assert "had left the pool already" in again.stdout
    paused = await asyncio.to_thread(member, laptop, "pause")
    assert paused.returncode == 1
    assert "HOST_LEFT" in paused.stderr
    assert "enroll it again" in paused.stderr
    status = await asyncio.to_thread(member, laptop, "status")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "left"
    assert "left the pool" in status.stderr

    code, out, err = await ops("hosts", "list", "--database-url", pool.database_url)
    assert code == 0, err
    [row] = [json.loads(line) for line in out.splitlines()]
    assert (row["host_id"], row["status"]) == (laptop.host_id, "left")
    code, out, err = await ops("hosts", "list", "--table", "--database-url", pool.database_url)
    assert code == 0, err
    assert out.splitlines()[0].split()[:3] == ["HOST", "NAME", "STATUS"]
    assert out.splitlines()[1].split()[:3] == [laptop.host_id, laptop.name, "left"]
    assert (await pool.live_hosts())["refused"]["gone_hosts"].get(laptop.host_id, 0) >= 1
    await replay_agrees(pool)

    other = await pool.enroll("laptop-b")  # renders the users file from the log again, inside the window
    await reloaded_with(pool, other)
    await connect_as(pool, laptop)
    paused = await asyncio.to_thread(member, laptop, "pause")
    assert "HOST_LEFT" in paused.stderr, paused.stderr

    # What the registry's users file keeper renders once the window has ended.
    view = await current_hosts(pool.store)
    left_at = view.hosts[laptop.host_id].left_at
    assert left_at is not None
    seeds = [read_seed(pool.services_seed_file)]
    render_nats_authorization(view, pool.nats.auth_file, seeds, pool.nats.pid_file, left_at + LEFT_KEY_WINDOW)
    await reloaded_with(pool, laptop, admitted=False)
    refused = await asyncio.to_thread(member, laptop, "status")
    assert refused.returncode == 2, refused.stderr
    assert "left the pool over an hour ago" in refused.stderr, refused.stderr


async def test_an_operator_can_make_a_host_leave_and_its_key_goes_at_once(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    """An operator makes the host leave (`ops hosts control HOST leave` with the pool's NATS files):
    HostLeft is recorded, hostd stops for good (exit 3), and a new connection with the host's key is
    refused by NATS, since the users file was rendered again without it. The registry removes the
    host's events consumer; another host's stays."""
    other = await pool.enroll("laptop-b")
    pool.write_config(other, docker_engines[1])
    pool.start_hostd(other)
    await pool.wait_for_host(other.host_id, "active")
    nats_files = (
        *("--nats-auth-file", str(pool.nats.auth_file)),
        *("--nats-pid-file", str(pool.nats.pid_file)),
        *("--service-seed-file", str(pool.services_seed_file)),
    )
    db = ("--database-url", pool.database_url)
    code, out, err = await ops("hosts", "control", laptop.host_id, "leave", "--json", *db, *nats_files)
    assert code == 0, err
    assert json.loads(out)["recorded"] == ["HostLeft"]
    await pool.wait_for_host(laptop.host_id, "left")
    await hostd_stops_for_good(pool, laptop)
    with pytest.raises(Exception, match="Authorization Violation"):
        await connect_as(pool, laptop)
    assert (await host_event_types(pool.store, laptop.host_id))[-1] == "HostLeft"
    await consumer_removed(pool, laptop, other)


async def test_a_member_who_deregistered_comes_back_by_starting_hostd_after_others_joined(
    pool: Pool, laptop: EnrolledHost
) -> None:
    """`host deregister` takes the machine out until its hostd registers again. Tried: the member
    deregisters, then the users file is rendered again (another machine enrolled, as a second
    laptop joining does), then the member restarts hostd. Must hold: the render keeps the
    machine's key, so the running hostd is not cut off and the restarted one registers again
    (`active`), with nothing recorded in between but HostDeregistered."""
    done = await asyncio.to_thread(member, laptop, "deregister")
    assert done.returncode == 0, done.stderr + pool.logs()
    await pool.wait_for_host(laptop.host_id, "deregistered")
    deregistered = await host_event_types(pool.store, laptop.host_id)
    assert deregistered[-1] == "HostDeregistered", deregistered

    other = await pool.enroll("laptop-b")  # renders the users file from the log again
    await reloaded_with(pool, other)
    await connect_as(pool, laptop)
    assert laptop.process is not None
    assert laptop.process.running(), laptop.process.log_tail(40)
    laptop.process.stop()
    pool.start_hostd(laptop)
    await pool.wait_for_host(laptop.host_id, "active")
    again = await host_event_types(pool.store, laptop.host_id)
    assert again[: len(deregistered)] == deregistered
    assert again[len(deregistered)] == "HostRegistered", again
    assert laptop.process.running(), laptop.process.log_tail(40)
