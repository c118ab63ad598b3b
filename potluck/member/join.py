"""`potluck join TOKEN`: a member's machine becomes a host of the pool, with one command.

In order, so that nothing is spent before what can be checked here is checked: decode the
token (malformed or expired by its own `expires_at` is refused at once), check that Docker
answers, validate the hostd configuration it will write, refuse to overwrite one; then make
the machine's own NATS key pair and write its credentials (0600), redeem the token with the
token's throwaway identity (the registry records HostJoined and admits the new key before it
answers), check that the new key connects, and write hostd.toml (0600). The seed never
leaves this machine: only its public half is sent.

A join interrupted after its credentials were written is finished by running it again: it
goes on with the key it made (`unfinished_join_seed`), which the registry may have admitted;
an answer lost on the way is checked the same way (`redeem_or_find_admitted`).
"""

import asyncio
import contextlib
import sys
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import nkeys
import tomli_w
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from pydantic import ValidationError

from potluck.contracts.join_token import JoinToken, JoinTokenError, decode
from potluck.contracts.messages import JoinRequest, Reply
from potluck.contracts.subjects import JOIN, host_subject, inbox_prefix, join_inbox_prefix
from potluck.hostd.config import HostdConfig
from potluck.hostd.docker_driver import DockerDriver, DockerDriverError
from potluck.hostd.state_lock import HELD_EXIT_CODE
from potluck.kernel.nats_urls import nats_servers
from potluck.kernel.rejections import error_line
from potluck.localstack.docker_engine import engine_answers
from potluck.registry.nats_auth import new_user_key, public_key_of

__all__ = ["JoinError", "JoinSettings", "Joined", "join", "systemd_unit"]

SPENT = "this join token was already used or has expired; ask the operator for a new one"
UNIT_NAME = "potluck-hostd.service"
#: `potluck hostd`'s exit codes that a restart cannot mend: 2, its configuration is wrong; 3, it
#: stopped for good (potluck.supervisor.FINAL_EXIT_CODES, which `potluck up` does not restart);
#: 4, another hostd runs on the same state_dir (state_lock.HELD_EXIT_CODE): restarted every few
#: seconds, the unit would fail again for as long as that one runs, days, each time in the journal.
NO_RESTART_EXIT_CODES = (2, 3, HELD_EXIT_CODE)


class JoinError(Exception):
    """Joining failed; the message says why and what to do."""


class AnswerLost(JoinError):
    """The join request went out and no answer came back: the registry may have admitted the key."""


@dataclass(frozen=True)
class JoinSettings:
    cpus: float
    memory: str
    disk: str
    docker_url: str
    config_path: Path
    state_dir: Path | None = None


@dataclass(frozen=True)
class Joined:
    token: JoinToken
    config: HostdConfig
    config_path: Path
    settings: JoinSettings

    def donation(self) -> str:
        s = self.settings
        return (
            f"joined as {self.token.name} ({self.token.host_id}): donating {s.cpus:g} CPUs, "
            f"{s.memory} of memory and {s.disk} of disk on {s.docker_url}"
        )


def new_key_pair() -> tuple[str, str]:
    """This machine's own NATS identity: (seed, public key)."""
    key = new_user_key()
    return key.seed, key.public


def host_settings(token: JoinToken, settings: JoinSettings, credentials: Path) -> dict[str, Any]:
    state_dir = settings.state_dir or settings.config_path.parent / "hostd-state"
    return {
        "host_id": token.host_id,
        "credentials_file": str(credentials.absolute()),
        "nats_url": token.nats_url,
        "docker_url": settings.docker_url,
        "state_dir": str(state_dir.absolute()),
        "labels": {"name": token.name},
        "donate": {"cpus": settings.cpus, "memory": settings.memory, "disk": settings.disk},
        "gateways": [g.model_dump() for g in token.gateways],
    }


def _private_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)


def _authorization_error(exc: BaseException) -> bool:
    return "authorization" in str(exc).lower()


async def _connect(
    url: str, seed: str, host_id: str, closed: asyncio.Event | None = None, *, inbox: str | None = None
) -> NATS:
    """A connection with `seed`'s identity; PermissionError if the server does not admit it.
    `closed` is set if the server drops the connection later (a reload that removed the key).
    Its requests are answered under `inbox` (the host's own inboxes when None)."""
    errors: list[str] = []

    async def on_closed() -> None:
        if closed is not None:
            closed.set()

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = NATS()
    try:
        await nc.connect(
            nats_servers(url),
            nkeys_seed_str=seed,
            inbox_prefix=inbox or inbox_prefix(host_id),
            allow_reconnect=False,
            # nats-py reads 0 as no limit on the tries of a server that refuses the TCP connect:
            # with 0, a join whose NATS is unreachable tried every 2 s for ever.
            max_reconnect_attempts=1,
            connect_timeout=5,
            error_cb=on_error,
            closed_cb=on_closed,
        )
        return nc
    except (TimeoutError, NatsError, OSError) as exc:
        # A connection the server refused (a key not admitted yet: `connects` asks again every
        # half second) is left open by nats-py's connect: close it, or each try leaks a socket.
        with contextlib.suppress(Exception):
            await nc.close()
        # nats-server refuses a key with -ERR and closes the socket; on a busy machine the close
        # can overtake the error, and the handshake ends in a reset rather than in the error.
        hung_up = isinstance(exc, ConnectionResetError)
        if hung_up or _authorization_error(exc) or any(_authorization_error(Exception(e)) for e in errors):
            raise PermissionError(str(exc)) from None
        raise JoinError(
            f"cannot reach the pool's NATS at {url} ({exc or type(exc).__name__}); "
            "is this machine on the pool's network?"
        ) from None


