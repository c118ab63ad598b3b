"""The member's controls, bad input to hostd, and the registry's read model against the log."""

import asyncio
import json
from datetime import datetime
from pathlib import Path

from potluck.hostd.config import load_config
from potluck.hostd.docker_driver import DockerDriver
from potluck.hostd.member import control
from potluck.localstack.docker_engine import DockerEngine
from potluck.readmodels.hosts import host_as_dict
from tests.e2e.conftest import hostd_started_with, member, wait_for_status
from tests.e2e.sandboxes import interactive
from tests.fixtures.pool import EnrolledHost, Pool, allocation, place, spec
from tests.helpers import wait_until


async def container_status(engine: DockerEngine, host_id: str, alloc_id: str) -> str:
    driver = DockerDriver(engine.url)
    try:
        return next((c.status for c in driver.list_managed(host_id) if c.allocation_id == alloc_id), "gone")
    finally:
        driver.close()


async def wait_container(engine: DockerEngine, host_id: str, alloc_id: str, status: str, pool: Pool) -> None:
    for _ in range(100):
        if await container_status(engine, host_id, alloc_id) == status:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"container of {alloc_id} never became {status}\n{pool.logs()}")


async def test_pause_freezes_and_resume_thaws_containers(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    await place(pool.store, laptop.host_id, "work", spec())
    await wait_for_status(pool, "work", "running")
    paused = await asyncio.to_thread(member, laptop, "pause")
    assert paused.returncode == 0, paused.stderr
    await pool.wait_for_host(laptop.host_id, "paused")
    await wait_container(docker_engines[0], laptop.host_id, "work", "paused", pool)
    again = await asyncio.to_thread(member, laptop, "pause")
    assert "already so" in again.stdout
    resumed = await asyncio.to_thread(member, laptop, "resume")
    assert resumed.returncode == 0, resumed.stderr
    await pool.wait_for_host(laptop.host_id, "active")
    await wait_container(docker_engines[0], laptop.host_id, "work", "running", pool)


async def test_drain_stops_running_work_after_its_grace(pool: Pool, laptop: EnrolledHost) -> None:
    """Tried: the member drains with work running and a long grace, asks a longer one, then
    cuts it short. Must hold: the longer one changes nothing and says so; after the short
    grace the work ends `exited`, and its user reads why (`host drained`), not a bare exit
    code that looks like their own command's; work that ends on its own carries no such
    reason."""
    await place(pool.store, laptop.host_id, "short", spec(command=["true"]))
    await wait_for_status(pool, "short", "exited", timeout=30)
    await place(pool.store, laptop.host_id, "long", spec())
    await wait_for_status(pool, "long", "running")
    drained = await asyncio.to_thread(member, laptop, "drain", "--grace", "600")
    assert drained.returncode == 0, drained.stderr
    await pool.wait_for_host(laptop.host_id, "draining")
    shown = await asyncio.to_thread(member, laptop, "status")
    drain = json.loads(shown.stdout)["drain"]
    ends = datetime.fromisoformat(drain["ends_at"]) - datetime.fromisoformat(drain["started_at"])
    assert (drain["grace_s"], ends.total_seconds()) == (600, 600), drain
    longer = await asyncio.to_thread(member, laptop, "drain", "--grace", "900")
    assert longer.stdout.startswith("drain: already so"), longer.stdout + longer.stderr
    cut = await asyncio.to_thread(member, laptop, "drain", "--grace", "1")
    assert cut.stdout.startswith("drain: done"), cut.stdout + cut.stderr
    await wait_for_status(pool, "long", "exited", timeout=30)
    stopped, short = await allocation(pool.store, "long"), await allocation(pool.store, "short")
    assert stopped is not None
    assert short is not None
    assert (stopped.reason, stopped.exited_by_host) == ("host drained", True), stopped
    assert (short.reason, short.exit_code, short.exited_by_host) == (None, 0, False), short


async def test_work_the_member_stops_with_docker_ends_saying_so(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    """Tried: the member stops a running task with `docker stop` on their own engine, outside
    Potluck. Must hold: the task ends `exited` with the stop's exit code, and its user reads
    that it was stopped on its host, not a bare 143 that looks like their command's own."""
    await place(pool.store, laptop.host_id, "stopped", spec())
    await wait_for_status(pool, "stopped", "running")
    driver = DockerDriver(docker_engines[0].url)
    try:
        [container] = [c for c in driver.list_managed(laptop.host_id) if c.allocation_id == "stopped"]
        await asyncio.to_thread(driver.stop, container.container_id, 1)
    finally:
        driver.close()
    await wait_for_status(pool, "stopped", "exited")
    state = await allocation(pool.store, "stopped")
    assert state is not None
    assert state.exit_code in (137, 143), state
    assert state.reason == "stopped on its host (by its member, or its Docker engine stopped)", state
    assert state.exited_by_host  # a job would re-queue it, as it does an attempt lost with its host


async def test_a_drain_goes_on_through_a_hostd_restart(pool: Pool, laptop: EnrolledHost) -> None:
    """Tried: the member drains with a task and an interactive allocation running, and hostd is
    killed (-9) within the grace and started again (a reboot mid-drain: the registry's answer
    to its registration is all it knows of the drain). Must hold: both still end when the grace
    is up, `exited` with `host drained`; the interactive one is not kept up by its keep-alive."""
    await place(pool.store, laptop.host_id, "task", spec())
    await place(pool.store, laptop.host_id, "sandbox", interactive())
    await wait_for_status(pool, "task", "running")
    await wait_for_status(pool, "sandbox", "running")
    drained = await asyncio.to_thread(member, laptop, "drain", "--grace", "6")
    assert drained.returncode == 0, drained.stderr
    await pool.wait_for_host(laptop.host_id, "draining")
    assert laptop.process is not None
    laptop.process.kill()
    for alloc_id in ("task", "sandbox"):  # the kill came within the grace
        state = await allocation(pool.store, alloc_id)
        assert state is not None
        assert state.status == "running", state
    pool.start_hostd(laptop)
    for alloc_id in ("task", "sandbox"):
        await wait_for_status(pool, alloc_id, "exited", timeout=60)
        state = await allocation(pool.store, alloc_id)
        assert state is not None
        assert state.reason == "host drained", state


async def test_pause_and_drain_replace_each_other_on_the_host_as_in_the_registry(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    """Tried: the member pauses, then drains (a long grace), resumes, drains with a short grace
    and pauses within it. Must hold, as the registry records each control replacing the one
    before: the drain thaws the paused work (it gets its grace running); the pause takes the
    short drain back, so past its grace the work is still there, frozen, not ended; resume
    thaws it."""
    config = load_config(laptop.config)
    engine = docker_engines[0]

    async def ask(action: str, then: str, grace_s: float = 0.0) -> None:
        # In process rather than through `potluck host`: the second pause must land within the
        # short grace, and a CLI's start would eat most of it on a loaded machine.
        reply = await control(config, action, grace_s)
        assert reply.ok, reply.error
        await pool.wait_for_host(laptop.host_id, then)

    await place(pool.store, laptop.host_id, "work", spec())
    await wait_for_status(pool, "work", "running")
    await ask("pause", "paused")
    await wait_container(engine, laptop.host_id, "work", "paused", pool)
    await ask("drain", "draining", 600)
    await wait_container(engine, laptop.host_id, "work", "running", pool)
    await ask("resume", "active")

    grace = 3.0
    drained_at = asyncio.get_running_loop().time()
    await ask("drain", "draining", grace)
    await ask("pause", "paused")
    landed_in = asyncio.get_running_loop().time() - drained_at
    assert landed_in < grace, f"the pause landed {landed_in:.1f}s after the drain: cannot tell"
    await wait_container(engine, laptop.host_id, "work", "paused", pool)
    await asyncio.sleep(grace + 2 - landed_in)
    assert await container_status(engine, laptop.host_id, "work") == "paused"
    assert laptop.process is not None
    assert "hostd.drain_grace_over" not in laptop.process.log_tail(400)
    state = await allocation(pool.store, "work")
    assert state is not None
    assert state.status == "running", state
    await ask("resume", "active")
    await wait_container(engine, laptop.host_id, "work", "running", pool)


async def test_an_image_the_member_does_not_allow_is_refused_with_a_report(
    pool: Pool, laptop: EnrolledHost
) -> None:
    await place(pool.store, laptop.host_id, "evil", spec(image="evil/miner:latest"))
    await wait_for_status(pool, "evil", "failed")
    state = await allocation(pool.store, "evil")
    assert state is not None
    assert state.reason == "image_not_allowed"


def test_bad_config_is_refused_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "hostd.toml"
    creds = tmp_path / "h.creds"
    creds.write_text('host_id = "h-1"\nnats_seed = "SUAXX"\n')
    base = {
        "host_id": '"h-1"',
        "credentials_file": '"h.creds"',
        "state_dir": '"s"',
        "docker_url": '"unix:///run/docker.sock"',
    }
    donate = {"cpus": "1", "memory": '"1G"', "disk": '"1G"'}

    def config_text(top: dict[str, str], table: dict[str, str]) -> str:
        return (
            "".join(f"{k} = {v}\n" for k, v in top.items())
            + "[donate]\n"
            + "".join(f"{k} = {v}\n" for k, v in table.items())
        )

    cases = {
        config_text(base, {**donate, "cpus": "-1"}): "donate.cpus",
        config_text(base, {**donate, "memory": '"lots"'}): "donate.memory",
        config_text({**base, "host_id": '"H 1"'}, donate): "host_id",
        config_text({**base, "docker_url": '"http://x"'}, donate): "docker_url",
        config_text({**base, "nats_url": '"http://x"'}, donate): "nats_url",
        config_text({**base, "surprise": "1"}, donate): "surprise",
        config_text({**base, "host_id": '"h-2"'}, donate): "belongs to host 'h-1'",
        "this is not toml": "not valid TOML",
    }
    for text, fragment in cases.items():
        config.write_text(text)
        done = hostd_started_with(config)
        assert done.returncode == 2, (text, done.stderr)
        assert fragment in done.stderr, (text, done.stderr)


async def test_hostd_says_clearly_when_its_docker_engine_is_down(pool: Pool, tmp_path: Path) -> None:
    host = await pool.enroll("no-engine")
    engine = DockerEngine(tmp_path / "never-started")
    pool.write_config(host, engine)
    process = pool.start_hostd(host)
    for _ in range(200):
        if "hostd.engine_unavailable" in process.log_tail(50):
            break
        await asyncio.sleep(0.1)
    log = process.log_tail(50)
    assert "hostd.engine_unavailable" in log
    assert "start the Docker engine" in log
    await asyncio.sleep(1)
    assert process.running(), "hostd must wait for its engine, not crash"


async def test_registry_read_model_rebuilt_from_the_log_equals_the_live_one(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    other = await pool.enroll("laptop-b")
    pool.write_config(other, docker_engines[1], labels={"gpu": "no"})
    pool.start_hostd(other)
    await pool.wait_for_host(other.host_id, "active")
    assert (await asyncio.to_thread(member, other, "pause")).returncode == 0
    await pool.wait_for_host(other.host_id, "paused")
    live = await pool.live_hosts()
    rebuilt = await pool.hosts()
    assert live["position"] <= rebuilt.position
    for row in live["hosts"]:
        row.pop("last_seen_s_ago")
    assert live["hosts"] == [host_as_dict(h) for h in sorted(rebuilt.hosts.values(), key=lambda h: h.host_id)]


async def test_member_sees_status_and_can_take_the_machine_back(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    """`potluck host status` shows the registry's view; `deregister` stops the work and leaves the
    pool, and hostd's log says so once, with what brings the machine back."""
    import json

    shown = await asyncio.to_thread(member, laptop, "status")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "active"
    await place(pool.store, laptop.host_id, "taken-back", spec())
    await wait_for_status(pool, "taken-back", "running")
    left = await asyncio.to_thread(member, laptop, "deregister")
    assert left.returncode == 0, left.stderr
    await pool.wait_for_host(laptop.host_id, "deregistered")
    await wait_for_status(pool, "taken-back", "lost")
    with DockerDriver(docker_engines[0].url) as driver:
        for _ in range(100):
            if not driver.list_managed(laptop.host_id):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the deregistered host still runs containers")
    # The member's hostd says why its machine went idle, and what brings it back (once the
    # event reaches it: the allocation's loss may have removed the container first).
    assert laptop.process is not None
    process = laptop.process

    def told() -> list[str]:
        return [line for line in process.log_tail(400).splitlines() if "hostd.deregistered" in line]

    await wait_until(lambda: bool(told()), 30, "hostd to say it was deregistered: " + process.log_tail(20))
    assert len(told()) == 1, process.log_tail(40)
    assert "the member took this machine out of the pool" in told()[0], told()
    assert "restart hostd to offer the machine again" in told()[0], told()


async def test_a_deregistered_machine_stays_out_of_the_pool_when_nats_restarts(
    pool: Pool, laptop: EnrolledHost
) -> None:
    """Tried: the member deregisters the machine, then NATS restarts (hostd reconnects, as after
    any network blip). Before: hostd registered again on reconnecting, and the registry made the
    machine active again: an operator's or member's deregistration lasted until the next blip.
    Must hold: the machine stays deregistered, no HostRegistered follows the HostDeregistered,
    and hostd says once it stays out (a restart of hostd still offers it again)."""
    left = await asyncio.to_thread(member, laptop, "deregister")
    assert left.returncode == 0, left.stderr
    await pool.wait_for_host(laptop.host_id, "deregistered")
    assert laptop.process is not None
    process = laptop.process

    async def host_events() -> list[str]:
        return [r.type for r in await pool.store.read_stream(f"host-{laptop.host_id}")]

    before = await host_events()
    assert before[-1] == "HostDeregistered", before
    await asyncio.to_thread(pool.nats.restart)

    async def reconnected() -> bool:
        stayed = "hostd.stays_deregistered" in process.log_tail(400)
        return stayed or len(await host_events()) > len(before)

    deadline = asyncio.get_running_loop().time() + 60
    while not await reconnected():
        assert asyncio.get_running_loop().time() < deadline, process.log_tail(40)
        await asyncio.sleep(0.2)
    await asyncio.sleep(2)  # a registration on its way lands meanwhile

    assert await host_events() == before, pool.logs()
    await pool.wait_for_host(laptop.host_id, "deregistered")
