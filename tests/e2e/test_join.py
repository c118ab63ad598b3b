"""Members join with one command: `potluck ops hosts enroll NAME` prints a token, `potluck join
TOKEN` on the member's machine does the rest (issue 15).

Real NATS (nkey authorization, users file re-rendered and reloaded), Postgres, the registry,
the allocator, the SSH gateway and a second private Docker engine standing for the member's
laptop. The commands run as subprocesses, exactly as an operator and a member type them.
"""

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import docker
import pytest

from potluck.contracts.host_events import HostJoined, HostJoinTokenIssued, host_stream
from potluck.contracts.join_token import PREFIX, decode, encode, secret_digest
from potluck.localstack import free_port, wait_for_port
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.process import ChildProcess
from potluck.localstack.test_image import DEFAULT_TAG
from potluck.member.join import JoinError, connects, new_key_pair
from potluck.registry import host as aggregate
from potluck.registry.enrollment import enroll_with_token, refresh_nats_authorization
from potluck.registry.nats_auth import public_key_of
from potluck.registry.repository import decide_on_host
from tests.e2e import shared_engine as shared_engine_fixtures
from tests.e2e.conftest import Gatewayed
from tests.fixtures.pool import EnrolledHost, Pool
from tests.helpers import wait_until

shared_engine = shared_engine_fixtures.shared_engine

SPENT = "this join token was already used or has expired; ask the operator for a new one"


def potluck(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "potluck", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        input=stdin,
        check=False,
    )


