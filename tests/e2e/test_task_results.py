"""A finished task's output and results, through the real gateway and hostd: `potluck logs` and
`potluck cp` from kept containers (`keep_for`), and their removal when their time is up.

One gateway, one hostd on a private engine, the busybox test image (cpus 0.1, memory 32M).
"""

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from potluck.hostd.docker_driver import DockerDriver
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG
from potluck.user.client import Login
from tests.e2e.conftest import Gatewayed, start_gatewayed, wait_for_status
from tests.fixtures.pool import Pool

MiB = 1 << 20
DISK = 64 * MiB


@pytest.fixture
async def results(pool: Pool, docker_engines: list[DockerEngine], tmp_path: Path) -> Gatewayed:
    return await start_gatewayed(pool, docker_engines[0], tmp_path)


def logged_in(g: Gatewayed, tmp_path: Path) -> dict[str, str]:
    """The environment of a user logged in to this pool (their own client config)."""
    config = tmp_path / "client" / "client.toml"
    Login(g.pool.api, g.token, f"127.0.0.1:{g.ssh_port}").save(config)
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    return {**env, "POTLUCK_CONFIG": str(config)}


async def potluck(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "potluck", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


async def api(g: Gatewayed, method: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {g.token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, f"{g.pool.api}{path}", json=body, headers=headers) as r,
    ):
        answer = await r.json()
        assert r.status < 300, answer
        return answer


async def task(g: Gatewayed, script: str, keep_for: str | None = None) -> str:
    """A running allocation whose command is `sh -c script`; its id."""
    body: dict[str, Any] = {
        "cpus": 0.1,
        "memory": "32M",
        "disk": DISK,
        "image": DEFAULT_TAG,
        "command": ["sh", "-c", script],
        "ssh_keys": [Path(f"{g.key}.pub").read_text().strip()],
    }
    if keep_for is not None:
        body["keep_for"] = keep_for
    created = await api(g, "POST", "/v1/allocations", body)
    return str(created["id"])


async def reserved(g: Gatewayed) -> dict[str, Any]:
    pool = await api(g, "GET", "/v1/pool")
    [host] = [h for h in pool["hosts"] if h["host_id"] == g.host.host_id]
    return dict(host["reserved"])


async def until(check: Any, what: str, g: Gatewayed, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"{what}\n{g.pool.logs()}"
        await asyncio.sleep(0.2)


def containers(g: Gatewayed, engine: DockerEngine) -> set[str]:
    with DockerDriver(engine.url) as driver:
        return {c.allocation_id for c in driver.list_managed(g.host.host_id)}


@pytest.mark.slow
async def test_logs_follow_a_running_task_live_and_end_with_it(results: Gatewayed, tmp_path: Path) -> None:
    """What is tried: `potluck logs -f` on a task that prints a numbered line every 0.3 s for about
    6 s (not kept). What must hold: its first line is read while the allocation still runs (its
    state through the API at that moment), every line arrives once and in order, and the command
    ends with exit status 0 when the task ends."""
    g = results
    env = logged_in(g, tmp_path)
    alloc_id = await task(g, "i=1; while [ $i -le 20 ]; do echo line $i; i=$((i+1)); sleep 0.3; done")
    await wait_for_status(g.pool, alloc_id, "running")
    follow = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "potluck", "logs", "-f", "-i", str(g.key), alloc_id,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert follow.stdout is not None
    assert follow.stderr is not None
    try:
        async with asyncio.timeout(30):
            first = await follow.stdout.readline()
        state = (await api(g, "GET", f"/v1/allocations/{alloc_id}"))["state"]
        async with asyncio.timeout(30):
            rest = await follow.stdout.read()
        async with asyncio.timeout(30):
            status = await follow.wait()
    finally:
        if follow.returncode is None:
            follow.kill()
    errors = (await follow.stderr.read()).decode()
    assert first == b"line 1\n", errors + g.pool.logs()
    assert state == "running"
    lines = (first + rest).decode().splitlines()
    assert lines == [f"line {i}" for i in range(1, 21)], errors
    assert status == 0, errors


@pytest.mark.slow
@pytest.mark.liveness(0.5, 6, 120.0)  # hostd's restart below must not make its host lost
async def test_a_kept_task_gives_its_results_and_logs_until_its_keep_for_is_up(
    results: Gatewayed, docker_engines: list[DockerEngine], tmp_path: Path
) -> None:
    """What is tried: a task kept 120 s that writes /out/result.txt and prints three lines, after it
    exited: `potluck cp ALLOC:/out`, `potluck logs` (whole and `--tail 2`), an upload and a shell
    command into it, and hostd killed and restarted; then a task kept 2 s, after its time.
    What must hold: the result comes back equal, the logs are its output, the host still reserves
    its disk while its cpus and memory are free, the upload and the shell command are refused
    saying what still works (`potluck ssh` without a key it admits too: before, that ran ssh and
    said the gateway refused the key), and the kept container survives hostd's restart. The 2 s
    one's container is removed from the engine, its disk no longer reserved, and `potluck logs`
    and `potluck ssh` fail saying its container was removed."""
    g = results
    engine = docker_engines[0]
    env = logged_in(g, tmp_path)
    key = ["-i", str(g.key)]
    # Docker reads stdout and stderr through two pipes: the pauses fix the lines' order in the
    # log, which `--tail 2` reads across both.
    lines = "echo one && sleep 0.3 && echo two >&2 && sleep 0.3 && echo three"
    kept = await task(g, f"mkdir -p /out && echo 42 > /out/result.txt && {lines}", "120s")
    await wait_for_status(g.pool, kept, "exited")

    # The log has the exit before the allocator has folded it (a busy machine: hundreds of ms):
    # its API is asked until it says so too.
    async def exited_in_the_api() -> bool:
        return bool((await api(g, "GET", f"/v1/allocations/{kept}"))["state"] == "exited")

    await until(exited_in_the_api, f"{kept} is exited in the log, not in the API", g)
    shown = await api(g, "GET", f"/v1/allocations/{kept}")
    assert shown["kept_until"] is not None
    assert shown["exit_code"] == 0

    copied = await potluck("cp", *key, f"{kept}:/out", str(tmp_path / "out"), env=env)
    assert copied.returncode == 0, copied.stderr + g.pool.logs()
    assert (tmp_path / "out" / "result.txt").read_text() == "42\n"

    whole = await potluck("logs", *key, kept, env=env)
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout.splitlines() == ["one", "three"]
    assert whole.stderr.splitlines() == ["two"]
    tail = await potluck("logs", *key, "--tail", "2", kept, env=env)
    assert (tail.returncode, tail.stdout, tail.stderr) == (0, "three\n", "two\n")

    held = await reserved(g)
    assert (held["cpus"], held["memory"], held["disk"]) == (0, 0, DISK)

    upload = tmp_path / "up.txt"
    upload.write_text("late\n")
    refused = await potluck("cp", *key, str(upload), f"{kept}:/out", env=env)
    assert refused.returncode != 0
    assert "nothing can be copied into it" in refused.stderr
    shell = await g.ssh(kept, "ls /out")
    assert shell.returncode != 0
    assert "potluck cp" in shell.stderr
    assert "potluck logs" in shell.stderr
    # `potluck ssh` without a key the allocation admits: refused for what it is (before, ssh ran
    # and the user read that the gateway refused their key, and went after keys).
    keyless = await potluck("ssh", kept, "--", "ls", "/out", env=env)
    assert keyless.returncode == 1, keyless.stderr
    said = " ".join(keyless.stderr.split())
    assert f"allocation {kept} is exited: no shell or command runs in it" in said, said
    assert f"`potluck cp {kept}:PATH .`" in said, said
    assert "refused the key" not in said, said

    # hostd killed and started again: the snapshot says the container is kept.
    assert g.host.process is not None
    g.host.process.kill()
    g.pool.start_hostd(g.host)
    short = await task(g, "echo short", "2s")  # placed and run only once hostd is back and synced
    await wait_for_status(g.pool, short, "exited")
    assert kept in containers(g, engine)
    again = await potluck("cp", *key, f"{kept}:/out/result.txt", str(tmp_path / "again.txt"), env=env)
    assert again.returncode == 0, again.stderr + g.pool.logs()
    assert (tmp_path / "again.txt").read_text() == "42\n"

    # The 2 s one: removed once its time is up, and its disk no longer reserved.
    async def short_gone() -> bool:
        return short not in containers(g, engine) and (await reserved(g))["disk"] == DISK

    await until(short_gone, f"{short}'s container is still there or its disk still reserved", g)
    assert (await api(g, "GET", f"/v1/allocations/{short}"))["kept_until"] is None
    gone = await potluck("logs", *key, short, env=env)
    assert gone.returncode != 0
    assert "container was removed" in gone.stderr
    ended = await potluck("ssh", short, env=env)
    assert ended.returncode == 1, ended.stderr
    said = " ".join(ended.stderr.split())
    assert f"allocation {short} is exited: no shell or command runs in it; its container was removed" in said
