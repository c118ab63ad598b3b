"""The gateway and hostd against hostile users (issue 13): algorithms, throttling, caps.

The gateway here runs with the default connection throttle (2 new connections a
second per address, a burst of 10) and small session caps; each test connects
from its own loopback address (127.0.0.x), since throttling and failed logins
are counted per address. ssh-audit connects from 127.0.0.1 and runs last.
"""

import asyncio
import contextlib
import json
import shutil
import socket
import sys
import time
from pathlib import Path

import asyncssh
import pytest

from tests.fixtures import ssh as ssh_fixtures
from tests.fixtures.ssh import LINK_MAX_SESSIONS, LINK_MAX_SESSIONS_PER_ALLOCATION, Result, SshEnv

ssh_env = ssh_fixtures.ssh_env

#: Overrides of the tests' usual (generous) gateway settings: the defaults for throttling,
#: small caps on sessions.
STRICT = {
    "POTLUCK_SSHGATEWAY_SOURCE_CONNECTIONS_PER_S": "2",
    "POTLUCK_SSHGATEWAY_SOURCE_CONNECTION_BURST": "10",
    "POTLUCK_SSHGATEWAY_SOURCE_MAX_UNAUTHENTICATED": "10",
    "POTLUCK_SSHGATEWAY_MAX_SESSIONS_PER_CONNECTION": "2",
    "POTLUCK_SSHGATEWAY_MAX_SESSIONS_PER_USER": "3",
    # One more than the sessions per user: the sessions test holds 4 connections at once.
    "POTLUCK_SSHGATEWAY_MAX_CONNECTIONS_PER_USER": "4",
}
INFO = ["-o", "LogLevel=INFO"]


@pytest.fixture(scope="module")
async def env(ssh_env: SshEnv) -> SshEnv:
    await ssh_env.restart_gateway(STRICT)
    return ssh_env


async def _running(env: SshEnv, alloc_id: str, owner: str, source: str, host: int = 0) -> None:
    await env.place_running(env.hosts[host], alloc_id, users=(owner,))
    deadline = time.monotonic() + 30
    while (result := await env.ssh(alloc_id, "true", key=owner, source=source)).returncode != 0:
        assert time.monotonic() < deadline, f"{alloc_id} never reachable: {result.err}\n{env.logs()}"
        await asyncio.sleep(0.5)  # within the throttle's 2 a second


async def _count_running(env: SshEnv, alloc_id: str, marker: str, n: int, host: int = 0) -> None:
    deadline = time.monotonic() + 15
    while True:
        listing = await env.in_container(env.hosts[host], alloc_id, "ps -o args")
        if sum(marker in line for line in listing.splitlines()) >= n:
            return
        assert time.monotonic() < deadline, f"{n} x {marker!r} never ran in {alloc_id}:\n{listing}"
        await asyncio.sleep(0.1)


class _Guesser(asyncssh.SSHClient):
    """An SSH client that offers one (wrong) key, then holds its connection open, logging in."""

    def __init__(self, refused: asyncio.Event, release: asyncio.Event) -> None:
        self._refused = refused
        self._release = release

    async def public_key_auth_requested(self) -> None:
        # Asked for another key: the one given (client_keys) was refused.
        self._refused.set()
        await self._release.wait()


async def _guess(env: SshEnv, key: Path, source: str, refused: asyncio.Event, release: asyncio.Event) -> None:
    with contextlib.suppress(asyncssh.PermissionDenied, asyncssh.DisconnectError, OSError):
        conn = await asyncssh.connect(
            "127.0.0.1",
            env.port,
            local_addr=(source, 0),
            username="guess1",
            client_factory=lambda: _Guesser(refused, release),
            client_keys=[str(key)],
            known_hosts=None,
            agent_path=None,
            config=None,
            preferred_auth="publickey",
        )
        conn.close()


