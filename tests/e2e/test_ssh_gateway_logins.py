"""The users' port against what an outside SSH auditor and a hostile user try at login and on a
session's first requests: the signatures and keys it takes, how many authentication requests one
connection may send, and how much of a session's environment it keeps.

The real OpenSSH client logs in wherever it can say what is tried; asyncssh sends what OpenSSH
will not (authentication requests as fast as a socket takes them). Each test connects from its
own loopback address, since failed logins are counted per address.
"""

import asyncio
import hashlib
import subprocess
import time
from pathlib import Path

import asyncssh
from asyncssh.constants import MSG_USERAUTH_REQUEST
from asyncssh.packet import Boolean, String

from potluck.sshgateway.request import MAX_ENV_VALUE, MAX_ENV_VARS
from tests.fixtures import ssh as ssh_fixtures
from tests.fixtures.ssh import SshEnv

ssh_env = ssh_fixtures.ssh_env

INFO = ["-o", "LogLevel=INFO"]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def _keypair(env: SshEnv, name: str, *keygen: str) -> None:
    """A key pair of the type `keygen` asks for, as env.key(name) (ssh-keygen, no passphrase)."""
    path = env.workdir / f"user-{name}"
    subprocess.run(["ssh-keygen", "-q", *keygen, "-N", "", "-C", f"{name}@test", "-f", str(path)], check=True)
    env.keys[name] = path


async def test_a_login_signs_with_sha2_by_a_key_neither_dsa_nor_short_rsa(ssh_env: SshEnv) -> None:
    """What is tried: an allocation with an RSA 3072-bit, an RSA 1024-bit and a DSA key
    registered (the allocator takes all three); OpenSSH logs in with each, the 3072-bit one
    both with SHA-2 and asked to sign with SHA-1 (`ssh-rsa`). Before the fix the gateway
    announced `ssh-rsa` and `ssh-dss` in server-sig-algs and let every one of them in.
    What must hold: only the 3072-bit key signing with SHA-2 runs the command; the SHA-1 login
    finds no signature algorithm the gateway takes; the DSA and the 1024-bit key are refused,
    each with a banner that says why, and no session of theirs is recorded."""
    env = ssh_env
    _keypair(env, "rsa3072", "-t", "rsa", "-b", "3072")
    _keypair(env, "rsa1024", "-t", "rsa", "-b", "1024")
    _keypair(env, "dsa", "-t", "dsa")
    await env.place_running(env.hosts[0], "sig1", users=("rsa3072", "rsa1024", "dsa"))
    await env.wait_reachable("sig1", key="rsa3072")
    sha2 = await env.ssh("sig1", "echo in", key="rsa3072", source="127.0.0.150")
    assert (sha2.returncode, sha2.out) == (0, "in\n"), sha2.err
    sha1 = await env.ssh(
        "sig1",
        "echo in",
        key="rsa3072",
        source="127.0.0.150",
        options=["-o", "PubkeyAcceptedAlgorithms=ssh-rsa", *INFO],
    )
    assert (sha1.returncode, sha1.out) == (255, ""), sha1
    assert "Permission denied (publickey)" in sha1.err
    short = await env.ssh("sig1", "echo in", key="rsa1024", source="127.0.0.151", options=INFO)
    assert (short.returncode, short.out) == (255, ""), short
    assert "this RSA key has 1024 bits, fewer than the 2048 required" in short.err, short.err
    dsa = await env.ssh(
        "sig1",
        "echo in",
        key="dsa",
        source="127.0.0.152",
        options=["-o", "PubkeyAcceptedAlgorithms=+ssh-dss", *INFO],
    )
    assert (dsa.returncode, dsa.out) == (255, ""), dsa
    assert "DSA keys are refused" in dsa.err, dsa.err
    started = [e for e in await env.session_events("sig1") if e["type"] == "SessionStarted"]
    assert {e["key_fingerprint"] for e in started} == {_fingerprint(env, "rsa3072")}, started


def _fingerprint(env: SshEnv, name: str) -> str:
    return str(asyncssh.read_public_key(str(env.key(name)) + ".pub").get_fingerprint("sha256"))


