"""The gateway's users' port against clients that never log in: what they may cost, and for how long.

A connection that has not authenticated is a stranger's: it holds a place (admission.py), a
descriptor, and the gateway's one event loop for each message it sends. Here the gateway runs
with a short login time and small caps on connections still logging in, and each test connects
from its own loopback addresses (127.0.0.x), since those caps are per address: with asyncssh
where OpenSSH's client cannot misbehave on purpose, with raw sockets where no SSH is spoken,
and with the real `ssh` for what a user does.
"""

import asyncio
import contextlib
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Iterable
from typing import Any

import asyncssh
import pytest
from asyncssh.constants import MSG_IGNORE

from tests.fixtures import ssh as ssh_fixtures
from tests.fixtures.ssh import SshEnv

ssh_env = ssh_fixtures.ssh_env

LOGIN_TIMEOUT_S = 4.0
PREAUTH = {
    "POTLUCK_SSHGATEWAY_LOGIN_TIMEOUT_S": str(LOGIN_TIMEOUT_S),
    "POTLUCK_SSHGATEWAY_MAX_UNAUTHENTICATED": "12",
    "POTLUCK_SSHGATEWAY_SOURCE_MAX_UNAUTHENTICATED": "4",
}


@pytest.fixture(scope="module")
async def env(ssh_env: SshEnv) -> SshEnv:
    await ssh_env.restart_gateway(PREAUTH)
    await ssh_env.place_running(ssh_env.hosts[0], "pre1")
    await ssh_env.wait_reachable("pre1")
    return ssh_env


def _gateway_lines(env: SshEnv, **match: str) -> list[dict[str, Any]]:
    """The gateway's log lines (JSON) whose fields hold `match`."""
    found = []
    for text in env.gateway.log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            line = json.loads(text)
            if isinstance(line, dict) and all(line.get(k) == v for k, v in match.items()):
                found.append(line)
    return found


def _fds(env: SshEnv) -> int:
    assert env.gateway.pid is not None
    return len(os.listdir(f"/proc/{env.gateway.pid}/fd"))


def _sockets_from(env: SshEnv, sources: Iterable[str]) -> list[str]:
    """The gateway's TCP sockets (IPv4) whose other end is one of `sources`, as /proc lists them."""
    pid = env.gateway.pid
    assert pid is not None
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                held.add(target[len("socket:[") : -1])
    # The table spells an address as one 32-bit word in the host's byte order, in hex.
    order = slice(None, None, -1 if sys.byteorder == "little" else 1)
    peers = {socket.inet_aton(ip)[order].hex().upper() for ip in sources}
    found = []
    with open(f"/proc/{pid}/net/tcp") as table:
        for line in list(table)[1:]:
            fields = line.split()
            remote, inode = fields[2], fields[9]
            if inode in held and remote.split(":")[0] in peers:
                found.append(f"{remote} state {fields[3]}")
    return found


class _NeverLogsIn(asyncssh.SSHClient):
    """Completes the key exchange, then asks to log in with no key and waits forever; meanwhile
    `poke` runs on the connection every `every` seconds (a rekey, an IGNORE message)."""

    def __init__(self, poke: str, every: float, counts: dict[str, int]) -> None:
        self._poke = poke
        self._every = every
        self.counts = counts
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self._task = asyncio.ensure_future(self._pokes(conn))

    async def _pokes(self, conn: Any) -> None:
        while True:
            await asyncio.sleep(self._every)
            if self._poke == "rekey" and conn._kex_complete and not conn._kexinit_sent:
                # What asyncssh itself does to rekey (its connection's own steps).
                conn._send_kexinit()
                conn._kexinit_sent = True
                self.counts["sent"] += 1
            elif self._poke == "ignore" and conn._kex_complete:
                conn.send_packet(MSG_IGNORE, b"\0\0\0\0")
                self.counts["sent"] += 1

    async def public_key_auth_requested(self) -> None:
        await asyncio.sleep(3600)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None:
            self._task.cancel()


async def _never_logging_in(env: SshEnv, source: str, poke: str, every: float) -> tuple[float, int, str]:
    """Seconds until the gateway ended such a connection, the pokes sent by then, and why."""
    counts = {"sent": 0}
    started = time.monotonic()
    why = ""
    try:
        await asyncssh.connect(
            "127.0.0.1",
            env.port,
            local_addr=(source, 0),
            username="pre1",
            client_factory=lambda: _NeverLogsIn(poke, every, counts),
            client_keys=[],
            known_hosts=None,
            agent_path=None,
            config=None,
            preferred_auth="publickey",
            login_timeout=600,
            connect_timeout=600,
        )
    except (asyncssh.Error, OSError) as exc:
        why = str(getattr(exc, "reason", "") or exc)
    else:
        raise AssertionError("a client with no key logged in")
    return time.monotonic() - started, counts["sent"], why