async def test_failed_logins_count_as_they_happen_so_parallel_guessing_is_locked_out(env: SshEnv) -> None:
    """What is tried: 6 connections from one address each offer a wrong key and stay open;
    then OpenSSH logs in from that address with the right key. Before the fix a failure was
    counted only when its connection ended, so while the guessers held theirs open nothing
    was counted, and the login went through (as would a guess among many held connections).
    What must hold: a user offering 5 wrong keys before the right one gets in, twice and
    without delay (no attacker); but the 6 guesses lock the address out at once
    (POTLUCK_SSHGATEWAY_SOURCE_LOCKOUT_AFTER=4): the right key is refused and the banner says
    why, and the other address is not affected."""
    await _running(env, "guess1", "alice", "127.0.0.40")
    wrong = [opt for i in range(5) for opt in ("-i", str(env.key(f"mallory{i}")))]
    for _ in range(2):
        many_keys = await env.ssh("guess1", "true", source="127.0.0.41", options=wrong)
        assert many_keys.returncode == 0, many_keys.err
    # A failure taken back on success must not delay the next login: the gateway logs every
    # delay it imposes (`login.delayed`), and none for this address.
    gateway_log = env.gateway.log_path.read_text(errors="replace").splitlines()
    delayed = [line for line in gateway_log if "login.delayed" in line and "127.0.0.41" in line]
    assert not delayed, delayed

    release = asyncio.Event()
    refused = [asyncio.Event() for _ in range(6)]
    guessers = [
        asyncio.ensure_future(_guess(env, env.key(f"mallory{i}"), "127.0.0.42", refused[i], release))
        for i in range(6)
    ]
    try:
        async with asyncio.timeout(15):
            await asyncio.gather(*(r.wait() for r in refused))
        locked = await env.ssh("guess1", "true", source="127.0.0.42", options=INFO)
        assert locked.returncode == 255, locked.err
        assert "too many failed logins from your address" in locked.err, locked.err
        assert (await env.ssh("guess1", "true", source="127.0.0.41")).returncode == 0
    finally:
        release.set()
        await asyncio.gather(*guessers, return_exceptions=True)


async def test_sessions_are_capped_per_connection_and_per_user(env: SshEnv) -> None:
    """What is tried: a 3rd session on one connection (cap 2), and a 4th session of one user
    over separate connections (cap 3); before the fix there was no cap at all. Then a session's
    close and the next session's open sent in one TCP segment on a full connection: before
    that fix the open was refused for the cap (asyncssh frees a closed channel a loop turn
    later), and a user opening 10 at a time was told "10 sessions open" with none open.
    What must hold: each over the cap is refused with a message saying which cap; the sessions
    in progress go on; once sessions end, their places are free again, for an open sent
    right behind the close too."""
    await _running(env, "capu1", "carol", "127.0.0.50")
    sleepers = [
        asyncio.ensure_future(env.ssh("capu1", "sleep 4; echo slept", key="carol", source="127.0.0.50"))
        for _ in range(3)
    ]
    await _count_running(env, "capu1", "sleep 4", 3)
    fourth = await env.ssh("capu1", "true", key="carol", source="127.0.0.51", options=INFO)
    assert fourth.returncode == 255
    assert "potluck: you have 3 sessions open, the most allowed" in fourth.err, fourth.err
    assert [s.out for s in await asyncio.gather(*sleepers)] == ["slept\n"] * 3
    assert (await env.ssh("capu1", "true", key="carol", source="127.0.0.51")).returncode == 0

    # Per connection: a real SSH client holding one connection (OpenSSH's would need a mux).
    await _running(env, "capc1", "dave", "127.0.0.52")
    async with await env.connect("capc1", key="dave", source="127.0.0.52") as conn:
        first, _ = await conn.create_session(asyncssh.SSHClientSession, "sleep 30")
        second, _ = await conn.create_session(asyncssh.SSHClientSession, "sleep 30")
        with pytest.raises(asyncssh.ChannelOpenError) as refused:
            await conn.create_session(asyncssh.SSHClientSession, "true")
        assert "this connection has 2 sessions open" in refused.value.reason
        first.close()
        await first.wait_closed()
        third, _ = await conn.create_session(asyncssh.SSHClientSession, "exit 3")
        await third.wait_closed()
        assert third.get_exit_status() == 3

        # A session's close and the next one's open in one segment (as a client that opens the
        # next as soon as one is done often sends them): the closed one's place is free for it.
        held, _ = await conn.create_session(asyncssh.SSHClientSession, "sleep 30")
        sock = conn.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        second.close()
        opening = asyncio.ensure_future(conn.create_session(asyncssh.SSHClientSession, "exit 4"))
        await asyncio.sleep(0.05)  # the open written into the corked socket, behind the close
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        next_one, _ = await opening
        await next_one.wait_closed()
        assert next_one.get_exit_status() == 4
        held.close()


async def _idle_connection(
    env: SshEnv, alloc_id: str, owner: str, source: str
) -> asyncssh.SSHClientConnection:
    return await env.connect(alloc_id, key=owner, source=source)


