"""What a user reads when the member's Docker engine cannot run their session: Potluck's words.

The engine's own error text names its internals: the container's whole id, the runtime
("OCI runtime exec failed: ..."), paths under the member's data-root. Through the real
gateway, hostd's link and a real engine, each failure here must reach the user's `ssh` as a
line saying what happened and what to do, with the engine's words in hostd's log only.
"""

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncssh
import docker
import pytest

from potluck.hostd.container_config import ContainerSpec
from potluck.hostd.helper_sftp import ENGINE_FAILED
from potluck.localstack.process import ChildProcess
from potluck.localstack.test_image import DEFAULT_TAG
from tests.fixtures import ssh as ssh_fixtures
from tests.fixtures.ssh import LINK_DISK_BOUND, FakeHost, PtySession, SshEnv
from tests.helpers import json_log

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


def _as_alice(env: SshEnv, alloc_id: str) -> AbstractAsyncContextManager[asyncssh.SSHClientConnection]:
    """asyncssh's client logged in through the gateway as alice, to `alloc_id` (an async
    context manager): its SFTP client shows the status messages OpenSSH's sftp does not print."""
    return asyncssh.connect(
        "127.0.0.1",
        env.port,
        username=alloc_id,
        client_keys=[str(env.key("alice"))],
        known_hosts=None,
        agent_path=None,
        config=None,
    )


async def test_an_image_without_a_shell_is_said_so_not_in_the_engines_words(env: SshEnv) -> None:
    """Tried: a running allocation whose /bin/sh is removed (as in an image without one), then
    `ssh ALLOC echo hi` without and with a terminal (`-tt` from a pipe: no size; and from a
    real terminal, whose size the helper sets before it starts the program on this engine),
    and a process that itself prints the engine's words first.
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

    # From a terminal of a known size the helper starts the program on this engine (tty_size.py):
    # the same status and line, though the engine started the helper.
    pty = PtySession(env.ssh_argv("eng1", "echo hi", options=["-tt"]), rows=30, cols=100)
    try:
        assert await pty.wait() == 126, bytes(pty.output)
        said = pty.output.decode()
    finally:
        pty.close()
    assert "potluck: the session could not start in allocation eng1: /bin/sh is not in the container" in said
    assert "the allocation's image needs one" in said, said
    _no_engine_words(said, container_id)


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
    allocation, no path of the member's disk; the same once the container stopped (then the
    engine reads its files, container_archive.py), and hostd's log holds the engine's words."""
    host = env.hosts[0]
    container_id = await env.place_running(host, "eng3")
    await env.wait_reachable("eng3")
    result = await env.ssh("eng3", "potluck-archive", "get", "/etc/passwd/")
    said = result.out + result.err
    assert result.returncode == 2, (result.returncode, said)
    assert "potluck: /etc/passwd/: not a directory in the allocation" in said, said
    _no_engine_words(said, container_id)

    await asyncio.to_thread(host.driver.stop, container_id, 1)
    result = await env.ssh("eng3", "potluck-archive", "get", "/etc/passwd/")
    said = result.out + result.err
    assert result.returncode == 2, (result.returncode, said)
    assert "potluck: /etc/passwd/: not a directory in the allocation" in said, said
    _no_engine_words(said, container_id)
    logged = _link_lines(host, "archive.not_a_directory")
    assert logged, host.link.log_tail(20) if host.link else ""
    assert "overlay2" in logged[-1]["message"], logged


