"""Interactive allocations and tasks, through the HTTP API, the real hostd and the real `ssh`.

An allocation without a command stays up whatever its image's CMD (hostd runs the helper's
keep-alive: services/hostd/helper.py); one with a command ends when the command ends.
"""

import asyncio

import aiohttp

from potluck.localstack.test_image import DEFAULT_TAG
from tests.e2e.conftest import Gatewayed, wait_for_status
from tests.fixtures.pool import allocation

#: Long enough for the busybox image's CMD (`/bin/sh` without a terminal, gone in
#: milliseconds) to have ended many times over; the mechanism (the keep-alive is the
#: container's process) is checked as well, so a minute is not needed.
STILL_UP_AFTER_S = 5


async def test_an_allocation_without_a_command_stays_up_and_ssh_reaches_it(gatewayed: Gatewayed) -> None:
    """What is tried: POST /v1/allocations with no command, image whose CMD is a shell that exits
    at once without a terminal. What must hold: STILL_UP_AFTER_S seconds later it is still
    running, its container's process is the helper's `sleep infinity`, and `ssh` runs a command
    in it with the exit status coming back."""
    async with aiohttp.ClientSession() as http:
        alloc_id = await gatewayed.allocate(http, command=None, image=DEFAULT_TAG)
    await asyncio.sleep(STILL_UP_AFTER_S)

    state = await allocation(gatewayed.pool.store, alloc_id)
    assert state is not None
    assert state.status == "running", gatewayed.pool.logs()
    seen = await gatewayed.ssh(alloc_id, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '; exit 3")
    assert seen.returncode == 3, seen.stderr
    assert "/.potluck/busybox sleep infinity" in seen.stdout


async def test_an_allocation_with_a_command_ends_with_the_command_and_its_exit_code(
    gatewayed: Gatewayed,
) -> None:
    """What is tried: an allocation whose command sleeps a moment then exits 5. What must hold:
    it runs, then is exited with exit code 5 (a task, not kept up)."""
    async with aiohttp.ClientSession() as http:
        alloc_id = await gatewayed.allocate(http, command=["sh", "-c", "sleep 2; exit 5"])

    await wait_for_status(gatewayed.pool, alloc_id, "exited")
    state = await allocation(gatewayed.pool.store, alloc_id)
    assert state is not None
    assert state.exit_code == 5
