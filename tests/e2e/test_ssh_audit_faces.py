"""Every SSH face of Potluck as an auditor sees it: the users' port, the hosts' port, hostd's link.

ssh-audit reaches the users' port (test_ssh_gateway_limits.py runs it there). The link has
two more faces it cannot reach: on the hosts' port the gateway is the SSH *client*, and
hostd is a server on a connection it dialled out. Both are read here as ssh-audit reads a
server (the version line and the KEXINIT, sent in the clear), and OpenSSH's `ssh -vvv`
completes a key exchange to show what follows it (server-sig-algs, the login methods).
"""

import asyncio
import contextlib
import os
import re
import socket
from collections.abc import AsyncIterator

import asyncssh
from asyncssh.constants import MSG_USERAUTH_REQUEST
from asyncssh.packet import String

from potluck.kernel.ssh_algorithms import weakness
from tests.fixtures import ssh as ssh_fixtures
from tests.fixtures.kexinit import Offer, read_offer
from tests.fixtures.ssh import SSH, SshEnv

ssh_env = ssh_fixtures.ssh_env

#: Markers in the KEX list that name no algorithm (RFC 8308, OpenSSH's strict key exchange).
_MARKERS = {"ext-info-s", "ext-info-c", "kex-strict-s-v00@openssh.com", "kex-strict-c-v00@openssh.com"}


def _weak(offer: Offer) -> list[str]:
    lists = offer.lists
    kinds = {
        "kex": [n for n in lists["kex"] if n not in _MARKERS],
        "cipher": lists["cipher_cs"] + lists["cipher_sc"],
        "mac": lists["mac_cs"] + lists["mac_sc"],
    }
    return [
        f"{name}: {why}" for kind, names in kinds.items() for name in names if (why := weakness(kind, name))
    ]


def _assert_sound(offer: Offer, strict_marker: str) -> None:
    software = offer.version.removeprefix("SSH-2.0-")
    # A library's name and version let an auditor (or an attacker) look its CVEs up.
    assert "asyncssh" not in software.lower(), offer.version
    assert not re.search(r"\d", software), offer.version
    assert _weak(offer) == [], offer
    assert offer.lists["host_key"] == ["ssh-ed25519"], offer.lists["host_key"]
    # Terrapin (CVE-2023-48795): chacha20-poly1305 or an -etm MAC is safe only with strict kex.
    assert strict_marker in offer.lists["kex"], offer.lists["kex"]
    assert offer.lists["comp_cs"] == ["none"]
    assert offer.lists["comp_sc"] == ["none"]


async def _ssh_vvv(port: int, *, source: str = "127.0.0.1") -> str:
    """`ssh -vvv` to `port` offering only passwords and keyboard-interactive; its log."""
    proc = await asyncio.create_subprocess_exec(
        SSH, "-F", "/dev/null", "-vvv", "-p", str(port),
        "-o", "PubkeyAuthentication=no",
        "-o", "PreferredAuthentications=keyboard-interactive,password",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", f"BindAddress={source}",
        "auditor@127.0.0.1", "true",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"},
    )  # fmt: skip
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert proc.returncode == 255, err.decode()
    return err.decode(errors="replace")


def _assert_login_methods(log: str, software: str) -> None:
    assert f"remote software version {software}" in log, log
    sig_algs = re.search(r"server-sig-algs=<([^>]*)>", log)
    assert sig_algs is not None, log
    offered = sig_algs.group(1).split(",")
    assert "ssh-rsa" not in offered, offered
    assert "ssh-dss" not in offered, offered
    methods = re.findall(r"Authentications that can continue: (\S+)", log)
    assert methods, log
    assert set(methods) == {"publickey"}, methods
    assert "Permission denied (publickey)" in log, log


async def test_the_users_port_offers_no_weak_algorithm_no_version_and_only_public_keys(
    ssh_env: SshEnv,
) -> None:
    """Tried: the users' port's version line and KEXINIT read as ssh-audit reads them; OpenSSH
    offering only a password and keyboard-interactive.
    Must hold: no weak key exchange, cipher or MAC, an ed25519 host key only, strict key
    exchange offered (Terrapin), no library version in the banner; server-sig-algs without
    SHA-1, only publickey offered, and the login refused."""
    reader, writer = await asyncio.open_connection("127.0.0.1", ssh_env.port, local_addr=("127.0.0.91", 0))
    try:
        offer = await read_offer(reader, writer)
    finally:
        writer.close()
    _assert_sound(offer, "kex-strict-s-v00@openssh.com")
    _assert_login_methods(await _ssh_vvv(ssh_env.port, source="127.0.0.91"), "Potluck_sshgateway")