async def test_rekeying_or_chattering_before_login_ends_the_connection_and_the_deadline_holds(
    env: SshEnv,
) -> None:
    """Tried: clients that complete the key exchange and never log in, and meanwhile (a) rekey
    every 50 ms, (b) send an IGNORE message every 10 ms, (c) send one every 0.5 s.
    Before the fix (a) stayed the whole login time, rekeying about 80 times, each a key
    exchange on the gateway's one event loop, and (b) had each of its messages decrypted.
    Must hold: (a) is ended after its second key exchange, (b) after 32 messages, each in well
    under the login time and saying why; (c), within both bounds, is ended at the login time,
    not later (the deadline is not reset by traffic); the gateway logs why; a user still gets in."""
    rekey_s, rekeys, rekey_why = await _never_logging_in(env, "127.0.0.81", "rekey", 0.05)
    assert rekey_why == "potluck: too many key exchanges before login", rekey_why
    assert rekeys <= 3, rekeys
    assert rekey_s < LOGIN_TIMEOUT_S / 2, rekey_s

    chatter_s, _, chatter_why = await _never_logging_in(env, "127.0.0.82", "ignore", 0.01)
    assert chatter_why == "potluck: too many messages before login", chatter_why
    assert chatter_s < LOGIN_TIMEOUT_S / 2, chatter_s

    slow_s, slow_sent, _ = await _never_logging_in(env, "127.0.0.83", "ignore", 0.5)
    assert LOGIN_TIMEOUT_S - 0.5 < slow_s < LOGIN_TIMEOUT_S + 2, slow_s
    assert slow_sent >= 4, slow_sent  # it kept talking, and was ended all the same

    said = {line["why"] for line in _gateway_lines(env, event="login.too_many_messages")}
    assert said == {"too many key exchanges before login", "too many messages before login"}, said
    reached = await env.ssh("pre1", "echo in", source="127.0.0.84")
    assert reached.out == "in\n", reached.err


