"""A member's hostd is the member's own program: what a hostile one can do to the gateway.

A member controls their machine, so they can run a changed hostd that dials the gateway's
tunnel port with their real host key. Here an asyncssh server in the test, holding a
registered host's key and dialling in as hostd does (`connect_reverse`), stands for it,
against the real gateway process (tests/fixtures/ssh.py's `gateway_process`, Postgres log);
the user is the real OpenSSH client. No Docker engine is needed: the hostile host answers
the sessions itself.
"""

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest

from potluck.contracts.allocation_events import (
    AllocationPlaced,
    AllocationRequested,
    AllocationRunning,
    AllocationSpec,
    alloc_stream,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.host_events import HostRevoked, host_stream
from potluck.events import EventStore, StreamAppend
from potluck.kernel.ssh_identity import host_key_path, ssh_host_key
from potluck.sshgateway.bridge import MAX_SIGNAL_MESSAGE
from potluck.sshgateway.service import client_public_key
from potluck.sshgateway.settings import TUNNEL_USER
from tests.fixtures import ssh as ssh_fixtures
from tests.fixtures.ssh import SshEnv

#: Idle links one host may keep at the gateway under test.
MAX_IDLE = 4

#: What a session on the hostile host does when the user's command arrives.
Behaviour = Callable[[asyncssh.SSHServerChannel[bytes], str], None]


#: What the hostile host answers a session open with: a session, or a channel and its session
#: to come.
SessionAnswer = (
    asyncssh.SSHServerSession[bytes]
    | tuple[asyncssh.SSHServerChannel[bytes], asyncio.Future[asyncssh.SSHServerSession[bytes]]]
)


class _HostileSession(asyncssh.SSHServerSession[bytes]):
    def __init__(self, behaviour: Behaviour) -> None:
        self._behaviour = behaviour
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def exec_requested(self, command: str) -> bool:
        assert self._chan is not None
        chan = self._chan
        asyncio.get_running_loop().call_soon(self._behaviour, chan, command)
        return True


class _HostileHostd(asyncssh.SSHServer):
    """hostd's side of a link, changed: lets the gateway in, then does what the test says."""

    def __init__(self, behaviour: Behaviour, gate: "Gate | None" = None) -> None:
        self._behaviour = behaviour
        self._gate = gate

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if self._gate is not None:
            self._gate.asked.set()
            await self._gate.open.wait()
        return username == TUNNEL_USER

    def session_requested(self) -> "SessionAnswer":
        return _HostileSession(self._behaviour)


class Gate:
    """Holds the gateway's login on a link until the test opens it."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.open = asyncio.Event()


def _exit_zero(chan: asyncssh.SSHServerChannel[bytes], command: str) -> None:
    chan.exit(0)


class Hostile:
    def __init__(self, env: SshEnv, host_id: str, state_dir: Path) -> None:
        self.env = env
        self.host_id = host_id
        self.key = asyncssh.read_private_key(host_key_path(state_dir))

    async def dial(
        self, behaviour: Behaviour = _exit_zero, gate: Gate | None = None, window: int = 2 << 20
    ) -> asyncssh.SSHServerConnection:
        return await asyncssh.connect_reverse(
            "127.0.0.1",
            self.env.tunnel_port,
            server_factory=lambda: _HostileHostd(behaviour, gate),
            server_host_keys=[self.key],
            authorized_client_keys=None,
            encoding=None,
            window=window,
            login_timeout=30,
        )

    async def allocation(self, alloc_id: str) -> None:
        """`alloc_id` running on this host, alice's key registered on it (the log only)."""
        spec = AllocationSpec(
            resources=Capacity(cpus=0.5, memory_bytes=64 << 20, disk_bytes=512 << 20),
            image="unused",
            command=["sleep", "3600"],
            ssh_keys=[self.env.public_key("alice")],
        )
        await self.env.store.append_streams(
            [
                StreamAppend(
                    alloc_stream(alloc_id),
                    [
                        AllocationRequested(alloc_id=alloc_id, user="alice", spec=spec, lifetime_s=3600),
                        AllocationPlaced(
                            alloc_id=alloc_id,
                            host_id=self.host_id,
                            user="alice",
                            spec=spec,
                            expires_at=datetime.now(UTC) + timedelta(hours=1),
                        ),
                        AllocationRunning(
                            alloc_id=alloc_id, host_id=self.host_id, container_id="c-" + alloc_id
                        ),
                    ],
                    expected_version=0,
                )
            ]
        )


@pytest.fixture(scope="module")
async def hostile(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str
) -> AsyncIterator[Callable[[str], Awaitable[Hostile]]]:
    """The gateway (at most MAX_IDLE idle links per host), and a way to register hostile hosts."""
    workdir = tmp_path_factory.mktemp("hostile")
    database_url = await ssh_fixtures._fresh_database(postgres_url, f"hostile{os.getpid()}")
    store = await EventStore.open(database_url, max_size=5)
    settings = ssh_fixtures.gateway_settings(workdir)
    gateway = ssh_fixtures.gateway_process(workdir, database_url, settings)
    env = SshEnv(
        workdir,
        store,
        database_url,
        settings.listen_address[1],
        settings.tunnel_address[1],
        client_public_key(settings, make=True),
        gateway,
        [],
        {},
    )

    async def register(name: str) -> Hostile:
        host_id = f"h-{name}{os.getpid() % 10000}"
        state_dir = workdir / host_id
        await ssh_fixtures.register_host(store, host_id, ssh_host_key(state_dir, host_id))
        host = Hostile(env, host_id, state_dir)
        # Until the gateway has folded the registration: its key is refused before.
        deadline = time.monotonic() + 15
        while True:
            try:
                conn = await host.dial()
            except (asyncssh.Error, OSError):
                assert time.monotonic() < deadline, f"the gateway never learnt {host_id}'s key"
                await asyncio.sleep(0.1)
                continue
            conn.close()
            await conn.wait_closed()
            return host

    try:
        await env.start_gateway({"POTLUCK_SSHGATEWAY_MAX_IDLE_LINKS_PER_HOST": str(MAX_IDLE)})
        yield register
    finally:
        gateway.stop(timeout=15)
        await store.close()


async def _until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def test_a_host_cannot_park_links_without_bound_at_the_gateway(
    hostile: Callable[[str], Awaitable[Hostile]],
) -> None:
    """What is tried: a hostile hostd dials 30 authenticated links with its real host key (hostd
    keeps 2 spares), as fast as the tunnel port admits them. Before the fix the gateway kept
    every one open in its pool, for ever (each answered keepalive): a descriptor of the
    gateway's each, so one member could run it out of descriptors for every user and host.
    What must hold: no more than MAX_IDLE stay open, the newest ones, and a user's session to
    an allocation on that host is still served on one of them."""
    host = await hostile("flood")
    await host.allocation("a-flood")
    links = [await host.dial() for _ in range(30)]
    try:
        assert await _until(lambda: sum(not c.is_closed() for c in links) <= MAX_IDLE, 10), [
            c.is_closed() for c in links
        ]
        assert all(not c.is_closed() for c in links[-MAX_IDLE:])
        result = await host.env.ssh("a-flood", "anything")
        assert result.returncode == 0, (result.err, host.env.logs())
    finally:
        for conn in links:
            conn.close()


async def test_an_exit_signal_from_the_host_is_bounded_before_it_is_recorded_or_relayed(
    hostile: Callable[[str], Awaitable[Hostile]],
) -> None:
    """What is tried: the hostile host ends a user's session with an exit-signal whose name is no
    signal (10,000 characters, a terminal escape among them) and whose message is 20,000
    characters after terminal escapes; then another session with an ordinary one (TERM,
    "terminated"). Before the fix the name went whole into the session's SessionEnded in the
    log (`exit_signal` had no bound), the message's first 1,000 characters into `detail`
    escapes and all, and both on to the user's client.
    What must hold: the first is recorded as exit_signal UNKNOWN with at most
    MAX_SIGNAL_MESSAGE characters of detail and no control character; the ordinary one is
    recorded as it was sent; the user's ssh ends (255, as on any signal) both times."""
    host = await hostile("signal")
    await host.allocation("a-signal")

    def evil(chan: asyncssh.SSHServerChannel[bytes], command: str) -> None:
        if command == "ordinary":
            chan.exit_with_signal("TERM", False, "terminated", "en")
        else:
            chan.exit_with_signal(
                "KILL\x1b]0;owned\x07" + "B" * 10_000, True, "\x1b[2J\x1b[31m" + "A" * 20_000, "en"
            )

    links = [await host.dial(evil) for _ in range(2)]
    try:
        bad = await host.env.ssh("a-signal", "evil")
        assert bad.returncode == 255, bad.err
        assert "\x1b" not in bad.err
        ordinary = await host.env.ssh("a-signal", "ordinary")
        assert ordinary.returncode == 255, ordinary.err

        async def ended() -> list[dict[str, object]]:
            return [e for e in await host.env.session_events("a-signal") if e["type"] == "SessionEnded"]

        deadline = time.monotonic() + 10
        while len(events := await ended()) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert len(events) == 2, events
        by_signal = {str(e["exit_signal"]): e for e in events}
        assert set(by_signal) == {"UNKNOWN", "TERM"}, [e["exit_signal"] for e in events]
        detail = str(by_signal["UNKNOWN"]["detail"])
        assert len(detail) <= MAX_SIGNAL_MESSAGE
        assert not any(ord(ch) < 0x20 for ch in detail), detail[:40]
        assert by_signal["TERM"]["detail"] == "terminated"
        assert {e["reason"] for e in events} == {"EXITED"}
    finally:
        for conn in links:
            conn.close()


async def test_a_link_still_logging_in_when_its_host_is_revoked_is_closed(
    hostile: Callable[[str], Awaitable[Hostile]],
) -> None:
    """What is tried: a host's link presents its key, then holds the gateway's login (hostd's
    side decides how long that takes) while the host is revoked; then lets it finish. The
    revocation closes the links the gateway has; before the fix this one, not in the pool
    yet, was put in it afterwards and stayed open for as long as the host liked.
    What must hold: a new link with the revoked key is refused, and the held one is closed
    by the gateway once its login completes."""
    host = await hostile("revoked")
    gate = Gate()
    held = asyncio.ensure_future(host.dial(gate=gate))
    conn: asyncssh.SSHServerConnection | None = None
    try:
        async with asyncio.timeout(10):
            await gate.asked.wait()
        await host.env.store.append(host_stream(host.host_id), [HostRevoked(host_id=host.host_id, by="test")])

        async def refused() -> bool:
            try:
                other = await host.dial()
            except (asyncssh.Error, OSError):
                return True
            other.close()
            return False

        deadline = time.monotonic() + 15
        while not await refused():
            assert time.monotonic() < deadline, "the revoked key is still accepted"
            await asyncio.sleep(0.2)
        gate.open.set()
        with contextlib.suppress(asyncssh.Error, OSError):
            conn = await held
        if conn is not None:
            closing = conn
            assert await _until(closing.is_closed, 10), "the revoked host's link stayed open"
    finally:
        gate.open.set()
        if conn is not None:
            conn.close()
        held.cancel()


async def test_a_host_can_open_no_channel_toward_the_gateway(
    hostile: Callable[[str], Awaitable[Hostile]], postgres_url: str
) -> None:
    """What is tried: on an idle link, the hostile host opens channels toward the gateway (its
    SSH client): direct and forwarded TCP connections to the gateway's own Postgres, an X11
    connection, an agent connection. asyncssh's client refuses each, since the gateway asked for no
    forwarding; this holds it so (a regression would reach services on the gateway's
    loopback).
    What must hold: every open is refused, and the link still serves a user's session."""
    host = await hostile("channels")
    await host.allocation("a-channels")
    conn = await host.dial()
    try:
        port = int(postgres_url.rsplit(":", 1)[1].split("/", 1)[0])
        opens: list[Callable[[], Awaitable[object]]] = [
            # direct-tcpip and forwarded-tcpip to the gateway's Postgres, over the wire.
            lambda: conn.create_tcp_channel().connect(asyncssh.SSHTCPSession, "127.0.0.1", port, "", 0),
            lambda: conn.create_tcp_channel().accept(asyncssh.SSHTCPSession, "127.0.0.1", port, "", 0),
            lambda: conn.create_x11_connection(asyncssh.SSHTCPSession),
            lambda: conn.create_agent_channel().open(asyncssh.SSHUNIXSession),
        ]
        for open_channel in opens:
            with pytest.raises(asyncssh.ChannelOpenError):
                await open_channel()
        result = await host.env.ssh("a-channels", "anything")
        assert result.returncode == 0, (result.err, host.env.logs())
    finally:
        conn.close()


def _rss_mb(pid: int | None) -> float:
    assert pid is not None
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def test_a_host_that_stops_reading_holds_back_the_users_upload(
    hostile: Callable[[str], Awaitable[Hostile]],
) -> None:
    """What is tried: the hostile host opens the user's session with a 1 GiB SSH window (its
    own choice, and window adjusts can grow it at will), then stops reading its TCP socket,
    while the user pipes 256 MiB into the session. The SSH window no longer holds the user
    back, and asyncssh ignores its transport's pause: before the fix the gateway put all of
    it in that socket's write buffer, so one member's host (with the member's own upload)
    grew the gateway's memory without bound.
    What must hold: the gateway's memory grows by less than 64 MiB, and the upload is held back
    (still running: the user's ssh is not read) rather than taken."""
    host = await hostile("stall")
    await host.allocation("a-stall")

    def stall(chan: asyncssh.SSHServerChannel[bytes], command: str) -> None:
        # A hostd that reads nothing more from the gateway (asyncssh has no public way).
        chan.get_extra_info("connection")._transport.pause_reading()

    conn = await host.dial(stall, window=1 << 30)
    gateway_pid = host.env.gateway.pid
    before = _rss_mb(gateway_pid)
    argv = " ".join(f"'{a}'" for a in host.env.ssh_argv("a-stall", "cat"))
    upload = await asyncio.create_subprocess_shell(
        f"head -c {256 << 20} /dev/zero | {argv}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"},
        start_new_session=True,
    )
    try:
        grown = 0.0
        for _ in range(40):
            await asyncio.sleep(0.25)
            grown = max(grown, _rss_mb(gateway_pid) - before)
        assert grown < 64, f"the gateway grew by {grown:.0f} MiB"
        assert upload.returncode is None, host.env.logs()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(upload.pid, 9)
        await upload.wait()
        conn.close()


