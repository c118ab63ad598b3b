"""hostd whose NATS connection is closed for good ends, for `potluck up` or systemd to start it
again, rather than run on deaf (a real pool, hostd's agent in this process)."""

import asyncio
import contextlib

import pytest
from nats.aio.client import Client

from potluck.hostd import agent
from potluck.hostd.config import load_config
from potluck.localstack.docker_engine import DockerEngine
from tests.fixtures.pool import Pool


async def test_a_hostd_whose_bus_is_closed_for_good_ends_to_be_started_again(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """Tried: a registered hostd's NATS connection is closed by nats-py itself (its internal
    `_close(CLOSED)`, the way it gives a connection up for good: it never reconnects). Before:
    hostd logged `bus.closed_for_good` and ran on, beating no more and hearing of no placement,
    its process alive, until its member read the log. Must hold: its run ends with BusGivenUp
    (`potluck hostd` exits 1 on it, which `potluck up` restarts), not HostdStopped (exit 3, a
    machine out of the pool for good, which nothing restarts)."""
    host = await pool.enroll("laptop-deafened")
    config = load_config(pool.write_config(host, docker_engines[0]))
    await pool.central_services_ready()
    hostd = agent.Agent(config)
    running = asyncio.ensure_future(hostd.run())
    try:
        async with asyncio.timeout(60):  # a bound on a hang, not a timed assertion
            await hostd.ready.wait()
        assert hostd.nc is not None
        await hostd.nc._close(Client.CLOSED, do_cbs=True)
        with pytest.raises(agent.BusGivenUp, match="closed for good"):
            async with asyncio.timeout(60):
                await running
    finally:
        running.cancel()
        with contextlib.suppress(BaseException):
            await running