async def test_authenticated_connections_are_capped_per_user(env: SshEnv) -> None:
    """What is tried: one user holds 4 logged-in connections without a session (the cap), over
    two of their allocations and from two addresses, then logs in once more with OpenSSH.
    Before the fix nothing bounded them: 400 idle connections of one user were taken in
    seconds, each a descriptor of the gateway's for as long as the client kept it.
    What must hold: the 5th connection is disconnected right after logging in, with a message
    naming the cap that ssh prints (exit status 255), and the gateway closes it; another user
    still gets in; once one of the 4 closes, the user gets in again."""
    await _running(env, "conn1", "ivan", "127.0.0.80")
    await _running(env, "conn2", "ivan", "127.0.0.80")
    await _running(env, "conn3", "judy", "127.0.0.82")
    held = [
        await _idle_connection(env, alloc_id, "ivan", source)
        for alloc_id, source in (
            ("conn1", "127.0.0.80"), ("conn1", "127.0.0.80"), ("conn2", "127.0.0.81"), ("conn2", "127.0.0.81")
        )
    ]  # fmt: skip
    try:
        over = await env.ssh("conn2", "echo in", key="ivan", source="127.0.0.81", options=INFO)
        assert over.returncode == 255, over.err
        assert over.out == ""
        assert "potluck: you have 4 connections open to the gateway, the most allowed" in over.err, over.err
        # A client that does not leave by itself is closed by the gateway (the disconnect may
        # come while asyncssh is still finishing its login, or just after).
        with contextlib.suppress(asyncssh.DisconnectError):
            fifth = await _idle_connection(env, "conn1", "ivan", "127.0.0.80")
            async with asyncio.timeout(10):
                await fifth.wait_closed()
        other = await env.ssh("conn3", "echo other", key="judy", source="127.0.0.82")
        assert other.out == "other\n", other.err
        held.pop().close()
        deadline = time.monotonic() + 10
        while (again := await env.ssh("conn1", "echo again", key="ivan", source="127.0.0.80")).returncode:
            assert time.monotonic() < deadline, again.err
            await asyncio.sleep(0.5)
        assert again.out == "again\n"
    finally:
        for conn in held:
            conn.close()


async def test_hostd_caps_its_sessions_and_serves_the_other_allocations(env: SshEnv) -> None:
    """What is tried: with hostd capped at 3 sessions, 2 per allocation, one user opens a 3rd
    session to their allocation (the gateway allows it: its cap is 3 per user); then another
    user opens sessions to theirs on the same host. Before the fix hostd dialled a connection
    and started an exec for every session, without bound.
    What must hold: the 3rd session is refused with a message naming the allocation's cap, the
    other user still gets a session, the one past the host's cap is refused saying so, and when
    sessions end their slots are free again."""
    host = env.hosts[0]
    assert host.link is not None
    host.link.stop(timeout=10)
    env.start_link(host, {LINK_MAX_SESSIONS: "3", LINK_MAX_SESSIONS_PER_ALLOCATION: "2"})
    try:
        await _running(env, "hcap1", "erin", "127.0.0.55")
        await _running(env, "hcap2", "frank", "127.0.0.56")
        erin = [
            asyncio.ensure_future(env.ssh("hcap1", "sleep 5", key="erin", source="127.0.0.55"))
            for _ in range(2)
        ]
        await _count_running(env, "hcap1", "sleep 5", 2)
        third = await env.ssh("hcap1", "echo ran", key="erin", source="127.0.0.55")
        assert third.returncode == 255
        assert "allocation hcap1 has 2 sessions open, the most one allocation may have" in third.err, (
            third.err + env.logs()
        )
        assert third.out == ""

        frank = asyncio.ensure_future(env.ssh("hcap2", "sleep 5", key="frank", source="127.0.0.56"))
        await _count_running(env, "hcap2", "sleep 5", 1)
        full: Result = await env.ssh("hcap2", "true", key="frank", source="127.0.0.56")
        assert full.returncode == 255
        assert "carries 3 sessions, its most" in full.err, full.err

        assert [r.returncode for r in await asyncio.gather(*erin, frank)] == [0, 0, 0]
        after = await env.ssh("hcap1", "echo again", key="erin", source="127.0.0.55")
        assert after.out == "again\n", after.err
    finally:
        host.link.stop(timeout=10)
        env.start_link(host)