async def test_a_signature_with_sha1_is_refused_even_from_a_client_that_ignores_server_sig_algs(
    ssh_env: SshEnv,
) -> None:
    """What is tried: a client that signs its login with `ssh-rsa` (SHA-1) although the gateway
    does not announce it, with an RSA key registered on the allocation (asyncssh, made to sign
    so by hand: OpenSSH will not). Before the fix asyncssh verified any signature the key
    could make, whatever the server announced.
    What must hold: the login is refused, with a banner naming SHA-1; the same key signing
    with rsa-sha2-256 on the next connection gets in."""
    env = ssh_env
    _keypair(env, "rsa-sha1", "-t", "rsa", "-b", "2048")
    await env.place_running(env.hosts[0], "sig2", users=("rsa-sha1",))
    await env.wait_reachable("sig2", key="rsa-sha1")
    key = asyncssh.read_private_key(str(env.key("rsa-sha1")))
    banners: list[str] = []

    class SignsWithSha1(asyncssh.SSHClient):
        def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
            self.conn = conn

        def auth_banner_received(self, msg: str, lang: str) -> None:
            banners.append(msg)

        async def public_key_auth_requested(self) -> None:
            # The signed request as RFC 4252 section 7 has it, signed with ssh-rsa; the answer
            # (success, or failure and then no method left) ends the wait below.
            request = (
                String("sig2"),
                String("ssh-connection"),
                String("publickey"),
                Boolean(True),
                String("ssh-rsa"),
                String(key.public_data),
            )
            session_id = self.conn._session_id
            signed = String(session_id) + bytes([MSG_USERAUTH_REQUEST]) + b"".join(request)
            self.conn.send_packet(MSG_USERAUTH_REQUEST, *request, String(key.sign(signed, b"ssh-rsa")))
            await asyncio.sleep(20)

    try:
        async with asyncio.timeout(15):
            conn, _ = await asyncssh.create_connection(
                SignsWithSha1,
                "127.0.0.1",
                env.port,
                local_addr=("127.0.0.153", 0),
                username="sig2",
                known_hosts=None,
                agent_path=None,
                client_keys=[],
                config=None,
                preferred_auth="publickey",
            )
        conn.close()
        raise AssertionError("the login signed with SHA-1 was let in")
    except asyncssh.PermissionDenied:
        pass
    assert any("RSA signatures with SHA-1 (ssh-rsa) are refused" in b for b in banners), banners
    sha2 = await env.ssh("sig2", "echo in", key="rsa-sha1", source="127.0.0.153")
    assert (sha2.returncode, sha2.out) == (0, "in\n"), sha2.err


async def _flood(env: SshEnv, source: str, request: tuple[bytes, ...]) -> tuple[float, int]:
    """Send `request` (an authentication request's fields) 100,000 times on one connection from
    `source`, without waiting for answers; how long the connection lasted, and how many were sent."""
    sent = 0

    class Floods(asyncssh.SSHClient):
        def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
            self.conn = conn

        async def public_key_auth_requested(self) -> None:
            nonlocal sent
            while sent < 100_000 and not self.conn.is_closed():
                for _ in range(500):
                    self.conn.send_packet(MSG_USERAUTH_REQUEST, *request)
                sent += 500
                await asyncio.sleep(0.005)
            await asyncio.sleep(60)

    started = time.monotonic()
    try:
        async with asyncio.timeout(25):
            await asyncssh.create_connection(
                Floods,
                "127.0.0.1",
                env.port,
                local_addr=(source, 0),
                username="auth1",
                known_hosts=None,
                agent_path=None,
                client_keys=[],
                config=None,
                preferred_auth="publickey",
            )
    except (asyncssh.Error, OSError):
        return time.monotonic() - started, sent
    raise AssertionError("the flooding connection logged in")


async def test_a_connection_flooding_authentication_requests_is_ended_at_once(ssh_env: SshEnv) -> None:
    """What is tried: a client with the public half of a key registered on an allocation (a
    public key: anyone may hold it) sends 100,000 signed authentication requests with a bad
    signature on one connection, without waiting for answers, then 100,000 of the `none`
    method on another. Before the fix the gateway answered them all for the whole login time
    (30 s): one connection held its one event loop at 87% of a core (47% with `none`), and
    every session waited behind it.
    What must hold: each connection is ended within a few seconds, with a reason, having cost
    the gateway little CPU; the owner's OpenSSH client, offering five unregistered keys
    before the right one, still logs in on one connection."""
    env = ssh_env
    await env.place_running(env.hosts[0], "auth1", users=("owner1",))
    await env.wait_reachable("auth1", key="owner1")
    public = asyncssh.read_public_key(str(env.key("owner1")) + ".pub")
    pid = env.gateway.pid
    assert pid is not None
    bad_signature = String(String(public.algorithm) + String(b"\0" * 64))
    floods = {
        "publickey": (Boolean(True), String(public.algorithm), String(public.public_data), bad_signature),
        "none": (),
    }
    for (method, tail), source in zip(floods.items(), ("127.0.0.154", "127.0.0.155"), strict=True):
        request = (String("auth1"), String("ssh-connection"), String(method), *tail)
        cpu = _cpu_seconds(pid)
        took, sent = await _flood(env, source, request)
        spent = _cpu_seconds(pid) - cpu
        assert took < 5, f"{method}: the connection stayed {took:.1f} s ({sent} requests sent)"
        assert spent < 1.5, f"{method}: the gateway spent {spent:.2f} s of CPU on it"
    log_text = env.gateway.log_path.read_text(errors="replace")
    assert log_text.count('"login.too_many_requests"') >= 2
    names = ("extra1", "extra2", "extra3", "extra4", "extra5", "owner1")
    offered = [opt for name in names for opt in ("-i", str(env.key(name)))]
    owner = await env.ssh("auth1", "echo in", key="owner1", source="127.0.0.156", options=offered)
    assert (owner.returncode, owner.out) == (0, "in\n"), owner.err


