"""An allocator asked to stop (SIGTERM: an operator's restart, `potluck down`, a supervisor)
while clients hold long polls on it.

A long poll (`?wait=...&timeout=` up to 300 s) is a request under way, and aiohttp's shutdown
waits for requests under way (up to a minute): the allocator outlived its stop's grace and was
killed, and the waiting clients lost their connection instead of an answer. What users and
operators expect instead: the allocator answers each long poll at once with the state as it
is (what a wait whose timeout passed answers: the client asks again, of a replica or of the
restarted allocator) and ends cleanly.
"""

import asyncio
import os
import signal
from typing import Any

import aiohttp

from potluck.contracts.capacity import Capacity
from potluck.localstack.test_image import DEFAULT_TAG
from tests.fixtures.pool import Pool
from tests.helpers import host_in_the_log

#: How long the stopped allocator has to end before it is killed: a supervisor's usual grace,
#: and well under aiohttp's minute for requests under way.
STOP_GRACE_S = 15.0


async def test_a_stopped_allocator_answers_its_long_polls_and_ends_cleanly(pool: Pool) -> None:
    """Tried: a replica of the allocator, a host in the log with no hostd (what is placed there
    stays placed), an allocation placed on it, and three long polls against the replica that
    would each wait 300 s: the allocation `?wait=running`, its job-less twin `?wait=exited`
    and the same once more from another connection; then SIGTERM to the replica.
    Must hold: every long poll gets a 200 with the allocation as it is (`placed`), the
    replica exits 0 of its own within its stop's grace (not killed), and the pool's other
    allocator still answers."""
    pool.processes["registry"].stop()  # no liveness checks: the host never beats
    donated = Capacity(cpus=4.0, memory_bytes=8 << 30, disk_bytes=8 << 30)
    await host_in_the_log(pool.store, "h-quiet", donated)
    replica = pool.start_allocator("allocator-stopped", relay=False)
    port = int(replica.argv[replica.argv.index("--listen") + 1].rsplit(":", 1)[1])
    await pool.wait_api()
    await pool.wait_api(port)
    token = await pool.add_user("olga")
    headers = {"Authorization": f"Bearer {token}"}
    body = {"cpus": 1.0, "memory": "64M", "disk": "64M", "image": DEFAULT_TAG}
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        async with http.post(base + "/v1/allocations", json=body, headers=headers) as made:
            assert made.status == 201, await made.text()
            alloc_id = (await made.json())["id"]
            assert (await made.json())["state"] == "placed"

        async def poll(wanted: str) -> tuple[int, Any]:
            # A session of its own: each poll on its own connection, as separate clients are.
            async with aiohttp.ClientSession() as own:
                url = f"{base}/v1/allocations/{alloc_id}?wait={wanted}&timeout=300"
                async with own.get(url, headers=headers) as answer:
                    return answer.status, await answer.json()

        polls = [asyncio.ensure_future(poll(w)) for w in ("running", "exited", "running")]
        await asyncio.sleep(1.0)  # the polls are waiting
        assert not any(p.done() for p in polls), [p.result() for p in polls if p.done()]
        assert replica.pid is not None
        os.kill(replica.pid, signal.SIGTERM)
        async with asyncio.timeout(STOP_GRACE_S * 2):
            answers = await asyncio.gather(*polls)
        # Its own exit is waited for: a second SIGTERM (ChildProcess.stop's) that reached it after
        # its handler was gone killed it with -15 once, though it was ending cleanly.
        deadline = asyncio.get_running_loop().time() + STOP_GRACE_S
        while replica.running() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        if replica.running():
            await asyncio.to_thread(replica.kill)  # past its grace: -9, which the check below names
        exit_code = replica.exit_code()

        async with http.get(f"{pool.api}/v1/allocations/{alloc_id}", headers=headers) as shown:
            assert shown.status == 200
            assert (await shown.json())["state"] == "placed"

    assert [status for status, _ in answers] == [200, 200, 200], answers
    assert [a["state"] for _, a in answers] == ["placed"] * 3, answers
    assert exit_code == 0, (exit_code, replica.log_tail(40))