async def test_a_user_who_stops_reading_holds_back_the_hosts_output(
    hostile: Callable[[str], Awaitable[Hostile]],
) -> None:
    """The same from the other side: the user's client opens its session with a 1 GiB window
    and stops reading its socket, while the host writes as fast as the gateway takes it (the
    host here respects the gateway's window, as hostd does). Before the fix the gateway
    queued all of it in the user's socket's write buffer.
    What must hold: the gateway's memory grows by less than 64 MiB, and the host is held back
    (it has sent far less than it would have)."""
    host = await hostile("sink")
    await host.allocation("a-sink")
    sent = 0
    writers: list[asyncio.Task[None]] = []

    def flood(chan: asyncssh.SSHServerChannel[bytes], command: str) -> None:
        async def write() -> None:
            nonlocal sent
            chunk = bytes(1 << 20)
            while not chan.is_closing() and sent < 512 << 20:
                if chan.get_write_buffer_size() > 4 << 20:
                    await asyncio.sleep(0.01)
                    continue
                chan.write(chunk)
                sent += len(chunk)

        writers.append(asyncio.ensure_future(write()))

    link = await host.dial(flood)
    gateway_pid = host.env.gateway.pid
    before = _rss_mb(gateway_pid)
    user = await asyncssh.connect(
        "127.0.0.1",
        host.env.port,
        username="a-sink",
        client_keys=[str(host.env.key("alice"))],
        known_hosts=None,
        agent_path=None,
        encoding=None,
    )
    try:
        await user.create_session(asyncssh.SSHClientSession, "anything", encoding=None, window=1 << 30)
        # A client that reads nothing more from the gateway (asyncssh has no public way).
        transport = user._transport
        assert transport is not None
        transport.pause_reading()
        grown = 0.0
        for _ in range(40):
            await asyncio.sleep(0.25)
            grown = max(grown, _rss_mb(gateway_pid) - before)
        assert grown < 64, f"the gateway grew by {grown:.0f} MiB (the host sent {sent >> 20} MiB)"
        assert sent < 128 << 20, f"the host sent {sent >> 20} MiB"
    finally:
        user.close()
        link.close()
        for writer in writers:
            writer.cancel()


