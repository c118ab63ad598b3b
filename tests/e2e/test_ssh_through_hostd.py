"""The whole path of an SSH session with every real part: the allocator places the work, the real
`potluck hostd` runs it and dials the gateway, the real `ssh` client logs in.

tests/e2e/test_ssh_gateway.py covers the gateway's behaviour in depth with hostd's link alone;
this file shows that the assembled hostd does the same, and survives a kill -9.
"""

import asyncio
from typing import Any

import aiohttp
import pytest

from potluck.events import EventStore
from tests.e2e.conftest import Gatewayed


async def session_ends(store: EventStore, alloc_id: str) -> list[dict[str, Any]]:
    records = await store.read_all(0, limit=100_000)
    return [r.data for r in records if r.type == "SessionEnded" and r.data.get("alloc_id") == alloc_id]


@pytest.mark.slow
@pytest.mark.liveness(0.25, 8, 60.0)  # a restart of hostd must not outlast the grace: no lost work
async def test_a_session_runs_in_the_container_hostd_started_and_survives_hostd_killed(
    gatewayed: Gatewayed,
) -> None:
    """What is tried: a command over ssh; then kill -9 of hostd and a start of a new one.
    What must hold: the exit status comes back; the container keeps running (hostd adopts it);
    a new session works without restarting the gateway; each session is an audit event."""
    async with aiohttp.ClientSession() as http:
        alloc_id = await gatewayed.allocate(http)

    first = await gatewayed.ssh(
        alloc_id,
        # cgroup v2, else v1: either way the container's own memory limit.
        "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes;"
        " exit 7",
    )
    assert first.returncode == 7, first.stderr + gatewayed.pool.logs()
    assert first.stdout.split() == [str(64 << 20)]

    assert gatewayed.host.process is not None
    gatewayed.host.process.kill()
    gatewayed.pool.start_hostd(gatewayed.host)
    await gatewayed.pool.wait_for_host(gatewayed.host.host_id, "active")

    second = await gatewayed.ssh(alloc_id, "echo again")
    assert second.returncode == 0, second.stderr + gatewayed.pool.logs()
    assert second.stdout == "again\n"

    # The gateway logs a session's end just after the client sees it: wait for the second.
    for _ in range(100):
        ended = await session_ends(gatewayed.pool.store, alloc_id)
        if len(ended) == 2:
            break
        await asyncio.sleep(0.1)
    assert [e["exit_status"] for e in ended] == [7, 0]
    assert all(e["bytes_out"] > 0 for e in ended)
