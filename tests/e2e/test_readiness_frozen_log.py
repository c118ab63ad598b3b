"""The allocator's /readyz tells a frozen event log from a healthy one (real allocator, Postgres).

A stopped Postgres (SIGSTOP: a paused VM, a wedged disk) keeps its connections open, so nothing
fails fast: requests wait on it. /readyz must say so, and say ready again once it answers.
"""

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import aiohttp

from potluck.localstack.postgres_server import PostgresServer
from potluck.localstack.proc_stat import children
from tests.fixtures.pool import Pool
from tests.helpers import freeze_process


def _left_running(pid: int, stopped: list[int]) -> list[int]:
    """The live children of `pid` not stopped yet."""
    return [child for child in children(pid, live_only=True) if child not in stopped]


def _freeze_tree(pid: int, stopped: list[int]) -> None:
    """Stop the postmaster `pid` first (it forks no backend after that), then each of its
    children, looking again until none is left running: a backend it forked just before it
    stopped (a pool opening a connection) would otherwise go on answering."""
    freeze_process(pid)
    stopped.append(pid)
    while running := _left_running(pid, stopped):
        for child in running:
            with contextlib.suppress(ProcessLookupError, FileNotFoundError):  # one that ended meanwhile
                freeze_process(child)
                stopped.append(child)


async def _readyz(http: aiohttp.ClientSession, api: str) -> tuple[int, dict[str, object], str | None]:
    async with http.get(f"{api}/readyz") as r:
        return r.status, await r.json(), r.headers.get("Retry-After")


async def test_readyz_says_the_log_does_not_answer_while_postgres_is_stopped_and_ready_after(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    """Tried: the allocator ready, then its Postgres and every backend stopped with SIGSTOP, and
    /readyz asked until it says so and then by twenty probes at once; then Postgres continued.
    Must hold: while stopped, /readyz turns 503 LOG_UNAVAILABLE with a Retry-After (not a hang:
    each probe answers within its bound), every one of the twenty too, and the allocator keeps
    running; once
    continued, /readyz is 200 again and the API reads the log (its connections survived the
    probes that timed out)."""
    pool = await Pool.create(tmp_path / "pool", own_postgres.url)
    stopped: list[int] = []
    try:
        pool.start_allocator()
        await pool.wait_api()
        headers = {"Authorization": f"Bearer {await pool.add_user('alice')}"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            assert (await _readyz(http, pool.api))[0] == 200

            assert own_postgres.pid is not None
            _freeze_tree(own_postgres.pid, stopped)
            # An answer less than a second old is given as it is: ready for up to that second.
            answers = []
            for _ in range(50):  # a bound on a hang (10 s and more), not a timed assertion
                answers.append(await _readyz(http, pool.api))
                if answers[-1][0] != 200:
                    break
                await asyncio.sleep(0.2)
            left_running = _left_running(own_postgres.pid, stopped)
            assert answers[-1][0] != 200, (len(answers), left_running, pool.logs())
            status, body, retry_after = answers[-1]
            assert status == 503, body
            assert body["error"]["code"] == "LOG_UNAVAILABLE"  # type: ignore[index]
            assert retry_after is not None
            probes = await asyncio.gather(*(_readyz(http, pool.api) for _ in range(20)))
            assert {(s, b["error"]["code"]) for s, b, _ in probes} == {(503, "LOG_UNAVAILABLE")}  # type: ignore[index]
            assert pool.processes["allocator"].running(), pool.logs()

            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
            stopped.clear()
            await pool.wait_api(timeout=30)
            async with http.get(f"{pool.api}/v1/allocations", headers=headers) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["allocations"] == []
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        await pool.close()