async def test_the_gateway_as_the_links_client_offers_no_weak_algorithm_and_no_version(
    ssh_env: SshEnv,
) -> None:
    """Tried: a connection to the hosts' port, where the gateway speaks SSH's client side, read
    as a hostd would see it. Before the fix the gateway said `AsyncSSH_2.24.1` and offered 27
    host key types, `ssh-rsa` (SHA-1) and certificates among them.
    Must hold: no library version, ed25519 host keys only, strict key exchange offered, no
    weak key exchange, cipher or MAC."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", ssh_env.tunnel_port, local_addr=("127.0.0.92", 0)
    )
    try:
        offer = await read_offer(reader, writer, "SSH-2.0-Potluck_hostd")
    finally:
        writer.close()
    _assert_sound(offer, "kex-strict-c-v00@openssh.com")


@contextlib.asynccontextmanager
async def _auditor_for_links() -> AsyncIterator[
    tuple[int, asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
]:
    """A port posing as a gateway's hosts' port: the connections hostd dials in, queued."""
    dialled: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def take(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await dialled.put((reader, writer))

    server = await asyncio.start_server(take, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], dialled
    finally:
        server.close()
        while not dialled.empty():
            dialled.get_nowait()[1].close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def test_hostds_link_server_offers_no_weak_algorithm_no_version_and_only_public_keys(
    ssh_env: SshEnv,
) -> None:
    """Tried: a real hostd link process dialling a port the test holds; its first connection read
    as ssh-audit reads a server, its next one handed to OpenSSH's `ssh -vvv` offering only a
    password and keyboard-interactive. Before the fix hostd said `AsyncSSH_2.24.1` and announced
    `ssh-rsa` and `ssh-dss` in its server-sig-algs.
    Must hold: no library version, an ed25519 host key only, strict key exchange offered, no
    weak algorithm; server-sig-algs without SHA-1, only publickey offered, the login refused."""
    async with _auditor_for_links() as (port, dialled):
        link = ssh_env.link_process(ssh_env.hosts[0], f"127.0.0.1:{port}", name="link-audited")
        link.start()
        try:
            async with asyncio.timeout(30):
                reader, writer = await dialled.get()
            try:
                offer = await read_offer(reader, writer, "SSH-2.0-Potluck_sshgateway")
            finally:
                writer.close()
            _assert_sound(offer, "kex-strict-s-v00@openssh.com")

            async with asyncio.timeout(30):
                hostd_reader, hostd_writer = await dialled.get()
            relayed = asyncio.get_running_loop().create_future()

            async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                relayed.set_result(None)
                await asyncio.gather(_pipe(reader, hostd_writer), _pipe(hostd_reader, writer))

            relay_server = await asyncio.start_server(relay, "127.0.0.1", 0)
            try:
                log = await _ssh_vvv(relay_server.sockets[0].getsockname()[1])
            finally:
                relay_server.close()
                hostd_writer.close()
            assert relayed.done()
            _assert_login_methods(log, "Potluck_hostd")
        finally:
            await asyncio.to_thread(link.stop, timeout=10)


async def test_hostd_ends_a_link_that_floods_authentication_requests(ssh_env: SshEnv) -> None:
    """Tried: a real hostd link process dialling a port the test holds, where an asyncssh client
    posing as the gateway (without its key) sends 10,000 authentication requests of the `none`
    method without waiting for answers. Before the fix hostd answered every one until its
    login timeout, on the event loop that carries all of the member's sessions.
    Must hold: hostd ends the connection (saying "too many authentication attempts", when the
    client reads that before its next write fails), and logs `link.too_many_requests` (without
    the bound, only its login timeout ended it, with no such line)."""
    sent = 0

    class Floods(asyncssh.SSHClient):
        def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
            self.conn = conn

        def auth_banner_received(self, msg: str, lang: str) -> None:
            return None

        async def public_key_auth_requested(self) -> None:
            nonlocal sent
            request = (String("potluck-gateway"), String("ssh-connection"), String("none"))
            while sent < 10_000 and not self.conn.is_closed():
                for _ in range(100):
                    self.conn.send_packet(MSG_USERAUTH_REQUEST, *request)
                sent += 100
                await asyncio.sleep(0.005)
            await asyncio.sleep(60)

    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    link = ssh_env.link_process(
        ssh_env.hosts[0], f"127.0.0.1:{listener.getsockname()[1]}", name="link-flooded"
    )
    link.start()
    try:
        async with asyncio.timeout(30):
            dialled, _ = await asyncio.get_running_loop().sock_accept(listener)
        ended: Exception | None = None
        try:
            async with asyncio.timeout(60):
                await asyncssh.create_connection(
                    Floods,
                    sock=dialled,
                    username="potluck-gateway",
                    known_hosts=None,
                    agent_path=None,
                    client_keys=[asyncssh.generate_private_key("ssh-ed25519")],
                    config=None,
                    preferred_auth="publickey",
                )
        except (asyncssh.Error, OSError) as exc:  # the reason, or a write to the closed socket
            ended = exc
        assert ended is not None, "the flooding connection logged in"
        if isinstance(ended, asyncssh.DisconnectError):
            assert "too many authentication attempts" in ended.reason, ended
        await asyncio.sleep(0.5)  # the last lines written
        assert '"link.too_many_requests"' in link.log_path.read_text(errors="replace"), link.log_tail(20)
    finally:
        listener.close()
        await asyncio.to_thread(link.stop, timeout=10)