async def test_a_hosts_refusal_text_is_bounded_in_the_gateways_log(
    hostile: Callable[[str], Awaitable[Hostile]],
) -> None:
    """What is tried: the hostile host refuses each session the gateway opens on its links with
    a 30,000-character reason (the gateway then tries its next link, and logs why each failed).
    Before the fix each such line of the gateway's log carried the whole reason: a host could
    fill the gateway's log at will.
    What must hold: the user is told the machine is not reachable (exit 255), and no line the
    gateway logged for the session is longer than 2,000 characters."""
    host = await hostile("refuser")
    await host.allocation("a-refuser")
    reason = "\x1b[2J" + "R" * 30_000

    class Refuser(_HostileHostd):
        def session_requested(self) -> SessionAnswer:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, reason)

    links = [
        await asyncssh.connect_reverse(
            "127.0.0.1",
            host.env.tunnel_port,
            server_factory=lambda: Refuser(_exit_zero),
            server_host_keys=[host.key],
            authorized_client_keys=None,
            encoding=None,
        )
        for _ in range(3)
    ]
    log_path = host.env.workdir / "gateway.log"
    start = log_path.stat().st_size
    try:
        result = await host.env.ssh("a-refuser", "anything")
        assert result.returncode == 255, result.err
        assert "not connected to this gateway" in result.err, result.err
        with log_path.open("rb") as log_file:
            log_file.seek(start)
            lines = log_file.read().splitlines()
        assert any(b"session.link_failed" in line for line in lines), lines[-5:]
        assert max(len(line) for line in lines) <= 2000, max(len(line) for line in lines)
    finally:
        for conn in links:
            conn.close()