class _Dropped(Exception):
    """The server closed the connection while a request on it waited for its answer."""


async def _answer_unless_dropped(
    nc: NATS, closed: asyncio.Event, subject: str, payload: bytes, timeout: float
) -> Msg:
    """The answer to a request on `nc`, or _Dropped as soon as the server closes `nc`: nats-py
    leaves a request on a closed connection waiting out its whole timeout."""
    asking = asyncio.ensure_future(nc.request(subject, payload, timeout=timeout))
    dropped = asyncio.ensure_future(closed.wait())
    try:
        await asyncio.wait({asking, dropped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        dropped.cancel()
    if asking.done():
        return asking.result()
    asking.cancel()
    with contextlib.suppress(asyncio.CancelledError, NatsError):
        await asking
    raise _Dropped(str(nc.last_error or "closed by the server"))


async def redeem(token: JoinToken, public_key: str, timeout: float = 30) -> None:
    """Ask the registry to admit `public_key` as the token's host; refused tokens raise JoinError."""
    closed = asyncio.Event()
    try:
        # The throwaway reads its answer in inboxes of its own: it may not read the host's.
        nc = await _connect(
            token.nats_url, token.join_seed, token.host_id, closed, inbox=join_inbox_prefix(token.host_id)
        )
    except PermissionError:
        raise JoinError(SPENT) from None
    try:
        request = JoinRequest(token=token.secret, nkey=public_key)
        try:
            msg = await _answer_unless_dropped(
                nc, closed, host_subject(JOIN, token.host_id), request.model_dump_json().encode(), timeout
            )
        except _Dropped as exc:
            await _why_dropped(token, exc)
        except NatsError as exc:
            raise _unanswered(exc) from None
        reply = Reply.model_validate_json(msg.data)
        if not reply.ok:
            error = reply.error or {}
            raise JoinError(f"{error.get('message', 'refused')} [{error.get('code', '?')}]")
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


def _unanswered(exc: BaseException) -> AnswerLost:
    return AnswerLost(
        f"the pool's registry did not answer the join request ({exc or type(exc).__name__}); "
        "try again in a minute, or ask the operator whether the registry runs"
    )


async def _why_dropped(token: JoinToken, dropped: _Dropped) -> NoReturn:
    """Raise what a join whose connection the server closed mid-request should say.

    nats-server closes the connections of a key that a reload took out, with no error the client
    sees. The registry takes a spent token's throwaway key out of the users file, and nats-server
    applies the reload on its own time: a `potluck join` run again with the spent token can
    connect just before the reload and be dropped while it waits. Connecting again tells that
    apart from a server that went away: a key no longer admitted means the token is spent.
    """
    if not await admitted(token.nats_url, token.join_seed, token.host_id):
        raise AnswerLost(SPENT)
    raise _unanswered(dropped)


async def redeem_or_find_admitted(
    token: JoinToken, seed: str, public_key: str, *, timeout: float = 30, admitted_within: float = 5
) -> None:
    """`redeem`, and when its answer was lost (the connection dropped, or no answer in time), find
    out whether the registry admitted the key all the same: only this machine holds `seed`, so
    its key connecting means this join went through. Otherwise the member would be told to try
    again, and the token would be spent on a key pair it no longer has."""
    try:
        await redeem(token, public_key, timeout)
    except AnswerLost as lost:
        try:
            await connects(token.nats_url, seed, token.host_id, timeout=admitted_within)
        except JoinError:
            raise lost from None


def unfinished_join_seed(credentials: Path, host_id: str) -> str | None:
    """The key an earlier `potluck join` of this host made here and did not finish with.

    join writes the credentials before it spends the token, and hostd.toml only once the key
    connects: a join interrupted in between (Ctrl-C, its answer lost, NATS refusing the new key
    for a while) leaves the credentials alone, and the registry may have admitted that key.
    A new key pair would then find the token spent; the same key finds itself admitted.
    """
    try:
        fields = tomllib.loads(credentials.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    seed = fields.get("nats_seed")
    if fields.get("host_id") != host_id or not isinstance(seed, str):
        return None
    try:
        nkeys.from_seed(seed.encode())
    except nkeys.NkeysError:
        return None
    return seed


async def admitted(url: str, seed: str, host_id: str) -> bool:
    """Does the pool's NATS admit `seed`'s key now? JoinError when it cannot be reached."""
    try:
        nc = await _connect(url, seed, host_id)
    except PermissionError:
        return False
    await nc.close()
    return True


async def connects(url: str, seed: str, host_id: str, timeout: float = 15) -> None:
    """The new key is admitted: connect with it (nats-server applies the reload on its own time)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await admitted(url, seed, host_id):
        if asyncio.get_running_loop().time() > deadline:
            raise JoinError(
                f"the registry accepted this machine, but NATS still refuses its key after {timeout:g} s; "
                "ask the operator to check the registry's --nats-auth-file and --nats-pid-file, "
                "then run the same `potluck join` again (it goes on with this machine's key)"
            )
        await asyncio.sleep(0.5)


def join(text: str, settings: JoinSettings, now: datetime | None = None) -> Joined:
    """Everything `potluck join` does before starting hostd; raises JoinError saying what failed."""
    try:
        token = decode(text, now or datetime.now(UTC))
    except JoinTokenError as exc:
        raise JoinError(str(exc)) from None
    config_path = settings.config_path
    if config_path.exists():
        raise JoinError(f"{config_path} exists already; choose another --config, or remove it if it is stale")
    if not _engine_answers(settings.docker_url):
        raise JoinError(
            f"no Docker engine answers at {settings.docker_url}; start Docker, or name it with --docker-url"
        )
    credentials = config_path.parent / f"{token.host_id}.creds"
    try:
        config = HostdConfig.model_validate(host_settings(token, settings, credentials))
    except ValidationError as exc:
        fields = "; ".join(error_line(err, "(top)") for err in exc.errors())
        raise JoinError(f"the hostd configuration would be invalid: {fields}") from None
    if beyond := donation_beyond_machine(config):
        # Before the token is spent: hostd would refuse to start on this configuration anyway.
        raise JoinError("this machine cannot donate that much: " + "; ".join(beyond).replace("donate.", "--"))
    seed = unfinished_join_seed(credentials, token.host_id)
    resumed = seed is not None
    if seed is None:
        seed, _ = new_key_pair()
        # Written before the token is spent: a key pair the registry admitted must not be lost.
        _private_file(
            credentials,
            "# Potluck host credentials: keep this file private to this machine.\n"
            f'host_id = "{token.host_id}"\n'
            f'nats_seed = "{seed}"\n',
        )
    public = public_key_of(seed)
    try:
        if not (resumed and asyncio.run(admitted(token.nats_url, seed, token.host_id))):
            asyncio.run(redeem_or_find_admitted(token, seed, public))
    except AnswerLost:
        raise  # the registry may have admitted this key: the next `potluck join` goes on with it
    except JoinError:
        if not resumed:
            credentials.unlink(missing_ok=True)
        raise
    asyncio.run(connects(token.nats_url, seed, token.host_id))
    _private_file(config_path, tomli_w.dumps(host_settings(token, settings, credentials)))
    return Joined(token, config, config_path, settings)


def _engine_answers(url: str) -> bool:
    """Whether a Docker engine answers at `url`, of any kind hostd takes (unix://, tcp://, ssh://):
    a `unix://` one by a plain ping, others through the Docker SDK, as hostd reaches them. Only
    `unix://` was taken: a `tcp://` URL (given, or from DOCKER_HOST, which --docker-url defaults
    to) ended `join` in a traceback."""
    if url.startswith("unix://"):
        return engine_answers(url)
    if not url.startswith(("tcp://", "ssh://")):
        raise JoinError(
            f"{url} is not a Docker engine URL: give unix:///path/docker.sock, tcp://host:port or ssh://..."
        )
    try:
        with DockerDriver(url, timeout=5, helper=None) as driver:
            return driver.ping()
    except (DockerDriverError, OSError):
        return False


def donation_beyond_machine(config: HostdConfig) -> list[str]:
    """What the donation promises past the machine of the configuration's engine (hostd checks
    the same at every start)."""
    with DockerDriver(config.docker_url, timeout=10, helper=None) as driver:
        try:
            machine = driver.machine()
        except DockerDriverError as exc:
            raise JoinError(f"the Docker engine at {config.docker_url} did not say its size: {exc}") from None
    return config.donate.beyond(machine)


def hostd_argv(config_path: Path) -> list[str]:
    return [sys.executable, "-m", "potluck", "hostd", "--config", str(config_path.absolute())]


def systemd_unit(config_path: Path) -> str:
    """A unit that runs this hostd (`systemctl --user enable --now`, or as a system unit)."""
    return (
        "[Unit]\n"
        "Description=Potluck hostd: donates this machine to the pool\n"
        "After=network-online.target docker.service\n"
        "Wants=network-online.target\n"
        "\n"
        "[Service]\n"
        f"ExecStart={' '.join(hostd_argv(config_path))}\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        # Restarted every 5 s, a hostd that stopped for good would go on asking a pool that
        # refuses it (its key revoked) for as long as the machine runs.
        "# 3: stopped for good (left the pool, revoked, donates more than this machine has);\n"
        "# 2: hostd.toml is wrong; 4: another hostd runs on this state_dir (stop one of them).\n"
        "# Restarting mends none of them: hostd's log says what to do.\n"
        f"RestartPreventExitStatus={' '.join(str(code) for code in NO_RESTART_EXIT_CODES)}\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )
