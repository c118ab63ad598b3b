"""Users reach their containers through the SSH gateway: the real OpenSSH client, real engines.

The gateway and each host's link (hostd's `keep_linked`) run as processes of
their own; the containers run on two private Docker engines, one per host
(see tests/fixtures/ssh.py). Failed-login tests each use their own loopback
source address (127.0.0.x), since failures are counted per source.
"""

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import asyncssh
import pytest

from potluck.contracts.allocation_events import AllocationSpec
from potluck.contracts.capacity import Capacity
from potluck.kernel.ssh_identity import host_key_path
from potluck.localstack import free_port, wait_for_port
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG
from potluck.sshgateway.service import client_public_key
from tests.e2e.conftest import wait_for_status
from tests.fixtures import ssh as ssh_fixtures
from tests.fixtures.pool import Pool, place, release
from tests.fixtures.ssh import PtySession, SshEnv

# Until tests/conftest.py lists tests.fixtures.ssh in pytest_plugins.
ssh_env = ssh_fixtures.ssh_env

MB = 1 << 20


async def _running_allocation(
    env: SshEnv,
    alloc_id: str,
    host: int = 0,
    *,
    users: tuple[str, ...] = ("alice",),
    memory: int = 64 * MB,
    pids_limit: int = 64,
) -> str:
    container_id = await env.place_running(
        env.hosts[host], alloc_id, users=users, memory=memory, pids_limit=pids_limit
    )
    await env.wait_reachable(alloc_id, key=users[0])
    return container_id