async def _first_line(source: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        async with asyncio.timeout(5):
            return await reader.readline()
    finally:
        writer.close()


async def test_new_connections_and_logins_in_progress_are_throttled_per_address(env: SshEnv) -> None:
    """What is tried: ssh-audit's DHEat rate test (3 at a time, up to 38 connections in
    1.5 s) from one address; then 11 connections from another that never log in.
    Before the fix every connection got the SSH banner (38 in 14 ms).
    What must hold: fewer than 20 banners a second (ssh-audit's limit) and the rest refused
    with a line saying why (which `ssh -v` shows); another address is not affected; the 11th
    idle connection is refused (10 per address may be logging in) until one goes away."""
    await _running(env, "thr1", "gina", "127.0.0.61")
    source = "127.0.0.60"
    started = time.monotonic()
    lines: list[bytes] = []
    banners: list[bytes] = []
    while len(banners) < 38 and time.monotonic() - started < 1.5:
        lines += await asyncio.gather(*(_first_line(source, env.port) for _ in range(3)))
        banners = [line for line in lines if line.startswith(b"SSH-")]
    elapsed = time.monotonic() - started
    refused = [line for line in lines if line.startswith(b"potluck: too many new connections")]
    assert len(banners) / elapsed < 20, (len(banners), elapsed)
    assert len(banners) <= 10 + 2 * elapsed + 1
    assert len(banners) + len(refused) == len(lines), lines

    for _ in range(3):
        # Take what tokens came back since, then ssh (at 2 a second, another may come between).
        while (await _first_line(source, env.port)).startswith(b"SSH-"):
            pass
        throttled = await env.ssh("thr1", "true", key="gina", source=source, options=["-v"])
        if throttled.returncode == 255:
            break
    assert throttled.returncode == 255
    assert "potluck: too many new connections from your address" in throttled.err
    other = await env.ssh("thr1", "echo in", key="gina", source="127.0.0.61")
    assert other.out == "in\n", other.err
    await asyncio.sleep(1.0)  # two more tokens
    assert (await env.ssh("thr1", "true", key="gina", source=source)).returncode == 0

    idle_source = "127.0.0.62"
    idle = []
    for _ in range(10):
        reader, writer = await asyncio.open_connection("127.0.0.1", env.port, local_addr=(idle_source, 0))
        async with asyncio.timeout(5):
            assert (await reader.readline()).startswith(b"SSH-")
        idle.append(writer)
    try:
        await asyncio.sleep(0.6)  # a token: what refuses now is the count of logins in progress
        assert (await _first_line(idle_source, env.port)).startswith(
            b"potluck: too many connections from your address are still logging in"
        )
        idle.pop().close()
        await asyncio.sleep(0.6)
        assert (await _first_line(idle_source, env.port)).startswith(b"SSH-")
    finally:
        for writer in idle:
            writer.close()


def _ssh_audit() -> str:
    return shutil.which("ssh-audit") or str(Path(sys.executable).parent / "ssh-audit")


async def test_ssh_audit_finds_no_failing_algorithm_and_no_throttling_warning(env: SshEnv) -> None:
    """What is tried: ssh-audit (JSON output) against the gateway's users' port, with the default
    throttle; OpenSSH with its defaults, with one modern algorithm each, and with only old ones.
    Before the fix ssh-audit failed nine algorithms (SHA-1 key exchanges and MACs, NIST curves)
    and warned that 38 connections were opened in 14 ms.
    What must hold: no algorithm with a "fail" note, no throttling note; OpenSSH connects with
    the modern algorithms and is refused with only the old ones."""
    await _running(env, "aud1", "hank", "127.0.0.70")
    modern = await env.ssh(
        "aud1",
        "echo modern",
        key="hank",
        source="127.0.0.70",
        options=["-o", "KexAlgorithms=curve25519-sha256", "-o", "Ciphers=aes256-gcm@openssh.com"],
    )
    assert modern.out == "modern\n", modern.err
    old = await env.ssh(
        "aud1",
        "true",
        key="hank",
        source="127.0.0.70",
        options=["-o", "KexAlgorithms=diffie-hellman-group14-sha1,ecdh-sha2-nistp256", *INFO],
    )
    assert old.returncode == 255
    assert "no matching key exchange method found" in old.err, old.err

    audit = await asyncio.create_subprocess_exec(
        _ssh_audit(),
        "-j",
        "-p",
        str(env.port),
        "127.0.0.1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await audit.communicate()
    assert out, err.decode()
    report = json.loads(out)
    failing = {
        kind: [a["algorithm"] for a in report.get(kind, []) if a.get("notes", {}).get("fail")]
        for kind in ("kex", "key", "enc", "mac")
    }
    assert failing == {"kex": [], "key": [], "enc": [], "mac": []}, report
    assert not any("throttling" in note for note in report.get("additional_notes", [])), report
    assert report["cves"] == []
    assert "critical" not in report.get("recommendations", {}), report["recommendations"]
    offered = {a["algorithm"] for kind in ("kex", "mac") for a in report[kind]}
    assert not [name for name in offered if "sha1" in name or "nistp" in name], offered