async def _first_bytes(source: str, port: int, payload: bytes | None, *, wait: float) -> bytes:
    """What the gateway sends a raw connection from `source` that sends `payload` (None: nothing;
    b"": a reset at once), until it closes or `wait` seconds pass."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    if payload == b"":
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        return b""
    if payload is not None:
        writer.write(payload)
    got = b""
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(wait):
            while chunk := await reader.read(4096):
                got += chunk
    writer.close()
    return got


async def test_connections_that_never_speak_ssh_are_logged_once_and_hold_nothing(env: SshEnv) -> None:
    """Tried, each from its own address: a connection reset at once, HTTP instead of SSH, a
    version line of 300 bytes, one with a byte that is not ASCII, 100 NUL bytes and no line
    end, and one that never sends a thing.
    Before the fix none left a line in the log at INFO, and the non-ASCII version was logged
    as the gateway's own error (`connection.failed`, level error), which any stranger could
    raise at will.
    Must hold: each ends (the silent ones at the login time) with one INFO line
    `connection.ended_before_login` for its address and no error line; a user logs in
    meanwhile; afterwards the gateway holds no socket of theirs. (Not a count of all its
    descriptors: its database pool may open a connection meanwhile, which is no junk's.)"""
    # A session first: what serving one opens for good (a connection of the audit's database
    # pool) is not the junk's.
    warm = await env.ssh("pre1", "true", source="127.0.0.97")
    assert warm.returncode == 0, warm.err
    cases = {
        "127.0.0.91": b"",
        "127.0.0.92": b"GET / HTTP/1.1\r\nHost: gateway\r\n\r\n",
        "127.0.0.93": b"SSH-2.0-" + b"A" * 300 + b"\r\n",
        "127.0.0.94": b"SSH-2.0-caf\xc3\xa9\r\n",
        "127.0.0.95": b"\0" * 100,
        "127.0.0.96": None,
    }
    ends = asyncio.gather(
        *(_first_bytes(src, env.port, payload, wait=LOGIN_TIMEOUT_S + 3) for src, payload in cases.items())
    )
    reached = await env.ssh("pre1", "echo in", source="127.0.0.97")
    assert reached.out == "in\n", reached.err
    assert _sockets_from(env, ["127.0.0.96"]), "the silent connection is held until its login time"
    answers = dict(zip(cases, await ends, strict=True))
    for source, payload in cases.items():
        if payload != b"":
            assert answers[source].startswith(b"SSH-2.0-Potluck_sshgateway\r\n"), (source, answers[source])
    await asyncio.sleep(0.5)  # the last lines written

    for source in cases:
        lines = [line for line in _gateway_lines(env, source=source) if line.get("level") != "debug"]
        assert [line["event"] for line in lines] == ["connection.ended_before_login"], (source, lines)
    assert not _gateway_lines(env, event="connection.failed"), env.logs()
    deadline = time.monotonic() + 10
    while _sockets_from(env, cases) and time.monotonic() < deadline:  # the last ones being closed
        await asyncio.sleep(0.2)
    assert _sockets_from(env, cases) == []


async def test_connections_logging_in_are_capped_per_address_and_a_flood_cannot_keep_users_out(
    env: SshEnv,
) -> None:
    """Tried: idle TCP connections that never log in (as a MaxStartups flood): 4 from one
    address and a fifth from it, then 4 from each of two more, filling all 12 places; then a
    raw connection from a fourth address, a real `ssh` login from a fifth, and the flood
    reconnecting from its three addresses. Before the fix the fourth address and the `ssh`
    login were refused ("the gateway has too many connections still logging in") until the
    flood's connections reached their login deadline.
    Must hold (12 may be logging in, 4 from one address): every one of the 12 gets the SSH
    banner; the fifth from one address is refused with the line saying too many from that
    address; the fourth address gets the banner and the first address's oldest connection is
    closed to make room; the `ssh` login runs its command while the flood holds its places;
    the flood reconnecting closes none but its own connections (the gateway logs each one it
    closed, with its address)."""
    idle: dict[str, list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}
    flood = ("127.0.0.101", "127.0.0.102", "127.0.0.103")
    try:
        for source in flood:
            for _ in range(4):
                reader, writer = await asyncio.open_connection("127.0.0.1", env.port, local_addr=(source, 0))
                idle.setdefault(source, []).append((reader, writer))
                async with asyncio.timeout(5):
                    assert (await reader.readline()).startswith(b"SSH-2.0-")
            if source == "127.0.0.101":
                fifth = await _first_bytes(source, env.port, None, wait=2)
                assert fifth.startswith(b"potluck: too many connections from your address are still"), fifth

        reader, writer = await asyncio.open_connection("127.0.0.1", env.port, local_addr=("127.0.0.104", 0))
        idle["127.0.0.104"] = [(reader, writer)]
        async with asyncio.timeout(5):
            assert (await reader.readline()).startswith(b"SSH-2.0-")
        oldest = idle["127.0.0.101"][0][0]
        async with asyncio.timeout(10):
            while await oldest.read(4096):  # its KEXINIT, then the end
                pass

        reached = await env.ssh("pre1", "echo in", source="127.0.0.105")
        assert reached.out == "in\n", reached.err

        for source in flood:
            for _ in range(3):
                await _first_bytes(source, env.port, None, wait=0.2)
        await asyncio.sleep(0.5)  # the last lines written
        evicted = [line["source"] for line in _gateway_lines(env, event="connection.evicted")]
        assert evicted, env.logs()
        assert "127.0.0.101" in evicted
        assert set(evicted) <= set(flood), evicted
    finally:
        for held in idle.values():
            for _, idle_writer in held:
                idle_writer.close()
    await asyncio.sleep(0.5)
    reached = await env.ssh("pre1", "echo in", source="127.0.0.106")
    assert reached.out == "in\n", reached.err


async def test_a_refused_ssh_login_prints_why_at_the_clients_default_log_level(env: SshEnv) -> None:
    """Tried: 4 idle connections from one address (all the places it may hold while logging
    in), then a real `ssh`, `scp` and `sftp` from it at OpenSSH's default log level (INFO).
    Before: the refusal was a line before the SSH banner, which OpenSSH shows only with `-v`:
    the user read "kex_exchange_identification: Connection closed by remote host" (or
    "Broken pipe") and nothing about why. Must hold: each exits 255 and prints the gateway's
    reason through its DISCONNECT ("Received disconnect ...:12: potluck: too many connections
    from your address are still logging in; try again in a few seconds"); a raw connection
    still gets the line first; once the idle ones are gone, `ssh` from there logs in."""
    source = "127.0.0.121"
    reason = "potluck: too many connections from your address are still logging in; try again"
    idle = []
    try:
        for _ in range(4):
            reader, writer = await asyncio.open_connection("127.0.0.1", env.port, local_addr=(source, 0))
            idle.append(writer)
            async with asyncio.timeout(5):
                assert (await reader.readline()).startswith(b"SSH-2.0-")
        default_level = ("-o", "LogLevel=INFO", "-o", f"BindAddress={source}")
        refused = await env.ssh("pre1", "echo in", source=source, options=("-o", "LogLevel=INFO"))
        assert refused.returncode == 255, refused
        assert "Received disconnect from 127.0.0.1" in refused.err, refused.err
        assert reason in refused.err, refused.err
        for tool in ("scp", "sftp"):
            argv = [tool, *env.openssh_options("alice", default_level, port_flag="-P")]
            argv += ["pre1@127.0.0.1:/etc/hostname", "/dev/null"] if tool == "scp" else ["pre1@127.0.0.1"]
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"},
            )
            async with asyncio.timeout(30):
                _, err = await proc.communicate()
            assert proc.returncode != 0, (tool, err)
            assert reason in err.decode(), (tool, err)
        raw = await _first_bytes(source, env.port, None, wait=2)
        assert raw.startswith(reason.encode()), raw
    finally:
        for writer in idle:
            writer.close()
    for _ in range(50):  # the gateway sees the idle ones close
        reached = await env.ssh("pre1", "echo in", source=source)
        if reached.returncode == 0:
            break
        await asyncio.sleep(0.2)
    assert reached.out == "in\n", reached.err