async def test_a_session_keeps_only_a_bounded_locale_of_the_environment_it_is_sent(ssh_env: SshEnv) -> None:
    """What is tried: OpenSSH sends, on one session, LANG and LC_TIME, LD_PRELOAD, 600 LC_*
    variables of 8 KB each (5 MB) and 40 short LC_* ones (`SetEnv` in its config file).
    Before the fix the gateway kept every `env` request whole for the session's life and sent
    every LC_* one on to hostd, which kept them too and put them in the exec: 2,000 of 50 KB
    grew the gateway by 300 MB and hostd by 200 MB, from one session.
    What must hold: the command sees LANG and LC_TIME, no LD_PRELOAD, none of the long values,
    and no more than MAX_ENV_VARS of the user's variables in all; the gateway's memory grows by
    less than the 5 MB sent; the session is recorded as any other."""
    env = ssh_env
    await env.place_running(env.hosts[0], "env1", users=("envy",))
    await env.wait_reachable("env1", key="envy")
    big = "v" * 8000
    sent = ["LANG=C.UTF-8", "LC_TIME=en_GB.UTF-8", "LD_PRELOAD=/tmp/evil.so"]
    sent += [f"LC_BIG{i}={big}" for i in range(600)]
    sent += [f"LC_S{i}=s{i}" for i in range(40)]
    config = env.workdir / "env1.ssh_config"
    config.write_text("SetEnv " + " ".join(sent) + "\n")
    pid = env.gateway.pid
    assert pid is not None
    before = _rss_kb(pid)
    argv = env.ssh_argv("env1", "env", key="envy", source="127.0.0.157")
    argv[argv.index("/dev/null")] = str(config)  # -F: the config with the SetEnv line
    ran = await asyncio.to_thread(subprocess.run, argv, capture_output=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    seen = dict(line.split("=", 1) for line in ran.stdout.decode().splitlines() if "=" in line)
    assert seen.get("LANG") == "C.UTF-8"
    assert seen.get("LC_TIME") == "en_GB.UTF-8"
    assert "LD_PRELOAD" not in seen
    assert not [name for name, value in seen.items() if len(value) > MAX_ENV_VALUE]
    users = [name for name in seen if name == "LANG" or name.startswith("LC_")]
    assert 2 < len(users) <= MAX_ENV_VARS, users
    grown = _rss_kb(pid) - before
    assert grown < 5000, f"the gateway grew by {grown} kB"
    started = [e for e in await env.session_events("env1") if e["type"] == "SessionStarted"]
    assert [e["command"] for e in started if e["source_address"] == "127.0.0.157"] == ["env"]


async def test_a_locale_variable_with_a_nul_byte_is_dropped_and_the_session_runs(ssh_env: SshEnv) -> None:
    """Tried: a session sent LANG with a NUL byte in its value (`C\\0LD_PRELOAD=/tmp/x.so`) and
    LC_TIME as usual, then a command. Before the fix the gateway and hostd passed LANG on, the
    engine refused to start the exec ("environment variable value can't contain null"), the
    user read that the container's engine had failed and to ask the member, and hostd logged
    a warning about its engine.
    Must hold: the command runs (exit 0) and sees LC_TIME, no LANG and no LD_PRELOAD; hostd
    logged no failed exec start for the allocation."""
    env = ssh_env
    host = env.hosts[0]
    assert host.link is not None
    await env.place_running(host, "nul1", users=("nora",))
    await env.wait_reachable("nul1", key="nora")
    async with await env.connect("nul1", key="nora", source="127.0.0.158") as conn:
        ran = await conn.run("env", env={"LANG": "C\0LD_PRELOAD=/tmp/x.so", "LC_TIME": "en_GB.UTF-8"})
    assert ran.exit_status == 0, (ran.stderr, env.logs())
    seen = dict(line.split("=", 1) for line in str(ran.stdout).splitlines() if "=" in line)
    assert seen.get("LC_TIME") == "en_GB.UTF-8", seen
    assert "LANG" not in seen, seen
    assert "LD_PRELOAD" not in seen, seen
    failed = [
        line
        for line in host.link.log_path.read_text(errors="replace").splitlines()
        if "link.exec_start_failed" in line and '"nul1"' in line
    ]
    assert failed == []


async def test_a_user_opening_sessions_in_a_loop_is_slowed_before_the_log_fills(ssh_env: SshEnv) -> None:
    """What is tried: with 2 sessions a second per user after a burst of 10, a user opens 60
    sessions, 10 at a time, on one connection to an allocation already released (each ends at
    once, as fast as the gateway can record it). Before the fix nothing bounded sessions over
    time: one user wrote 94 events a second into the log this way (SessionStarted and
    SessionEnded each), 300 MB an hour that every service reads again at its start.
    What must hold: sessions past the rate are refused saying so, before anything is recorded:
    the log holds no more sessions than the burst and the rate allow over the time taken; once
    the rate has refilled, a session opens again."""
    env = ssh_env
    await env.restart_gateway(
        {"POTLUCK_SSHGATEWAY_USER_SESSIONS_PER_S": "2", "POTLUCK_SSHGATEWAY_USER_SESSION_BURST": "10"}
    )
    try:
        await env.place_running(env.hosts[0], "rate1", users=("looper",), start=False)
        await env.release(env.hosts[0], "rate1")
        conn = await env.connect("rate1", key="looper", source="127.0.0.158")
        refused: list[str] = []
        started = time.monotonic()
        async with conn:

            async def one() -> None:
                try:
                    await conn.run("true", timeout=20)
                except asyncssh.ChannelOpenError as exc:
                    refused.append(exc.reason)

            for _ in range(6):
                await asyncio.gather(*(one() for _ in range(10)))
            took = time.monotonic() - started
            assert refused, "no session was refused"
            assert all("you open sessions faster than 2 a second" in r for r in refused), refused[:3]
            recorded = [e for e in await env.session_events("rate1") if e["type"] == "SessionStarted"]
            assert len(recorded) + len(refused) == 60
            assert len(recorded) <= 10 + 2 * took + 1, (len(recorded), took)
            await asyncio.sleep(1)
            again = await conn.run("true", timeout=20)
            assert again.exit_status == 255  # opened and recorded; the allocation is released
            assert "is released" in str(again.stderr), again.stderr
    finally:
        await env.restart_gateway()


async def test_a_login_the_moment_its_allocation_is_logged_is_admitted_while_the_gateway_is_deaf(
    ssh_env: SshEnv,
) -> None:
    """What is tried: the gateway's connection on which Postgres tells it of new events is cut
    (as a database restart or failover cuts it; the gateway reads the log again within its 2 s
    poll), an allocation is logged and released, and its user logs in at once. Before the fix
    the key was refused like a wrong one ("Permission denied (publickey)") until the gateway's
    next read: a login refused by a view the log had already moved past (seen in CI as a login
    just after a gateway restart, before its listener was connected).
    What must hold: the login is admitted, and its session says the allocation is released."""
    env = ssh_env
    # A gateway just restarted (as by the test before) connects its listener a moment after it
    # accepts connections: wait for it, or there is nothing to cut.
    cut = 0
    deadline = time.monotonic() + 15
    while not cut and time.monotonic() < deadline:
        cut = len(
            await env.store.pool.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE 'LISTEN %'"
            )
        )
        if not cut:
            await asyncio.sleep(0.1)
    assert cut, "the gateway connected no listener within 15 s"
    await env.place_running(env.hosts[0], "deaf1", users=("dora",), start=False)
    await env.release(env.hosts[0], "deaf1")
    conn = await env.connect("deaf1", key="dora", source="127.0.0.160")
    async with conn:
        ran = await conn.run("true", timeout=20)
    assert ran.exit_status == 255, (ran.stderr, env.logs())
    assert "is released" in str(ran.stderr), ran.stderr


async def test_a_command_padded_past_what_the_audit_keeps_cannot_hide_its_end(ssh_env: SshEnv) -> None:
    """What is tried: OpenSSH runs a command of 600 spaces and then `echo hidden-part`. The audit
    keeps a command's first 512 characters; before the fix that was all it kept, so the record
    showed blanks and nothing said that more had run.
    What must hold: the command runs; its SessionStarted keeps the first 512 characters and
    the whole command's length and SHA-256, so the record says it was cut and pins what ran."""
    env = ssh_env
    await env.place_running(env.hosts[0], "pad1", users=("padder",))
    await env.wait_reachable("pad1", key="padder")
    command = " " * 600 + "echo hidden-part"
    ran = await env.ssh("pad1", command, key="padder", source="127.0.0.159")
    assert (ran.returncode, ran.out) == (0, "hidden-part\n"), ran.err
    events = await env.session_events("pad1")
    started = [e for e in events if e["type"] == "SessionStarted" and e["source_address"] == "127.0.0.159"]
    assert len(started) == 1, started
    record = started[0]
    assert record["command"] == command[:512]
    assert record["command_length"] == len(command)
    assert record["command_sha256"] == hashlib.sha256(command.encode()).hexdigest()