async def test_a_host_that_never_answers_a_session_open_cannot_hang_the_user(
    hostile: Callable[[str], Awaitable[Hostile]],
) -> None:
    """What is tried: the hostile host's links never answer the channel open the gateway sends
    for a user's session (the gateway tries its next link after each times out). This holds
    already (`channel_open_timeout_s` per try, tries only within `link_wait_s`); held so.
    What must hold: the user's ssh ends with 255 and a message within link_wait_s +
    channel_open_timeout_s (3 + 5 s here) and some slack, and the session's end is recorded
    as HOST_NOT_CONNECTED."""
    host = await hostile("silent")
    await host.allocation("a-silent")
    never: list[asyncio.Future[asyncssh.SSHServerSession[bytes]]] = []

    class Silent(_HostileHostd):
        def session_requested(self) -> SessionAnswer:
            # asyncssh answers the open once the session (here: a future) is there: never.
            assert self.conn is not None
            never.append(asyncio.get_running_loop().create_future())
            return self.conn.create_server_channel(), never[-1]

        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            self.conn: asyncssh.SSHServerConnection | None = conn

    links = [
        await asyncssh.connect_reverse(
            "127.0.0.1",
            host.env.tunnel_port,
            server_factory=lambda: Silent(_exit_zero),
            server_host_keys=[host.key],
            authorized_client_keys=None,
            encoding=None,
        )
        for _ in range(3)
    ]
    try:
        result = await host.env.ssh("a-silent", "anything", timeout=30)
        assert result.returncode == 255, result.err
        assert "not connected to this gateway" in result.err, result.err
        assert result.seconds < 15, result.seconds
        deadline = time.monotonic() + 10
        while not (
            ended := [e for e in await host.env.session_events("a-silent") if e["type"] == "SessionEnded"]
        ):
            assert time.monotonic() < deadline, "no SessionEnded"
            await asyncio.sleep(0.2)
        assert [e["reason"] for e in ended] == ["HOST_NOT_CONNECTED"]
        assert never, "the gateway never asked the host for a session"
    finally:
        for conn in links:
            conn.close()
        for future in never:
            future.cancel()