async def _wait_until_gone(
    env: SshEnv, alloc_id: str, marker: str, host: int = 0, timeout: float = 10
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        listing = await env.in_container(env.hosts[host], alloc_id, "ps -o pid,args")
        if marker not in listing:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{marker!r} still runs in {alloc_id}:\n{listing}\n{env.logs()}")
        await asyncio.sleep(0.1)


async def _wait_until_running(env: SshEnv, alloc_id: str, marker: str, host: int = 0) -> None:
    deadline = time.monotonic() + 10
    while marker not in await env.in_container(env.hosts[host], alloc_id, "ps -o pid,args"):
        if time.monotonic() > deadline:
            raise AssertionError(f"{marker!r} never started in {alloc_id}\n{env.logs()}")
        await asyncio.sleep(0.05)


async def test_a_command_sees_the_containers_limits_and_returns_its_exit_status(ssh_env: SshEnv) -> None:
    await _running_allocation(ssh_env, "lim1", memory=96 * MB, pids_limit=48)
    memory = await ssh_env.ssh("lim1", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
    assert (memory.returncode, memory.out.strip()) == (0, str(96 * MB)), memory
    pids = await ssh_env.ssh("lim1", "cat /sys/fs/cgroup/pids/pids.max")
    assert pids.out.strip() == "48"
    assert (await ssh_env.ssh("lim1", "exit 7")).returncode == 7
    split = await ssh_env.ssh("lim1", "echo out; echo err >&2; exit 3")
    assert (split.returncode, split.stdout, split.stderr) == (3, b"out\n", b"err\n")
    # Killed by a signal: Docker reports 128 + the signal, and so does ssh.
    assert (await ssh_env.ssh("lim1", "kill -TERM $$")).returncode == 143


async def test_a_session_runs_with_no_more_than_the_containers_own_process(ssh_env: SshEnv) -> None:
    """What is tried: a session (the OpenSSH client, the gateway, hostd's exec bridge) reads its
    own privileges and limits and those of the container's first process. What must hold: the
    same user, capabilities (effective, bounding, ambient), no-new-privileges, seccomp filter
    and resource limits (hostd's core, signal and file limits among them): an exec gets nothing
    the container was not given."""
    await _running_allocation(ssh_env, "same1")
    keys = ("Uid:", "Gid:", "CapEff:", "CapPrm:", "CapBnd:", "CapAmb:", "NoNewPrivs:", "Seccomp:")
    read = (
        "grep -E '^(" + "|".join(k.rstrip(":") for k in keys) + "):' /proc/{0}/status; cat /proc/{0}/limits"
    )
    session = await ssh_env.ssh("same1", read.format("self"))
    first = await ssh_env.ssh("same1", read.format("1"))
    assert session.returncode == 0, session
    assert _without_open_files(session.out) == _without_open_files(first.out)
    # runc before 1.1.13 races with its own Go runtime over RLIMIT_NOFILE on exec (runc#4195):
    # once in thousands of execs the process gets runc's limit. Debian 12's runc 1.1.5 has it, and
    # hostd cannot set an exec's limits itself, so the line must match on one of a few execs.
    open_files = [_open_files(session.out)]
    while open_files[-1] != _open_files(first.out) and len(open_files) < 4:
        again = await ssh_env.ssh("same1", read.format("self"))
        open_files.append(_open_files(again.out))
    assert open_files[-1] == _open_files(first.out), (open_files, _open_files(first.out))
    status = dict(line.split(":", 1) for line in session.out.splitlines() if line.startswith(keys))
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"
    assert int(status["CapBnd"], 16) & (1 << 21) == 0  # no CAP_SYS_ADMIN
    assert "Max core file size        1                    1" in session.out  # bytes: no core, no handler


def _open_files(limits: str) -> str:
    return next(line for line in limits.splitlines() if line.startswith("Max open files"))


def _without_open_files(limits: str) -> list[str]:
    return [line for line in limits.splitlines() if not line.startswith("Max open files")]


async def test_100mb_piped_in_and_back_out_arrive_byte_identical(ssh_env: SshEnv) -> None:
    await _running_allocation(ssh_env, "bulk1")
    data = os.urandom(100 * MB)
    digest = hashlib.sha256(data).hexdigest()
    echoed = await ssh_env.ssh("bulk1", "cat", input=data, timeout=120)
    assert echoed.returncode == 0, echoed.err
    assert len(echoed.stdout) == len(data)
    assert hashlib.sha256(echoed.stdout).hexdigest() == digest
    stored = await ssh_env.ssh("bulk1", "cat > /tmp/blob && sha256sum /tmp/blob", input=data, timeout=120)
    assert stored.out.split()[0] == digest, stored
    fetched = await ssh_env.ssh("bulk1", "cat /tmp/blob && rm /tmp/blob", timeout=120)
    assert hashlib.sha256(fetched.stdout).hexdigest() == digest
    # The audit has the byte counts of the echo session.
    deadline = time.monotonic() + 10
    while True:
        ended = [e for e in await ssh_env.session_events("bulk1") if e["type"] == "SessionEnded"]
        echoes = [e for e in ended if e["bytes_in"] == 100 * MB and e["bytes_out"] == 100 * MB]
        if echoes or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert echoes, ended


def _rss_mb(pid: int | None) -> float:
    assert pid is not None
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def test_a_reader_that_stops_reading_holds_back_the_writer(ssh_env: SshEnv) -> None:
    """Flow control end to end: the container writes as fast as it can to a user who reads
    nothing; neither the gateway nor hostd's link buffers it (windows of a few MB bound it)."""
    await _running_allocation(ssh_env, "slow1")
    host = ssh_env.hosts[0]
    assert host.link is not None
    before = _rss_mb(ssh_env.gateway.pid), _rss_mb(host.link.pid)
    client = await asyncio.create_subprocess_exec(
        *ssh_env.ssh_argv("slow1", "cat /dev/zero"), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert client.stdout is not None
        await client.stdout.readexactly(MB)  # it flows ...
        await asyncio.sleep(3)  # ... then nobody reads for a while
        after = _rss_mb(ssh_env.gateway.pid), _rss_mb(host.link.pid)
        await client.stdout.readexactly(16 * MB)  # and it flows again
    finally:
        client.kill()
        await client.wait()
    assert after[0] - before[0] < 40, (before, after)
    assert after[1] - before[1] < 40, (before, after)


async def test_a_memory_hog_is_oom_killed_at_the_allocations_memory(ssh_env: SshEnv) -> None:
    await _running_allocation(ssh_env, "oom1", memory=48 * MB)
    hog = await ssh_env.ssh("oom1", "awk 'BEGIN { s = \"x\"; while (1) s = s s }'", timeout=60)
    assert hog.returncode == 137, hog
    control = await ssh_env.ssh("oom1", "cat /sys/fs/cgroup/memory/memory.oom_control")
    assert "oom_kill 1" in control.out, control.out
    # The exec was killed, not the container: sessions still work.
    assert (await ssh_env.ssh("oom1", "true")).returncode == 0


async def test_processes_started_over_ssh_count_against_the_pids_limit(ssh_env: SshEnv) -> None:
    await _running_allocation(ssh_env, "pids1", pids_limit=24)
    counted = await ssh_env.ssh(
        "pids1",
        "read a < /sys/fs/cgroup/pids/pids.current; for i in 1 2 3 4 5 6 7 8 9 10; do sleep 2 & done; "
        "read b < /sys/fs/cgroup/pids/pids.current; echo $((b - a))",
    )
    assert counted.out.strip() == "10", counted
    # Past the container's limit, forks fail (and the shell gives up).
    bomb = await ssh_env.ssh("pids1", "while :; do sleep 2 & done")
    assert bomb.returncode != 0
    assert "can't fork" in bomb.err, bomb.err


async def test_a_command_with_a_terminal_starts_at_the_clients_size(ssh_env: SshEnv) -> None:
    """What is tried: `ssh -tt ID@gw 'stty size'` from a 30x100 terminal, eight times, on the
    fixtures' engine (20.10: its API sets an exec's terminal size only after the exec started).
    Before the fix the command often ran before hostd's resize reached its terminal and printed
    "0 0" (about two runs in three here).
    What must hold: every run prints the client's size, and ends with the command's status; the
    command sees the environment, directory and process a command without a terminal does (but
    TERM): the size is set by the helper, which leaves nothing of its own behind."""
    await _running_allocation(ssh_env, "pty0")
    for _ in range(8):
        pty = PtySession(ssh_env.ssh_argv("pty0", "stty size; exit 4", options=["-tt"]), rows=30, cols=100)
        try:
            assert await pty.wait() == 4, bytes(pty.output)
            assert b"30 100" in pty.output, bytes(pty.output)
        finally:
            pty.close()

    facts = (
        "pwd; env | grep -v -e '^TERM=' -e '^POTLUCK_SESSION=' | sort; cat /proc/$$/cmdline | tr '\\0' ' '"
    )
    plain = await ssh_env.ssh("pty0", facts)
    pty = PtySession(ssh_env.ssh_argv("pty0", facts, options=["-tt"]), rows=30, cols=100)
    try:
        assert await pty.wait() == 0, bytes(pty.output)
        assert pty.output.decode().replace("\r\n", "\n") == plain.out
    finally:
        pty.close()


async def test_a_pty_session_is_interactive_and_follows_window_changes(ssh_env: SshEnv) -> None:
    await _running_allocation(ssh_env, "pty1")
    argv = ssh_env.ssh_argv("pty1", options=["-tt"])
    pty = PtySession(argv, rows=30, cols=100)
    try:
        pty.write(b"stty size; echo TERM=$TERM\n")
        await pty.expect(b"30 100")
        await pty.expect(b"TERM=xterm-256color")
        pty.resize_local(40, 120)
        deadline = time.monotonic() + 10
        while b"40 120" not in pty.output:
            pty.write(b"stty size\n")
            await asyncio.sleep(0.2)
            pty._drain()
            assert time.monotonic() < deadline, bytes(pty.output)
        pty.write(b"exit 3\n")
        assert await pty.wait() == 3
    finally:
        pty.close()


async def test_refused_wrong_key_other_users_released_and_unknown_allocations(ssh_env: SshEnv) -> None:
    await _running_allocation(ssh_env, "mine1")
    await _running_allocation(ssh_env, "theirs1", users=("bob",))
    await ssh_env.place_running(ssh_env.hosts[0], "gone1")
    await ssh_env.release(ssh_env.hosts[0], "gone1")
    await ssh_env.place_running(ssh_env.hosts[0], "later1", start=False)

    wrong_key = await ssh_env.ssh("mine1", "true", key="mallory", source="127.0.0.11")
    assert wrong_key.returncode == 255
    assert "Permission denied (publickey)" in wrong_key.err
    other_users = await ssh_env.ssh("theirs1", "true", key="alice", source="127.0.0.12")
    assert other_users.returncode == 255
    assert "Permission denied (publickey)" in other_users.err
    unknown = await ssh_env.ssh("nosuchalloc", "true", source="127.0.0.13")
    assert unknown.returncode == 255
    assert "Permission denied (publickey)" in unknown.err

    # The owner learns why an allocation of theirs cannot be reached.
    await asyncio.sleep(0.3)  # the gateway follows the log
    released = await ssh_env.ssh("gone1", "true", source="127.0.0.14")
    assert released.returncode == 255
    assert "allocation gone1 is released" in released.err, released.err
    starting = await ssh_env.ssh("later1", "true", source="127.0.0.14")
    assert starting.returncode == 255
    assert "allocation later1 is placed" in starting.err
    assert "not running yet" in starting.err
    ended = [e for e in await ssh_env.session_events("gone1") if e["type"] == "SessionEnded"]
    assert [e["reason"] for e in ended] == ["ALLOCATION_NOT_RUNNING"]


async def test_a_session_to_an_allocation_still_starting_waits_for_it_to_run(ssh_env: SshEnv) -> None:
    """What is tried: a user connects while the allocation is placed (its container made, its
    running not yet in the log: a user connecting right after `create`, or a gateway folding
    the log a moment behind the allocator), and the allocation is logged as running half a
    second later. What must hold: the session waits and then runs its command (before, it was
    refused at once with "not running yet"); the audit has its start and its exit."""
    host = ssh_env.hosts[0]
    container_id = await ssh_env.place_running(host, "starting1", running=False)
    await asyncio.sleep(0.5)  # the gateway folds the placement
    session = asyncio.create_task(ssh_env.ssh("starting1", "echo reached", source="127.0.0.15"))
    deadline = time.monotonic() + 30
    while not await ssh_env.session_events("starting1") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)
    assert not session.done(), (await session).err

    await ssh_env.mark_running(host, "starting1", container_id)

    result = await session
    assert result.returncode == 0, result.err
    assert result.out.strip() == "reached"
    deadline = time.monotonic() + 10
    while len(events := await ssh_env.session_events("starting1")) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert [(e["type"], e.get("reason")) for e in events] == [
        ("SessionStarted", None),
        ("SessionEnded", "EXITED"),
    ]
    assert events[0]["host_id"] == host.host_id


async def test_failed_logins_are_slowed_down_then_locked_out(ssh_env: SshEnv) -> None:
    """Delays 0, 0.4, 0.8, 1.6 s before attempts 1-4 (POTLUCK_SSHGATEWAY_SOURCE_DELAY_S=0.4),
    then the source is locked out (..._LOCKOUT_AFTER=4), even with the right key."""
    await _running_allocation(ssh_env, "rate1")
    source = "127.0.0.20"
    times = []
    for _ in range(4):
        result = await ssh_env.ssh("rate1", "true", key="mallory", source=source)
        assert result.returncode == 255
        times.append(result.seconds)
    # Each attempt waits at least its delay; the first one none.
    assert times[1] >= 0.4, times
    assert times[2] >= 0.8, times
    assert times[3] >= 1.6, times
    assert times[0] < times[1] < times[2] < times[3], times
    locked = await ssh_env.ssh("rate1", "true", key="alice", source=source, options=["-o", "LogLevel=INFO"])
    assert locked.returncode == 255
    assert "too many failed logins from your address" in locked.err, locked.err
    # Another address, and the allocation's owner, are not locked out.
    assert (await ssh_env.ssh("rate1", "true", key="alice", source="127.0.0.21")).returncode == 0


async def test_agent_port_and_x11_forwarding_are_refused(ssh_env: SshEnv) -> None:
    await _running_allocation(ssh_env, "fwd1")
    remote = await ssh_env.ssh(
        "fwd1", "echo ran", options=["-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:20000:127.0.0.1:22"]
    )
    assert remote.returncode == 255
    assert "remote port forwarding failed" in remote.err
    assert "ran" not in remote.out

    local_port = free_port()
    argv = ssh_env.ssh_argv(
        "fwd1", "sleep 3", options=["-o", "LogLevel=INFO", "-L", f"127.0.0.1:{local_port}:127.0.0.1:22"]
    )
    client = await asyncio.create_subprocess_exec(*argv, stderr=asyncio.subprocess.PIPE)
    try:
        await asyncio.to_thread(wait_for_port, local_port, what="ssh -L", timeout=10)
        received = await asyncio.to_thread(_connect_and_read, local_port)
        assert received == b""
    finally:
        _, err = await client.communicate()
    assert "administratively prohibited" in err.decode(), err

    agent_dir = ssh_env.workdir / "agent"
    agent_dir.mkdir(exist_ok=True)
    sock = agent_dir / "sock"
    agent = await asyncio.create_subprocess_exec(
        "ssh-agent", "-D", "-a", str(sock), stdout=asyncio.subprocess.DEVNULL
    )
    try:
        await asyncio.to_thread(_wait_for_path, sock)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        add = await asyncio.create_subprocess_exec("ssh-add", "-q", str(ssh_env.key("alice")), env=env)
        assert await add.wait() == 0
        argv = ssh_env.ssh_argv("fwd1", 'echo "agent=[$SSH_AUTH_SOCK]"', options=["-A"])
        forwarded = await asyncio.to_thread(subprocess.run, argv, env=env, capture_output=True, timeout=30)
        assert forwarded.returncode == 0, forwarded.stderr
        assert forwarded.stdout == b"agent=[]\n"
    finally:
        agent.terminate()
        await agent.wait()

    x11 = await ssh_env.ssh("fwd1", "echo display=[$DISPLAY]", options=["-X", "-o", "LogLevel=INFO"])
    assert x11.out.strip() == "display=[]"


def _connect_and_read(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.settimeout(5)
        return conn.recv(100)


def _wait_for_path(path: "os.PathLike[str]") -> None:
    deadline = time.monotonic() + 10
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.02)


async def test_compression_is_off_even_when_the_client_asks(ssh_env: SshEnv) -> None:
    await _running_allocation(ssh_env, "cmp1")
    result = await ssh_env.ssh("cmp1", "true", options=["-C", "-v"])
    negotiated = [line for line in result.err.splitlines() if "kex: " in line and "cipher:" in line]
    assert len(negotiated) == 2, result.err
    assert all("compression: none" in line and "aes128-gcm" in line for line in negotiated), negotiated


async def test_two_hosts_each_reach_their_own_container(ssh_env: SshEnv) -> None:
    on_a = await _running_allocation(ssh_env, "twoa", host=0)
    on_b = await _running_allocation(ssh_env, "twob", host=1)
    a = await ssh_env.ssh("twoa", "cat /etc/hostname")
    b = await ssh_env.ssh("twob", "cat /etc/hostname")
    assert a.out.strip() == on_a[:12]
    assert b.out.strip() == on_b[:12]
    assert {c.container_id for c in ssh_env.hosts[0].driver.list_managed(ssh_env.hosts[0].host_id)} >= {on_a}
    assert on_b not in {c.container_id for c in ssh_env.hosts[0].driver.list_managed(None)}


async def test_disconnecting_leaves_no_process_in_the_container(ssh_env: SshEnv) -> None:
    await _running_allocation(ssh_env, "disc1")
    # Without a PTY; a background child; a process that ignores SIGHUP (gets SIGKILL).
    for command, markers in [
        ("sleep 1001", ["sleep 1001"]),
        ("sleep 1002 & sleep 1003", ["sleep 1002", "sleep 1003"]),
        ("trap '' HUP; sleep 1004; echo done", ["sleep 1004"]),
    ]:
        argv = ssh_env.ssh_argv("disc1", command)
        client = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.DEVNULL)
        for marker in markers:
            await _wait_until_running(ssh_env, "disc1", marker)
        client.kill()
        await client.wait()
        for marker in markers:
            await _wait_until_gone(ssh_env, "disc1", marker)
    # With a PTY.
    pty = PtySession(ssh_env.ssh_argv("disc1", "sleep 1005", options=["-tt"]), rows=24, cols=80)
    try:
        await _wait_until_running(ssh_env, "disc1", "sleep 1005")
        os.kill(pty.proc.pid, signal.SIGKILL)
        await _wait_until_gone(ssh_env, "disc1", "sleep 1005")
    finally:
        pty.close()
    ended = [e for e in await ssh_env.session_events("disc1") if e["type"] == "SessionEnded"]
    assert sum(e["reason"] == "CLIENT_DISCONNECTED" for e in ended) >= 3, ended


async def test_signals_reach_the_process(ssh_env: SshEnv) -> None:
    await _running_allocation(ssh_env, "sig1")
    key = asyncssh.read_private_key(str(ssh_env.key("alice")))
    async with asyncssh.connect(
        "127.0.0.1", ssh_env.port, username="sig1", client_keys=[key], known_hosts=None, agent_path=None,
        config=None,
    ) as conn:  # fmt: skip
        process = await conn.create_process("sleep 100", encoding=None)
        await _wait_until_running(ssh_env, "sig1", "sleep 100")
        process.send_signal("TERM")
        async with asyncio.timeout(10):
            completed = await process.wait()
    assert completed.exit_status == 143


async def test_a_signal_sent_while_the_session_starts_reaches_the_process(ssh_env: SshEnv) -> None:
    """A TERM sent at once after the exec request, before the gateway has linked the session to
    its host and before hostd has started the process: it must be held at both hops and
    delivered once the process runs (it was dropped, and the command ran its full 100 s)."""
    await _running_allocation(ssh_env, "sig2")
    key = asyncssh.read_private_key(str(ssh_env.key("alice")))
    async with asyncssh.connect(
        "127.0.0.1", ssh_env.port, username="sig2", client_keys=[key], known_hosts=None, agent_path=None,
        config=None,
    ) as conn:  # fmt: skip
        process = await conn.create_process("sleep 100", encoding=None)
        process.send_signal("TERM")
        async with asyncio.timeout(30):
            completed = await process.wait()
    # The shell, or the sleep it became, ended by the TERM.
    assert completed.exit_status == 143 or completed.exit_signal is not None, completed
    await _wait_until_gone(ssh_env, "sig2", "sleep 100")


async def test_a_session_ends_with_a_message_when_its_allocation_is_released(ssh_env: SshEnv) -> None:
    await _running_allocation(ssh_env, "rel1")
    session = asyncio.ensure_future(ssh_env.ssh("rel1", "sleep 600"))
    await _wait_until_running(ssh_env, "rel1", "sleep 600")
    await ssh_env.release(ssh_env.hosts[0], "rel1")
    async with asyncio.timeout(15):
        result = await session
    assert result.returncode == 255
    assert "allocation rel1 is now released" in result.err
    await _wait_until_gone(ssh_env, "rel1", "sleep 600")


async def test_session_audit_events_are_in_the_log(ssh_env: SshEnv) -> None:
    await _running_allocation(ssh_env, "aud1", host=1)
    result = await ssh_env.ssh("aud1", "head -c 1000 /dev/zero; cat > /dev/null; exit 3", input=b"y" * 5000)
    assert result.returncode == 3
    fingerprint = asyncssh.read_public_key(str(ssh_env.key("alice").with_suffix(".pub"))).get_fingerprint()
    deadline = time.monotonic() + 10
    while True:
        events = await ssh_env.session_events("aud1")
        ends = [e for e in events if e["type"] == "SessionEnded" and e["exit_status"] == 3]
        if ends or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert ends, events
    end = ends[-1]
    start = next(e for e in events if e["type"] == "SessionStarted" and e["session_id"] == end["session_id"])
    assert start["stream"] == f"session-{end['session_id']}"
    assert (end["reason"], end["bytes_in"], end["bytes_out"]) == ("EXITED", 5000, 1000)
    assert start["key_fingerprint"] == fingerprint
    assert start["user"] == "alice"
    assert start["host_id"] == ssh_env.hosts[1].host_id
    assert start["source_address"] == "127.0.0.1"
    assert start["kind"] == "exec"
    assert start["command"].startswith("head -c 1000")
    assert end["started_at"] <= end["ended_at"]


async def test_a_restarted_host_link_works_without_restarting_the_gateway(ssh_env: SshEnv) -> None:
    """Kill hostd's link as a crash would: the session on it ends with a message, a session
    while it is away is told the host is not connected, and once it is back sessions work,
    and the process the crash left behind is ended."""
    host = ssh_env.hosts[0]
    await _running_allocation(ssh_env, "crash1")
    session = asyncio.ensure_future(ssh_env.ssh("crash1", "sleep 700"))
    await _wait_until_running(ssh_env, "crash1", "sleep 700")
    ssh_env.kill_link(host)
    async with asyncio.timeout(15):
        lost = await session
    assert lost.returncode == 255
    assert "lost the connection to the machine running allocation crash1" in lost.err, lost.err

    away = await ssh_env.ssh("crash1", "true")
    assert away.returncode == 255
    assert "not connected to this gateway" in away.err, away.err

    ssh_env.start_link(host)
    await ssh_env.wait_reachable("crash1")
    assert (await ssh_env.ssh("crash1", "echo back")).out == "back\n"
    await _wait_until_gone(ssh_env, "crash1", "sleep 700")
    reasons = [e["reason"] for e in await ssh_env.session_events("crash1") if e["type"] == "SessionEnded"]
    assert "HOST_DISCONNECTED" in reasons
    assert "HOST_NOT_CONNECTED" in reasons


async def test_the_gateway_restarts_with_its_host_key_and_the_hosts_dial_back_in(ssh_env: SshEnv) -> None:
    """Connections from hosts drop (as when a laptop changes networks); hostd's link dials
    again by itself. Users' known_hosts stay valid: the host key is kept."""
    await _running_allocation(ssh_env, "gwr1", host=1)
    before = await _host_keys(ssh_env.port)
    session = asyncio.ensure_future(ssh_env.ssh("gwr1", "sleep 800"))
    await _wait_until_running(ssh_env, "gwr1", "sleep 800", host=1)
    await ssh_env.restart_gateway()
    async with asyncio.timeout(15):
        stopped = await session
    assert stopped.returncode == 255
    assert "the gateway is shutting down" in stopped.err, stopped.err
    await ssh_env.wait_reachable("gwr1")
    assert await _host_keys(ssh_env.port) == before
    await _wait_until_gone(ssh_env, "gwr1", "sleep 800", host=1)
    reasons = [e["reason"] for e in await ssh_env.session_events("gwr1") if e["type"] == "SessionEnded"]
    assert "GATEWAY_STOPPING" in reasons


async def _host_keys(port: int) -> list[str]:
    scan = await asyncio.create_subprocess_exec(
        "ssh-keyscan", "-p", str(port), "-t", "ed25519", "127.0.0.1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await scan.communicate()
    keys = sorted(
        line.split(None, 1)[1] for line in out.decode().splitlines() if line and not line.startswith("#")
    )
    assert keys, "ssh-keyscan found no host key"
    return keys


@pytest.mark.parametrize("tty", [False, True])
async def test_the_potluck_ssh_invocation_reaches_the_allocation(ssh_env: SshEnv, tty: bool) -> None:
    from potluck.sshgateway.client import ssh_argv

    alloc_id = f"cli{int(tty)}"
    await _running_allocation(ssh_env, alloc_id)
    argv = ssh_argv(
        alloc_id,
        "127.0.0.1",
        ssh_env.port,
        ssh_env.key("alice"),
        command=["test", "-t", "0", "&&", "echo", "tty", "||", "echo", "notty"],
        tty=tty,
        known_hosts_file="/dev/null",
        ssh=ssh_fixtures.SSH,
    )
    argv[1:1] = [
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
    ]
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    result = await asyncio.to_thread(
        subprocess.run, argv, env=env, capture_output=True, timeout=30, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (b"tty" if tty else b"notty")


async def test_a_real_hostd_registers_its_key_and_carries_sessions(
    pool: Pool, docker_engines: list[DockerEngine], tmp_path: Path
) -> None:
    """The whole path with the real processes: `potluck hostd` (its [[gateways]] config, its SSH
    key sent at registration and logged by the registry), the allocator's log, the gateway."""
    from potluck.hostd.config import HostdConfig

    if "gateways" not in HostdConfig.model_fields:
        pytest.fail(
            "hostd's config has no `gateways` yet (integration step 2 of the SSH gateway)", pytrace=False
        )
    settings = ssh_fixtures.gateway_settings(tmp_path)
    client_key = client_public_key(settings, make=True)
    env = SshEnv(
        tmp_path,
        pool.store,
        pool.database_url,
        settings.listen_address[1],
        settings.tunnel_address[1],
        client_key,
        ssh_fixtures.gateway_process(tmp_path, pool.database_url, settings),
        [],
        {},
    )
    try:
        host = await pool.enroll("laptop-ssh")
        config = pool.write_config(host, docker_engines[0])
        with config.open("a") as toml:
            toml.write(f'\n[[gateways]]\naddress = "{settings.tunnel_listen}"\nclient_key = "{client_key}"\n')
        pool.start_hostd(host)
        await pool.wait_for_host(host.host_id, "active")
        # The gateway starts after hostd, which keeps dialling it until it answers.
        await env.start_gateway()
        registered = [
            r for r in await pool.store.read_stream(f"host-{host.host_id}") if r.type == "HostRegistered"
        ]
        key_file = host_key_path(tmp_path / "laptop-ssh-state").with_suffix(".pub")
        assert registered[-1].data["ssh_host_key"] == key_file.read_text().strip()

        wanted = AllocationSpec(
            resources=Capacity(cpus=0.5, memory_bytes=80 * MB, disk_bytes=64 * MB),
            image=DEFAULT_TAG,
            command=["sleep", "3600"],
            ssh_keys=[env.public_key("alice")],
            pids_limit=64,
        )
        await place(pool.store, host.host_id, "real1", wanted)
        await wait_for_status(pool, "real1", "running")
        await env.wait_reachable("real1")
        limit = await env.ssh("real1", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
        assert limit.out.strip() == str(80 * MB)

        await release(pool.store, host.host_id, "real1")
        deadline = time.monotonic() + 10
        while "released" not in (refused := await env.ssh("real1", "true")).err:
            assert time.monotonic() < deadline, refused
            await asyncio.sleep(0.2)
        assert refused.returncode == 255
    finally:
        env.gateway.stop(timeout=15)


async def test_sftp_is_served_even_in_an_image_without_an_sftp_server(ssh_env: SshEnv) -> None:
    """What is tried: the sftp subsystem (`ssh -s ... sftp`) on the busybox image, which has no
    sftp-server, sending SFTP's INIT for version 3. What must hold: hostd answers (its own SFTP
    server, helper_sftp.py) with VERSION 3, and the session ends with status 0 at end of input."""
    await _running_allocation(ssh_env, "sftp1")
    argv = ssh_env.ssh_argv("sftp1", options=["-s"])  # ssh -s ... sftp: the subsystem request
    argv.append("sftp")
    init = (5).to_bytes(4, "big") + bytes([1]) + (3).to_bytes(4, "big")  # SSH_FXP_INIT, version 3
    result = await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, timeout=30, input=init, env=_no_agent()
    )
    assert result.returncode == 0, result
    assert result.stdout[4] == 2, result.stdout  # SSH_FXP_VERSION
    assert int.from_bytes(result.stdout[5:9], "big") == 3


async def test_a_subsystem_other_than_sftp_is_refused_with_its_reason(ssh_env: SshEnv) -> None:
    """What is tried: `ssh -s ... netconf` on a running allocation, then a command on the same
    allocation. What must hold: the client exits 255 with the gateway's reason on stderr (not
    only OpenSSH's "subsystem request failed"), nothing of the refused session is in the
    audit log (nothing reached the host), and the allocation still answers."""
    await _running_allocation(ssh_env, "subsys1")
    argv = ssh_env.ssh_argv("subsys1", options=["-s"])
    argv.append("netconf")
    result = await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, timeout=30, input=b"", env=_no_agent()
    )
    assert result.returncode == 255, result
    assert b"the gateway serves only the sftp subsystem, not 'netconf'" in result.stderr, result.stderr
    answered = await ssh_env.ssh("subsys1", "echo still-here")
    assert answered.out.strip() == "still-here", answered
    logged = await ssh_env.store.read_all(0, 100_000)
    commands = [r.data.get("command") for r in logged if r.type == "SessionStarted"]
    assert "echo still-here" in commands  # audited as any session is
    assert "netconf" not in commands


def _no_agent() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}


#: Waits for hostd's SFTP exec that works on /big, and floods its stdout and stderr.
_FLOODER = """cat > /flood.sh <<'EOF'
while :; do
  for p in /proc/[0-9]*; do
    case "$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)" in
      *potluck-sftp\\ /big*)
        yes | head -c 150000000 > $p/fd/1 &
        yes | head -c 150000000 > $p/fd/2 &
        exit;;
    esac
  done
done
EOF
mkdir /big && cd /big && touch $(seq 400) && cd / && ls /big | wc -l
sh /flood.sh < /dev/null > /dev/null 2>&1 &
"""


async def test_a_container_flooding_hostds_own_sftp_operations_cannot_fill_hostds_memory(
    ssh_env: SshEnv,
) -> None:
    """What is tried: in the busybox image (no sftp-server: hostd serves SFTP itself, each
    operation an exec of the helper whose output hostd collects), a process of the container's
    waits for the exec that works on /big and writes 150 MB into each of its stdout and stderr
    (through /proc/<pid>/fd, as root in the container may), while the user lists /big with
    OpenSSH's sftp. What must hold: hostd's link (a process on the member's machine, outside
    every bound of the container's) grows by less than 100 MB, the listing ends (it fails)
    rather than hanging, and once the flooder is gone the next listing is served in full."""
    await _running_allocation(ssh_env, "flood1")
    host = ssh_env.hosts[0]
    assert host.link is not None
    made = await ssh_env.in_container(host, "flood1", _FLOODER)
    assert made.split() == ["400"], made
    await _wait_until_running(ssh_env, "flood1", "flood.sh")
    before = peak = _rss_mb(host.link.pid)
    argv = ssh_env.ssh_argv("flood1")
    sftp = ["sftp", "-b", "-", *argv[1:]]
    sftp[sftp.index("-p")] = "-P"
    for _ in range(8):
        client = await asyncio.create_subprocess_exec(
            *sftp, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=_no_agent()
        )
        listing = asyncio.ensure_future(client.communicate(b"ls /big\n"))
        deadline = time.monotonic() + 60
        while not listing.done() and time.monotonic() < deadline and peak - before < 400:
            peak = max(peak, _rss_mb(host.link.pid))
            await asyncio.sleep(0.1)
        ended = listing.done()
        if not ended:
            client.kill()
        await listing
        if client.returncode != 0:
            break
        # On a loaded machine the flooder can miss a quick listing's exec (it is still looking),
        # or find it as it ends (its writes go nowhere and it is gone): the listing was served as
        # usual and the test is not what it says yet; a flooder that is gone is started again.
        flooder = await ssh_env.in_container(host, "flood1", "ps -o pid,args")
        if "flood.sh" not in flooder:
            await ssh_env.in_container(host, "flood1", "sh /flood.sh < /dev/null > /dev/null 2>&1 &")
            await _wait_until_running(ssh_env, "flood1", "flood.sh")
    assert peak - before < 100, (before, peak)
    assert ended, "the listing hung"
    assert client.returncode != 0
    await _wait_until_gone(ssh_env, "flood1", "flood.sh")
    again = await asyncio.to_thread(
        subprocess.run, sftp, input=b"ls -1 /big\n", capture_output=True, timeout=60, env=_no_agent()
    )
    assert again.returncode == 0, again
    assert len(again.stdout.split()) >= 400, again.stdout[:400]
