"""What a user reads when the member's Docker engine cannot run their session: Potluck's words.

The engine's own error text names its internals: the container's whole id, the runtime
("OCI runtime exec failed: ..."), paths under the member's data-root. Through the real
gateway, hostd's link and a real engine, each failure here must reach the user's `ssh` as a
line saying what happened and what to do, with the engine's words in hostd's log only.
"""

import asyncio
import json
import time
from typing import Any

import docker
import pytest

from potluck.hostd.container_config import ContainerSpec
from potluck.localstack.test_image import DEFAULT_TAG
from tests.fixtures import ssh as ssh_fixtures
from tests.fixtures.ssh import FakeHost, SshEnv

ssh_env = ssh_fixtures.ssh_env

#: What none of the user's lines may hold: the engine's and runtime's own words, its paths.
ENGINE_WORDS = ("OCI runtime", "runc", "unable to start container process", "overlay2", "/var/lib/docker")


def _link_lines(host: FakeHost, event: str) -> list[dict[str, Any]]:
    assert host.link is not None
    found = []
    for text in host.link.log_path.read_text(errors="replace").splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if isinstance(line, dict) and line.get("event") == event:
            found.append(line)
    return found


def _no_engine_words(said: str, container_id: str) -> None:
    for words in ENGINE_WORDS:
        assert words not in said, (words, said)
    assert container_id not in said, said
    assert container_id[:12] not in said, said


@pytest.fixture(scope="module")
async def env(ssh_env: SshEnv) -> SshEnv:
    return ssh_env


async def test_an_image_without_a_shell_is_said_so_not_in_the_engines_words(env: SshEnv) -> None:
    """Tried: a running allocation whose /bin/sh is removed (as in an image without one), then
    `ssh ALLOC echo hi` without and with a terminal, and a process that itself prints the
    engine's words first.
    Before the fix the user's terminal showed the engine's "OCI runtime exec failed: exec
    failed: unable to start container process: exec: "/bin/sh": stat /bin/sh: no such file or
    directory: unknown", and hostd logged nothing.
    Must hold: exit status 126 (the engine's, as a shell's for a program it cannot run); one
    line saying the session could not start, that /bin/sh is not in the container and that
    the image needs one; none of the engine's words nor the container's id; hostd's log
    holds the engine's words; and a program printing those words itself is passed on whole."""
    host = env.hosts[0]
    container_id = await env.place_running(host, "eng1")
    await env.wait_reachable("eng1")
    said_itself = await env.ssh("eng1", "echo 'OCI runtime exec failed: said by the program'; echo after")
    assert said_itself.returncode == 0, said_itself.err
    assert said_itself.out == "OCI runtime exec failed: said by the program\nafter\n", said_itself.out

    await env.in_container(host, "eng1", "rm /bin/sh")
    for options in ([], ["-tt"]):
        result = await env.ssh("eng1", "echo hi", options=options)
        said = result.out + result.err
        assert result.returncode == 126, (options, result.returncode, said)
        assert (
            "potluck: the session could not start in allocation eng1: /bin/sh is not in the container" in said
        )
        assert "the allocation's image needs one" in said, said
        _no_engine_words(said, container_id)
    logged = _link_lines(host, "link.exec_start_failed")
    assert len(logged) == 2, logged
    assert all("OCI runtime exec failed" in line["engine"] for line in logged), logged


async def test_a_restarting_container_is_said_so_not_in_the_engines_words(env: SshEnv) -> None:
    """Tried: an allocation whose container's command exits at once, under a restart policy, so
    that the engine holds it "restarting" (and says Running) between attempts; then `ssh`.
    Before the fix the user read "the container of allocation ... is not running: Container
    <its 64-hex id> is restarting, wait until the container is running" (the engine's text).
    Must hold: exit 255 and a line saying the container is restarting because its command
    exited, to try again and where to see why; no container id nor engine words."""
    host = env.hosts[0]
    await env.place_running(host, "eng2", start=False)
    spec = ContainerSpec(
        allocation_id="eng2",
        host_id=host.host_id,
        image=DEFAULT_TAG,
        cpus=0.5,
        memory_bytes=64 << 20,
        disk_bytes=512 << 20,
        pids_limit=64,
        command=["sh", "-c", "exit 3"],
    )
    container_id = await asyncio.to_thread(host.driver.run, spec)
    client = docker.DockerClient(base_url=host.engine.url)
    try:
        container = client.containers.get(container_id)
        # The engine refuses an update while the process is exiting ("cannot update a deleted
        # process"): wait until the first run has ended, then change the policy at rest.
        deadline = time.monotonic() + 30
        while container.status != "exited":
            assert time.monotonic() < deadline, container.attrs["State"]
            await asyncio.sleep(0.1)
            await asyncio.to_thread(container.reload)
        await asyncio.to_thread(lambda: container.update(restart_policy={"Name": "always"}))
        await asyncio.to_thread(container.start)
        deadline = time.monotonic() + 30
        while True:  # a few attempts in: the engine waits seconds between them, saying restarting
            container.reload()
            state = container.attrs["State"]
            if state.get("Restarting") and container.attrs.get("RestartCount", 0) >= 4:
                break
            assert time.monotonic() < deadline, container.attrs["State"]
            await asyncio.sleep(0.2)
        await env.mark_running(host, "eng2", container_id)
        result = await env.ssh("eng2", "echo hi")
        said = result.out + result.err
        assert result.returncode == 255, (result.returncode, said)
        assert "potluck: the container of allocation eng2 is restarting (its command exited)" in said, said
        assert "potluck logs eng2" in said, said
        _no_engine_words(said, container_id)
        assert "wait until the container is running" not in said, said
    finally:
        container = client.containers.get(container_id)
        await asyncio.to_thread(container.remove, force=True)
        client.close()


async def test_a_file_read_as_a_directory_is_said_so_without_the_members_paths(env: SshEnv) -> None:
    """Tried: `potluck-archive get /etc/passwd/` (what `potluck cp ALLOC:/etc/passwd/ .` runs): a
    file named as a directory.
    Before the fix the engine's 500 ("lstat /var/lib/docker/overlay2/<id>/merged/etc/passwd/:
    not a directory") ended the session with "could not be started in the container".
    Must hold: exit 2 (as for a missing path), a line saying PATH is not a directory in the
    allocation, no path of the member's disk; hostd's log holds the engine's words."""
    host = env.hosts[0]
    container_id = await env.place_running(host, "eng3")
    await env.wait_reachable("eng3")
    result = await env.ssh("eng3", "potluck-archive", "get", "/etc/passwd/")
    said = result.out + result.err
    assert result.returncode == 2, (result.returncode, said)
    assert "potluck: /etc/passwd/: not a directory in the allocation" in said, said
    _no_engine_words(said, container_id)
    logged = _link_lines(host, "archive.not_a_directory")
    assert logged, host.link.log_tail(20) if host.link else ""
    assert "overlay2" in logged[-1]["message"], logged