class _EngineRelay:
    """The engine's socket passed through a socket of the test's, which the test can cut: what
    hostd meets when the member's engine stops or restarts in the middle of a session."""

    def __init__(self, engine_path: str) -> None:
        self.engine_path = engine_path
        self.folder = tempfile.mkdtemp(prefix="eng-", dir="/tmp")  # a unix socket's path is short
        self.path = os.path.join(self.folder, "docker.sock")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._relay, self.path)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        engine_reader, engine_writer = await asyncio.open_unix_connection(self.engine_path)
        self._writers |= {writer, engine_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
                dst.write_eof()  # an exec's stdin ends, its output goes on

        await asyncio.gather(pipe(reader, engine_writer), pipe(engine_reader, writer))
        writer.close()
        engine_writer.close()

    def refuse_new(self) -> None:
        """New connections find no engine (its socket is gone); those open (a session's exec
        stream) go on, as while an engine restarts its API but not its running execs."""
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def cut(self) -> None:
        """The engine goes away: its connections close, its socket is gone."""
        self.refuse_new()
        for writer in self._writers:
            writer.close()

    def remove(self) -> None:
        self.cut()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.asynccontextmanager
async def _link_through_relay(
    env: SshEnv, host: FakeHost, alloc_id: str, link_env: dict[str, str] | None = None
) -> AsyncIterator[tuple[_EngineRelay, ChildProcess]]:
    """`host`'s link restarted to reach its engine through an _EngineRelay the test can cut
    (with `link_env` in its environment), once `alloc_id` is reachable; the usual link again
    afterwards."""
    relay = _EngineRelay(host.engine.url.removeprefix("unix://"))
    await relay.start()
    assert host.link is not None
    await asyncio.to_thread(host.link.stop, timeout=10)
    link = env.link_process(
        host, f"127.0.0.1:{env.tunnel_port}", name=f"link-{alloc_id}", docker_url=f"unix://{relay.path}"
    )
    with ssh_fixtures._environ(link_env or {}):
        link.start()
    try:
        await env.wait_reachable(alloc_id)
        yield relay, link
    finally:
        await asyncio.to_thread(link.stop, timeout=10)
        relay.remove()
        env.start_link(host)


async def test_sftp_in_an_image_without_sftp_server_says_the_engine_failed_in_potlucks_words(
    env: SshEnv,
) -> None:
    """Tried: hostd's own SFTP server (the busybox image has no sftp-server) with asyncssh's SFTP
    client through the gateway; a listing that works; then the member's engine goes away in the
    middle of the session (its socket closed and removed), and the client lists, stats and
    opens a file.
    Before the fix each SFTP status message read "the container did not run the operation:
    GET /containers/potluck-eng4/json on unix:///<the member's path>/docker.sock failed:
    FileNotFoundError: [Errno 2] No such file or directory".
    Must hold: each operation fails with a status message saying the engine could not run it
    and what to do, without the container's id, the engine's socket path or its API's words;
    hostd's log holds the engine's words (`helper_sftp.engine_failed`)."""
    host = env.hosts[0]
    container_id = await env.place_running(host, "eng4")
    async with _link_through_relay(env, host, "eng4") as (relay, link):
        async with _as_alice(env, "eng4") as conn:
            sftp = await conn.start_sftp_client()
            assert "etc" in await sftp.listdir("/")
            relay.cut()
            said: list[str] = []
            for operation in (sftp.listdir("/etc"), sftp.stat("/etc/hostname"), sftp.open("/etc/hostname")):
                with pytest.raises(asyncssh.SFTPError) as caught:
                    await operation
                said.append(str(caught.value.reason))
        for message in said:
            assert message == ENGINE_FAILED, said
            _no_engine_words(message, container_id)
            for words in (relay.path, relay.folder, "unix://", "POST", "/containers/", "Errno"):
                assert words not in message, (words, message)
        logged = json_log(link.log_path, "helper_sftp.engine_failed")
        assert len(logged) >= 3, link.log_tail(20)
        assert all(relay.folder in line["engine"] for line in logged), logged


async def test_sftp_through_the_images_sftp_server_says_the_engine_failed_in_potlucks_words(
    env: SshEnv, default_image: str
) -> None:
    """Tried: the default image, which has its own sftp-server (hostd's SftpFilter stands
    between it and the client), with asyncssh's SFTP client through the gateway; a listing that
    works; then the member's engine stops taking new connections while the server's exec
    stream goes on, and the client uploads a file (hostd must ask the engine for the
    container's disk first); then the engine goes away altogether and the client lists.
    Before the fix the upload's status read "hostd could not measure the allocation's disk (its
    log says why)", in words of its own, the engine's logged as `sftp_filter.budget_unknown`.
    Must hold: the upload fails with hostd's own SFTP server's message (ENGINE_FAILED), nothing
    written; the listing after the engine went away fails too; no message holds the container's
    id, the engine's socket path or its API's words; hostd's log holds the engine's words
    (`sftp_filter.engine_failed`)."""
    host = env.hosts[0]
    container_id = await env.place_running(host, "eng5", image=default_image)
    async with _link_through_relay(env, host, "eng5", {LINK_DISK_BOUND: str(512 << 20)}) as (relay, link):
        async with _as_alice(env, "eng5") as conn:
            sftp = await conn.start_sftp_client()
            assert "etc" in await sftp.listdir("/")
            relay.refuse_new()
            said: list[str] = []
            with pytest.raises(asyncssh.SFTPError) as caught:
                async with sftp.open("/root/new", "wb") as upload:
                    await upload.write(b"x" * 4096)
            said.append(str(caught.value.reason))
            assert said == [ENGINE_FAILED], said
            relay.cut()
            with pytest.raises((asyncssh.SFTPError, asyncssh.Error, OSError)) as lost:
                await sftp.listdir("/etc")
            said.append(str(getattr(lost.value, "reason", lost.value)))
        for message in said:
            _no_engine_words(message, container_id)
            for words in (relay.path, relay.folder, "unix://", "GET", "/containers/", "Errno"):
                assert words not in message, (words, message)
        logged = json_log(link.log_path, "sftp_filter.engine_failed")
        assert len(logged) == 1, link.log_tail(20)
        assert relay.folder in logged[0]["engine"], logged
    check = await env.in_container(host, "eng5", "test -e /root/new && echo there || echo absent")
    assert check.strip() == "absent", check