async def potluck_async(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(potluck, *args, env=env, stdin=stdin)


def test_printing_the_client_key_never_makes_one(tmp_path: Path) -> None:
    """Tried: `potluck sshgateway --print-client-key` (and `--print-host-key`) with a state
    directory that does not exist (a typo), one that holds no key, one whose key file is not a
    key, then one the gateway's keys are in; `ops hosts enroll --gateway ADDRESS=DIR` with the
    keyless directory.
    Must hold: no key is made anywhere (a made key would be pinned by hostds and refused by the
    real gateway); each refusal exits non-zero naming the directory looked in and what to give,
    without a traceback; the real key prints."""
    from potluck.sshgateway.service import client_public_key, host_public_key
    from potluck.sshgateway.settings import GatewaySettings

    typo, empty, broken, real = (tmp_path / name for name in ("sshgatewya", "empty", "broken", "real"))
    empty.mkdir()
    broken.mkdir()
    (broken / "tunnel_client_ed25519_key").write_text("not a key\n")
    for folder, said in (
        (typo, f"{typo} does not exist, so it holds no tunnel_client_ed25519_key"),
        (empty, f"{empty} holds no tunnel_client_ed25519_key"),
        (broken, "cannot read the SSH key"),
    ):
        printed = potluck(
            "sshgateway", "--print-client-key", "--state-dir", str(folder), env=no_database_env()
        )
        assert printed.returncode == 1, printed.stdout + printed.stderr
        assert printed.stdout == ""
        assert said in printed.stderr, printed.stderr
        assert "Traceback" not in printed.stderr, printed.stderr
        if folder is not broken:
            assert "the gateway makes its keys there when it first starts" in printed.stderr
            assert "--state-dir (or POTLUCK_SSHGATEWAY_STATE_DIR)" in printed.stderr
    assert not typo.exists()
    assert list(empty.iterdir()) == []
    enrolled = potluck(
        "ops", "hosts", "enroll", "laptop-z", "--gateway", f"127.0.0.1:2223={empty}",
        env=no_up_env(tmp_path),
    )  # fmt: skip
    assert enrolled.returncode == 2, enrolled.stdout + enrolled.stderr
    assert f"{empty} holds no tunnel_client_ed25519_key" in enrolled.stderr, enrolled.stderr
    assert list(empty.iterdir()) == []

    made = client_public_key(GatewaySettings(state_dir=real), make=True)
    printed = potluck("sshgateway", "--print-client-key", "--state-dir", str(real), env=no_database_env())
    assert (printed.returncode, printed.stdout.strip()) == (0, made), printed.stderr

    # The host key users pin (`potluck login --gateway-key`) is read the same way, never made.
    host = potluck("sshgateway", "--print-host-key", "--state-dir", str(typo), env=no_database_env())
    assert host.returncode == 1, host.stdout + host.stderr
    assert f"{typo} does not exist, so it holds no ssh_host_ed25519_key" in host.stderr, host.stderr
    assert "no host key printed" in host.stderr, host.stderr
    assert not typo.exists()
    host_key = host_public_key(GatewaySettings(state_dir=real), make=True)
    printed = potluck("sshgateway", "--print-host-key", "--state-dir", str(real), env=no_database_env())
    assert (printed.returncode, printed.stdout.strip()) == (0, host_key), printed.stderr


def join_args(token: str | None, engine: DockerEngine | str, config: Path) -> list[str]:
    """`potluck join`'s arguments; with `token` None, none: the token goes on standard input."""
    url = engine if isinstance(engine, str) else engine.url
    return [
        "join",
        *([] if token is None else [token]),
        "--docker-url",
        url,
        "--config",
        str(config),
        "--cpus",
        "1",
        "--memory",
        "1G",
        "--disk",
        "2G",
    ]


def start_join(pool: Pool, token: str, engine: DockerEngine, config: Path) -> ChildProcess:
    """`potluck join TOKEN --start`: joins, then runs hostd in the foreground (stopped with the pool)."""
    proc = ChildProcess(
        [
            sys.executable,
            "-m",
            "potluck",
            "--log-level",
            "DEBUG",
            *join_args(token, engine, config),
            "--start",
        ],
        log_path=pool.workdir / "join.log",
    )
    proc.start()
    pool.processes["joined-hostd"] = proc
    return proc


async def admitted(pool: Pool, seed: str, host_id: str) -> None:
    """Wait until nats-server admits a key just written to its users file (it applies a
    reload asynchronously)."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        try:
            await connects(pool.nats.url, seed, host_id)
            return
        except (JoinError, PermissionError):
            assert asyncio.get_running_loop().time() < deadline, "the reload never admitted the key"
            await asyncio.sleep(0.2)


@pytest.mark.slow
# `potluck join` writes hostd's default 5 s beat; the pool's fast test liveness (suspect after
# 1.5 s, lost 4 s later) left half a second between a beat and the host's allocations lost.
@pytest.mark.liveness(5.0, 3, 30.0)
async def test_a_member_joins_with_a_token_and_users_reach_its_container(
    pool: Pool, docker_engines: list[DockerEngine], tmp_path: Path
) -> None:
    """The operator enrolls with `ops hosts enroll` (gateway key from `sshgateway --print-client-key`
    with only the state directory); the member runs `potluck join TOKEN --start` against its own
    engine. Afterwards: the host is active with the member's own key, its config and credentials
    are 0600, the log holds the token's digest and never the token, a user's allocation runs on
    it and answers through the gateway, the throwaway key leaves the NATS users file, and the same
    token a second time is refused with a clear message and a non-zero exit code."""
    ssh_port, tunnel_port = free_port(), free_port()
    made = pool.gateway_client_key()  # as `potluck up` makes its gateway's keys before starting it
    printed = await potluck_async(
        "sshgateway", "--print-client-key", "--state-dir", str(pool.gateway_state_dir), env=no_database_env()
    )
    assert printed.returncode == 0, printed.stderr
    client_key = printed.stdout.strip()
    assert client_key.startswith("ssh-ed25519 ")
    assert client_key == made
    pool.start_gateway(listen=f"127.0.0.1:{ssh_port}", tunnel_listen=f"127.0.0.1:{tunnel_port}")
    await pool.wait_api()

    enrolled = await potluck_async(
        "ops", "hosts", "enroll", "laptop-b",
        "--database-url", pool.database_url,
        "--nats-url", pool.nats.url,
        "--gateway", f"127.0.0.1:{tunnel_port}={pool.gateway_state_dir}",
        "--nats-auth-file", str(pool.nats.auth_file),
        "--nats-pid-file", str(pool.nats.pid_file),
        "--service-seed-file", str(pool.services_seed_file),
        env=no_up_env(tmp_path),
    )  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr
    [token] = enrolled.stdout.splitlines()
    assert token.startswith(PREFIX)
    # What the command says is for the operator: no service log lines among it.
    assert '"level"' not in enrolled.stderr, enrolled.stderr
    assert "member's web page token" in enrolled.stderr
    content = decode(token)
    assert [(g.address, g.client_key) for g in content.gateways] == [(f"127.0.0.1:{tunnel_port}", client_key)]

    records = await pool.store.read_stream(host_stream(content.host_id))
    assert token not in json.dumps([r.data for r in records])
    assert content.secret not in json.dumps([r.data for r in records])
    assert [r.type for r in records] == ["HostEnrolled", HostJoinTokenIssued.type_name]
    throwaway = public_key_of(content.join_seed)
    assert throwaway in pool.nats.auth_file.read_text(), "enroll admits the token's identity"

    # Docker is checked before anything is spent: the same token still joins afterwards.
    member = tmp_path / "member"
    no_docker = await potluck_async(
        *join_args(token, "unix:///nonexistent/docker.sock", member / "hostd.toml")
    )
    assert no_docker.returncode != 0
    assert "no Docker engine answers at unix:///nonexistent/docker.sock" in no_docker.stderr
    assert not (member / "hostd.toml").exists()
    # Still accepted as TOKEN, with a word on where it can be read and where to give it instead.
    assert "warning: the join token was given on the command line" in no_docker.stderr, no_docker.stderr
    assert "potluck join ... < token" in no_docker.stderr, no_docker.stderr
    # hostd takes tcp:// and ssh:// engines too: join ended in a traceback on any but unix://.
    nothing_there = f"tcp://127.0.0.1:{free_port()}"
    for url, said in (
        (nothing_there, f"no Docker engine answers at {nothing_there}; start Docker"),
        ("/tmp/docker.sock", "/tmp/docker.sock is not a Docker engine URL: give unix:///path/docker.sock"),
    ):
        refused = await potluck_async(*join_args(token, url, member / "hostd.toml"))
        assert refused.returncode != 0, refused.stderr
        assert said in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr, refused.stderr
        assert not (member / "hostd.toml").exists()

    config = member / "hostd.toml"
    start_join(pool, token, docker_engines[1], config)
    await pool.wait_for_host(content.host_id, "active", timeout=60)
    state = (await pool.hosts()).hosts[content.host_id]
    joined_key = state.nkey
    assert joined_key.startswith("U")
    written = tomllib.loads(config.read_text())
    credentials = Path(written["credentials_file"])
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    assert oct(credentials.stat().st_mode & 0o777) == "0o600"
    assert written["host_id"] == content.host_id
    assert written["gateways"] == [{"address": f"127.0.0.1:{tunnel_port}", "client_key": client_key}]
    assert "joined as laptop-b" in (pool.workdir / "join.log").read_text()

    # A user's container on the new host, reached through the gateway. The test image the
    # member's engine holds is the member's own, which hostd does not run for the pool
    # (pool_images.py): the operator publishes it in the pool's library, whence the host pulls it.
    await asyncio.to_thread(pool.publish_in_library, docker_engines[0])
    await asyncio.to_thread(wait_for_port, ssh_port, what="the SSH gateway", timeout=30)
    key = tmp_path / "id_alice"
    await asyncio.to_thread(
        subprocess.run, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
    )
    host = EnrolledHost(content.host_id, "laptop-b", credentials, config)
    user = Gatewayed(pool, host, ssh_port, key, await pool.add_user("alice"))
    async with aiohttp.ClientSession() as http:
        alloc_id = await user.allocate(http)
    placed = await allocation_host(pool, alloc_id)
    assert placed == content.host_id
    answered = await user.ssh(alloc_id, "echo joined-$((20+22))")
    assert answered.returncode == 0, answered.stderr + pool.logs()
    assert answered.stdout.strip() == "joined-42"

    # The spent token's throwaway key leaves the users file once the answer was read.
    await wait_until(lambda: throwaway not in pool.nats.auth_file.read_text(), 30, "the throwaway key to go")
    assert joined_key in pool.nats.auth_file.read_text()

    again = await potluck_async(*join_args(token, docker_engines[1], tmp_path / "again" / "hostd.toml"))
    assert again.returncode != 0
    assert SPENT in again.stderr
    assert not (tmp_path / "again" / "hostd.toml").exists()
    records = await pool.store.read_stream(host_stream(content.host_id))
    assert [r.type for r in records].count(HostJoined.type_name) == 1


async def test_without_start_join_prints_the_command_and_writes_a_unit(
    pool: Pool, docker_engines: list[DockerEngine], tmp_path: Path
) -> None:
    """`potluck join TOKEN` without --start joins (the host has the member's key in the log), says
    what it donates, prints the one command that starts hostd and writes a systemd unit beside
    the configuration that runs exactly that command.
    Also tried: the printed line that installs the unit, copied into a shell whose home has no
    ~/.config/systemd/user yet, then the unit's own ExecStart once the donation is past the
    machine. Must hold: the unit lands in that folder (a bare `cp` failed there), systemd reads
    the unit without a complaint, and the exit code of a hostd that stopped for good is one the
    unit does not restart (Restart=on-failure restarted it every 5 s, for ever)."""
    issued = await enroll_with_token(pool.store, "laptop-d", nats_url=pool.nats.url)
    await refresh_nats_authorization(
        pool.store, pool.nats.auth_file, [pool.services_seed], pool.nats.pid_file
    )
    await admitted(pool, issued.join_seed, issued.host_id)
    config = tmp_path / "member" / "hostd.toml"

    joined = await potluck_async(*join_args(encode(issued), docker_engines[1], config))
    assert joined.returncode == 0, joined.stderr + pool.logs()
    assert "joined as laptop-d" in joined.stdout
    assert "donating 1 CPUs, 1G of memory and 2G of disk" in joined.stdout
    assert f"potluck hostd --config {config}" in joined.stdout
    unit = (config.parent / "potluck-hostd.service").read_text()
    assert f"-m potluck hostd --config {config.absolute()}" in unit
    assert unit in joined.stdout + "\n"
    state = (await pool.hosts()).hosts[issued.host_id]
    assert state.nkey.startswith("U")
    assert not state.join_nkey

    install = next(line.strip() for line in joined.stdout.splitlines() if "~/.config/systemd/user" in line)
    home = tmp_path / "home"
    home.mkdir()
    copied = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-c", install.split(" && systemctl ")[0]],
        env={**os.environ, "HOME": str(home)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert copied.returncode == 0, copied.stderr
    assert (home / ".config/systemd/user/potluck-hostd.service").read_text() == unit
    verified = await asyncio.to_thread(
        subprocess.run,
        ["systemd-analyze", "verify", str(config.parent / "potluck-hostd.service")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    assert "ignoring" not in verified.stderr, verified.stderr
    no_restart = next(line for line in unit.splitlines() if line.startswith("RestartPreventExitStatus="))
    config.write_text(config.read_text().replace('memory = "1G"', 'memory = "100T"'))
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    hostd = await asyncio.to_thread(
        subprocess.run,
        exec_start.removeprefix("ExecStart=").split(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "donate.memory: 100T is more than" in hostd.stderr, hostd.stderr
    assert str(hostd.returncode) in no_restart.removeprefix("RestartPreventExitStatus=").split(), (
        hostd.returncode,
        no_restart,
    )


async def test_the_join_token_comes_from_standard_input_and_never_from_the_command_line(
    pool: Pool, docker_engines: list[DockerEngine], tmp_path: Path
) -> None:
    """A token on the command line shows in every local user's process list until it is
    redeemed (another user of the machine could redeem it first) and stays in the shell's
    history. Tried: `potluck join` with the token piped on standard input and no TOKEN
    argument, `potluck join -` the same way, and `potluck join` with an empty line. Must
    hold: the first two join (the host has the member's key in the log); the empty line is
    refused with exit 2 saying what to give, and nothing is written."""
    config_of = {name: tmp_path / name / "hostd.toml" for name in ("piped", "dashed", "empty")}
    for name, dash in (("piped", False), ("dashed", True)):
        issued = await enroll_with_token(pool.store, f"laptop-{name}", nats_url=pool.nats.url)
        await refresh_nats_authorization(
            pool.store, pool.nats.auth_file, [pool.services_seed], pool.nats.pid_file
        )
        await admitted(pool, issued.join_seed, issued.host_id)
        args = join_args("-" if dash else None, docker_engines[1], config_of[name])
        joined = await potluck_async(*args, stdin=encode(issued) + "\n")
        assert joined.returncode == 0, joined.stderr + pool.logs()
        assert f"joined as laptop-{name}" in joined.stdout, joined.stdout
        assert "on the command line" not in joined.stderr, joined.stderr
        assert config_of[name].exists()
        state = (await pool.hosts()).hosts[issued.host_id]
        assert state.nkey.startswith("U")

    empty = await potluck_async(*join_args(None, docker_engines[1], config_of["empty"]), stdin="\n")
    assert empty.returncode == 2, empty.stdout + empty.stderr
    assert "no join token was typed or read from standard input" in empty.stderr, empty.stderr
    assert "potluck ops hosts enroll" in empty.stderr, empty.stderr
    assert not config_of["empty"].parent.exists()


async def test_enroll_refuses_a_file_it_could_not_write_before_recording_the_host(
    pool: Pool, tmp_path: Path
) -> None:
    """Tried: `potluck ops hosts enroll` with --nats-auth-file in a folder that does not exist
    (the README's /etc/nats/auth.json on a machine without it), then with --credentials-out
    there. Must hold: exit 2 naming the option and the missing folder, no traceback, nothing
    appended to the log; the same name then enrolls with a users file that can be written (it
    was recorded first, then the write failed as a traceback: the name held for the token's 24
    hours, and no token printed)."""
    missing = tmp_path / "etc-nats"
    db = ("--database-url", pool.database_url)
    head = await pool.store.head_position()
    for args, option, path in (
        (
            (
                *("--nats-url", pool.nats.url, "--nats-auth-file", str(missing / "auth.json")),
                *("--service-seed-file", str(pool.services_seed_file)),
            ),
            "--nats-auth-file",
            missing / "auth.json",
        ),
        (
            ("--credentials-out", str(missing / "laptop-w.creds")),
            "--credentials-out",
            missing / "laptop-w.creds",
        ),
    ):
        done = await potluck_async("ops", "hosts", "enroll", "laptop-w", *args, *db, env=no_up_env(tmp_path))
        assert done.returncode == 2, done.stdout + done.stderr
        said = " ".join(done.stderr.split())
        assert f"Invalid value for '{option}': {path}: its folder {missing} does not exist" in said, said
        assert "Traceback" not in done.stderr, done.stderr
    assert await pool.store.head_position() == head, "nothing recorded"
    assert not missing.exists()

    users = tmp_path / "auth.json"
    done = await potluck_async(
        *("ops", "hosts", "enroll", "laptop-w", "--nats-url", pool.nats.url, "--nats-auth-file", str(users)),
        *("--service-seed-file", str(pool.services_seed_file), *db),
        env=no_up_env(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(PREFIX), done.stdout
    assert users.exists()


async def allocation_host(pool: Pool, alloc_id: str) -> str | None:
    from tests.fixtures.pool import allocation

    state = await allocation(pool.store, alloc_id)
    return None if state is None else state.host_id


def no_database_env() -> dict[str, str]:
    """The environment without any database or NATS settings: printing a key needs none."""
    drop = {"POTLUCK_DATABASE_URL", "POTLUCK_NATS_URL", "POTLUCK_NATS_SEED_FILE"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def no_up_env(tmp_path: Path) -> dict[str, str]:
    """No `potluck up` pool in POTLUCK_HOME: every setting comes from the options."""
    return {**os.environ, "POTLUCK_HOME": str(tmp_path / "no-up")}


async def test_an_expired_token_is_refused_by_the_member_and_by_the_registry(
    pool: Pool, docker_engines: list[DockerEngine], tmp_path: Path
) -> None:
    """A token past its expires_at is refused by `potluck join` at once. The same token with its
    expires_at edited into the future is refused too: NATS no longer admits its identity; and
    when the users file still holds it (rendered while it was valid), the registry refuses it
    as expired by the log's own expiry. None writes a configuration, and the host never joins."""
    past = datetime.now(UTC) - timedelta(hours=25)
    issued = await enroll_with_token(pool.store, "laptop-c", nats_url=pool.nats.url, now=past)
    await refresh_nats_authorization(
        pool.store, pool.nats.auth_file, [pool.services_seed], pool.nats.pid_file
    )
    config = tmp_path / "member" / "hostd.toml"

    refused = await potluck_async(*join_args(encode(issued), docker_engines[1], config))
    assert refused.returncode != 0
    assert "this join token expired at" in refused.stderr
    assert "ask the operator for a new one" in refused.stderr

    edited = issued.model_copy(update={"expires_at": datetime.now(UTC) + timedelta(hours=1)})
    # The throwaway key of an expired token is not in the users file: NATS refuses it.
    refused_again = await potluck_async(*join_args(encode(edited), docker_engines[1], config))
    assert refused_again.returncode != 0
    assert SPENT in refused_again.stderr
    assert not config.exists()

    throwaway = public_key_of(issued.join_seed)
    await refresh_nats_authorization(
        pool.store,
        pool.nats.auth_file,
        [pool.services_seed],
        pool.nats.pid_file,
        also_joining=[(issued.host_id, throwaway)],
    )
    await admitted(pool, issued.join_seed, issued.host_id)
    by_registry = await potluck_async(*join_args(encode(edited), docker_engines[1], config))
    assert by_registry.returncode != 0
    assert f"this join token expired at {issued.expires_at.isoformat()}" in by_registry.stderr
    assert "[TOKEN_EXPIRED]" in by_registry.stderr
    assert not config.exists()
    state = (await pool.hosts()).hosts[issued.host_id]
    assert state.nkey == ""
    assert state.status == "enrolled"


async def test_a_registry_renders_the_users_file_from_the_log_as_it_starts(pool: Pool) -> None:
    """Tried: a member's join is in the log (HostJoined with its key, as the registry records it)
    but not in the users file (the registry stopped between recording and rendering), and the
    registry restarts. Must hold: once it runs, the file holds the member's key, nats-server
    admits it, and the file still admits the services (their key stays first)."""
    issued = await enroll_with_token(pool.store, "laptop-f", nats_url=pool.nats.url)
    seed, public = new_key_pair()
    pool.processes["registry"].stop()
    await decide_on_host(
        pool.store,
        issued.host_id,
        lambda state: aggregate.join(
            state,
            issued.host_id,
            token_sha256=secret_digest(issued.secret),
            nkey=public,
            now=datetime.now(UTC),
        ),
        {"actor": f"host:{issued.host_id}"},
    )
    assert public not in pool.nats.auth_file.read_text()

    pool.start_registry()
    await wait_until(lambda: public in pool.nats.auth_file.read_text(), 60, "the registry to render the key")
    await connects(pool.nats.url, seed, issued.host_id)
    assert public_key_of(pool.services_seed) in pool.nats.auth_file.read_text()


def summary_value(summary: str, label: str) -> str:
    return next(line.split()[-1] for line in summary.splitlines() if line.startswith(label))


async def host_status(database_url: str, host_id: str) -> str | None:
    from potluck.events import EventStore
    from potluck.registry.enrollment import current_hosts

    store = await EventStore.open(database_url, max_size=1)
    try:
        state = (await current_hosts(store)).hosts.get(host_id)
    finally:
        await store.close()
    return None if state is None else state.status


@pytest.mark.slow
async def test_a_second_engine_joins_a_pool_from_potluck_up(
    docker_engines: list[DockerEngine], tmp_path: Path, shared_engine: dict[str, str]
) -> None:
    """The README's way, on a pool from `potluck up`: the operator runs `potluck ops hosts enroll
    laptop-b` and nothing else (the pool's database, NATS, users file and gateway are the
    defaults); the member runs `potluck join --start < token` on a second Docker engine. With the
    local host paused, a user's allocation runs on the new host and answers through the
    gateway over the real `ssh`; the same token a second time is refused. The test image, the
    new host's own, runs there once the operator published it in the pool's library (README's
    `potluck ops images publish`): hostd runs no image of its member's it did not pull."""

    env = {
        **os.environ,
        **shared_engine,  # the pool's own engine (the local host's) is not what is tried
        "POTLUCK_HOME": str(tmp_path / "state"),
        "POTLUCK_CONFIG": str(tmp_path / "client.toml"),
    }
    ports = [
        *("--api-port", str(free_port()), "--nats-port", str(free_port())),
        *("--postgres-port", str(free_port()), "--ssh-port", str(free_port())),
        *("--tunnel-port", str(free_port()), "--registry-port", str(free_port())),
    ]
    started = await asyncio.to_thread(potluck, "up", "--detach", *ports, env=env, timeout=900)
    joined: ChildProcess | None = None
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        summary = started.stdout
        api, demo, gateway = (
            summary_value(summary, k) for k in ("allocator API", "demo token", "SSH gateway")
        )
        database, local = summary_value(summary, "event log"), summary_value(summary, "local host")

        enrolled = await potluck_async("ops", "hosts", "enroll", "laptop-b", env=env)
        assert enrolled.returncode == 0, enrolled.stderr
        [token] = enrolled.stdout.splitlines()
        host_id = decode(token).host_id

        config = tmp_path / "member" / "hostd.toml"
        # As the README has the member run it: the token from its file on standard input.
        token_file = tmp_path / "token"
        token_file.write_text(token + "\n")
        joined = ChildProcess(
            [
                *("bash", "-c", 'exec "$@" < "$0"', str(token_file)),
                *(sys.executable, "-m", "potluck", *join_args(None, docker_engines[1], config), "--start"),
            ],
            log_path=tmp_path / "join.log",
        )
        joined.start()

        async def active() -> bool:
            return await host_status(database, host_id) == "active"

        deadline = asyncio.get_running_loop().time() + 90
        while not await active():
            assert joined.running(), joined.log_tail(40)
            assert asyncio.get_running_loop().time() < deadline, joined.log_tail(40)
            await asyncio.sleep(0.3)

        paused = await potluck_async(
            "ops", "hosts", "control", local, "pause", "--database-url", database, env=env
        )
        assert paused.returncode == 0, paused.stderr

        published = await potluck_async("ops", "images", "publish", DEFAULT_TAG, env=env)
        assert published.returncode == 0, published.stdout + published.stderr
        logged_in = await potluck_async("login", "--url", api, "--token", demo, "--gateway", gateway, env=env)
        assert logged_in.returncode == 0, logged_in.stderr
        key = tmp_path / "id_ed25519"
        await asyncio.to_thread(
            subprocess.run, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
        )
        created = await potluck_async(
            "alloc", "create", "--cpus", "0.5", "--memory", "64M", "--image", DEFAULT_TAG,
            "--ssh-key", f"{key}.pub", "--wait", "--json", "--", "sleep", "600",
            env=env,
        )  # fmt: skip
        assert created.returncode == 0, created.stdout + created.stderr + joined.log_tail(40)
        allocation = json.loads(created.stdout)
        assert allocation["state"] == "running"
        assert allocation["host_id"] == host_id

        answered = await potluck_async(
            "ssh", allocation["id"], "-i", str(key), "--", "echo joined-$((40+2))", env=env
        )
        assert answered.returncode == 0, answered.stdout + answered.stderr
        assert answered.stdout.strip() == "joined-42"

        again = await potluck_async(
            *join_args(token, docker_engines[1], tmp_path / "again" / "hostd.toml"), env=env
        )
        assert again.returncode != 0
        assert SPENT in again.stderr
    finally:
        if joined is not None:
            joined.stop(timeout=30)
        stopped = await asyncio.to_thread(potluck, "down", env=env, timeout=180)
        for engine in docker_engines[1:]:
            from potluck.hostd.docker_driver import DockerDriver

            with DockerDriver(engine.url) as driver:
                for container in driver.list_managed(None):
                    driver.remove(container.container_id)
    assert stopped.returncode == 0, stopped.stderr


async def test_a_donation_larger_than_the_machine_is_refused_by_join_and_by_hostd(
    pool: Pool, docker_engines: list[DockerEngine], tmp_path: Path
) -> None:
    """Tried: a member joins offering one CPU more than the machine of their Docker engine has,
    then memory past all of it (a careless `--cpus 64` on a laptop), then disk past the file
    system the engine keeps its data on (it was never compared: a 100T donation had the pool
    place 62G where 59G were free); then joins within it, edits
    hostd.toml to donate more CPUs than the machine has, and starts hostd. Must hold: both joins
    are refused naming the option and the machine's size, before the token is spent (no file is
    written, the host is not joined) so the same token then joins; the hostd exits 3 naming
    `donate.cpus` and never registers, so the pool is never promised those CPUs (the engine
    would refuse any container asking more than it has, and memory past it would push the
    member's own programs out)."""
    engine = docker_engines[1]
    client = docker.DockerClient(base_url=engine.url)
    try:
        info = client.info()
        cpus = int(info["NCPU"])  # the engine's own word, as `docker info` prints it
        client_root = info["DockerRootDir"]
    finally:
        client.close()
    issued = await enroll_with_token(pool.store, "laptop-big", nats_url=pool.nats.url)
    await refresh_nats_authorization(
        pool.store, pool.nats.auth_file, [pool.services_seed], pool.nats.pid_file
    )
    await admitted(pool, issued.join_seed, issued.host_id)
    config = tmp_path / "member" / "hostd.toml"
    config.parent.mkdir()
    token = encode(issued)

    too_many = await potluck_async(*join_args(token, engine, config), "--cpus", str(cpus + 1))
    assert too_many.returncode == 1, too_many.stdout + too_many.stderr
    assert f"--cpus: {cpus + 1} is more than the {cpus} CPUs of the" in too_many.stderr
    too_much = await potluck_async(*join_args(token, engine, config), "--memory", "1000T")
    assert too_much.returncode == 1, too_much.stdout + too_much.stderr
    assert "--memory: 1000T is more than the" in too_much.stderr
    too_big = await potluck_async(*join_args(token, engine, config), "--disk", "100T")
    assert too_big.returncode == 1, too_big.stdout + too_big.stderr
    size = shutil.disk_usage(client_root).total
    assert f"--disk: 100T is more than the {size / (1 << 30):.1f}G file system the Docker engine" in (
        too_big.stderr
    )
    assert "Traceback" not in too_many.stderr + too_much.stderr + too_big.stderr
    assert list(config.parent.iterdir()) == []
    assert (await pool.hosts()).hosts[issued.host_id].nkey == ""

    joined = await potluck_async(*join_args(token, engine, config))
    assert joined.returncode == 0, joined.stderr + pool.logs()
    text = config.read_text()
    assert "cpus = 1" in text
    config.write_text(text.replace("cpus = 1.0", f"cpus = {cpus + 1}.0", 1))
    started = await potluck_async("hostd", "--config", str(config))
    assert started.returncode == 3, started.stdout + started.stderr
    assert f"donate.cpus: {cpus + 1} is more than the {cpus} CPUs" in started.stderr
    assert "change [donate]" in started.stderr
    state = (await pool.hosts()).hosts[issued.host_id]
    assert state.donated is None, state


async def test_enroll_with_credentials_out_says_what_hostd_toml_goes_with_them(
    pool: Pool, tmp_path: Path
) -> None:
    """Tried: `potluck ops hosts enroll laptop-c --credentials-out FILE` with the NATS URL members
    reach and a gateway (README: the member then writes hostd.toml by hand), then the hostd.toml
    its stderr shows, put beside the credentials file as it says, loaded as hostd loads it.
    Must hold: stdout is still the JSON scripts read (docker-compose.yml's trial host); stderr
    names the credentials file and gives a hostd.toml (before: nothing, and the NATS URL and the
    gateway's client key were the operator's to find) that loads, naming this host, its
    credentials, the NATS URL and the gateway pinned to its key."""
    from potluck.hostd.config import load_config
    from potluck.sshgateway.service import client_public_key
    from potluck.sshgateway.settings import GatewaySettings

    key = client_public_key(GatewaySettings(state_dir=tmp_path / "gateway"), make=True)
    creds = tmp_path / "member" / "laptop-c.creds"
    creds.parent.mkdir()
    done = await potluck_async(
        *("ops", "hosts", "enroll", "laptop-c", "--credentials-out", str(creds)),
        *("--nats-url", pool.nats.url, "--gateway", f"127.0.0.1:2223={tmp_path / 'gateway'}"),
        *("--database-url", pool.database_url),
        env=no_up_env(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    enrolled = json.loads(done.stdout)
    assert enrolled.keys() == {"host_id", "name", "credentials_file", "member_token"}
    said, _, toml = done.stderr.partition("\n")
    assert f"enrolled laptop-c as {enrolled['host_id']}: its credentials are in {creds}" in said, said
    hostd_toml = creds.parent / "hostd.toml"
    hostd_toml.write_text(toml.replace("/var/lib/potluck-hostd", str(tmp_path / "state")))
    config = load_config(hostd_toml)
    assert config.host_id == enrolled["host_id"]
    assert config.credentials_file == creds
    assert config.nats_url == pool.nats.url
    assert [(g.address, g.client_key) for g in config.gateways] == [("127.0.0.1:2223", key)]
