"""A second hostd on the same hostd.toml (and so the same state_dir) while one runs, with real
processes: the `potluck join --start` in a terminal beside the systemd unit's hostd."""

import asyncio
import json
import sys

from potluck.contracts.allocation_events import alloc_stream
from potluck.contracts.host_events import host_stream
from potluck.hostd.docker_driver import DockerDriver
from potluck.hostd.state_lock import HELD_EXIT_CODE, LOCK_FILE
from potluck.localstack.docker_engine import DockerEngine
from tests.e2e.conftest import member, wait_for_status
from tests.fixtures.pool import EnrolledHost, Pool, place, spec

#: Far more than a refused hostd needs (it exits before it reaches the engine or the pool); a
#: second hostd that is not refused runs on, and is ended by the test after this long.
REFUSED_WITHIN_S = 30


async def _event_types(pool: Pool, stream: str) -> list[str]:
    return [e.type for e in await pool.store.read_stream(stream)]


def _containers(engine: DockerEngine, host_id: str) -> list[tuple[str, str, bool]]:
    with DockerDriver(engine.url) as driver:
        return sorted((c.allocation_id, c.container_id, c.running) for c in driver.list_managed(host_id))


async def test_a_second_hostd_on_the_same_state_dir_exits_and_leaves_the_first_alone(
    pool: Pool, laptop: EnrolledHost, docker_engines: list[DockerEngine]
) -> None:
    """Tried: with a hostd running one allocation, `potluck hostd --config` on its very
    hostd.toml; then `potluck host status` while the first runs; then the first killed with
    SIGKILL and a hostd started again on the same configuration.
    Must hold: the second exits at once with HELD_EXIT_CODE, saying another hostd holds the
    state_dir, naming the first's PID and what to do; it never registered; the first runs on
    with the same container running; nothing is appended to the host's or the allocation's
    stream (no second HostRegistered); `host status` still answers. After the kill -9 the lock
    is not stale: the new hostd starts, registers, adopts the running container and holds the
    lock itself."""
    engine = docker_engines[0]
    await place(pool.store, laptop.host_id, "held", spec())
    await wait_for_status(pool, "held", "running")
    first = laptop.process
    assert first is not None
    assert first.pid is not None
    lock_file = pool.hostd_state_dir(laptop) / LOCK_FILE
    containers = await asyncio.to_thread(_containers, engine, laptop.host_id)
    assert [(a, running) for a, _, running in containers] == [("held", True)], containers
    host_events = await _event_types(pool, host_stream(laptop.host_id))
    alloc_events = await _event_types(pool, alloc_stream("held"))

    second = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "potluck", "hostd", "--config", str(laptop.config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(REFUSED_WITHIN_S):
            out, err = await second.communicate()
    except TimeoutError:
        second.kill()  # the process this test started, by its own handle
        out, err = await second.communicate()
        raise AssertionError(
            f"a second hostd on the same state_dir ran on for {REFUSED_WITHIN_S} s:\n"
            f"{(out + err).decode(errors='replace')[-3000:]}\n{pool.logs()}"
        ) from None
    said = err.decode(errors="replace")
    assert second.returncode == HELD_EXIT_CODE, (second.returncode, said, out.decode(errors="replace"))
    assert f"another hostd (PID {first.pid}) already runs" in said, said
    assert str(pool.hostd_state_dir(laptop)) in said, said
    assert f"kill {first.pid}" in said, said
    assert "hostd.registered" not in said + out.decode(errors="replace"), said

    await asyncio.sleep(1)  # whatever the second set going would have landed by now
    assert first.running(), first.log_tail(40)
    assert await _event_types(pool, host_stream(laptop.host_id)) == host_events
    assert await _event_types(pool, alloc_stream("held")) == alloc_events
    assert await asyncio.to_thread(_containers, engine, laptop.host_id) == containers
    assert lock_file.read_text().strip() == str(first.pid)
    shown = await asyncio.to_thread(member, laptop, "status")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "active"

    registered = first.log_tail(10_000).count('"hostd.registered"')
    first.kill()  # SIGKILL: no clean-up of its own, the kernel drops its lock
    again = pool.start_hostd(laptop)  # its log goes on in the same file
    async with asyncio.timeout(60):
        # (A registration like the last one records nothing new in the log: its own log says it.)
        while again.log_tail(10_000).count('"hostd.registered"') <= registered:
            assert again.running(), again.log_tail(40)
            await asyncio.sleep(0.2)
        while '"hostd.adopted"' not in again.log_tail(400):
            assert again.running(), again.log_tail(40)
            await asyncio.sleep(0.2)
    assert again.pid is not None
    assert lock_file.read_text().strip() == str(again.pid)
    await wait_for_status(pool, "held", "running")
    assert await asyncio.to_thread(_containers, engine, laptop.host_id) == containers
