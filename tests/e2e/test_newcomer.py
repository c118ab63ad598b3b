"""The newcomer's path: the README's first command on a clean state directory, then the user quick start."""

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import tomli_w

from potluck.contracts.host_events import host_stream
from potluck.events import EventStore
from potluck.localstack import free_port
from potluck.localstack.docker_engine import DockerEngine, engine_request
from potluck.registry.enrollment import current_hosts, enroll_host
from potluck.registry.nats_auth import new_user_key
from potluck.sshgateway.service import client_public_key
from potluck.sshgateway.settings import GatewaySettings
from potluck.up import LOCAL, LOST_LOCAL, REPLACED_BY
from potluck.up_state import pool_files
from tests.e2e import shared_engine as shared_engine_fixtures
from tests.fixtures.pool import Pool
from tests.fixtures.servers import _fresh_database
from tests.fixtures.user_home import with_home

shared_engine = shared_engine_fixtures.shared_engine


def potluck(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "potluck", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


#: What an operator may have exported: the defaults from a running `potluck up` are tested without.
OPERATOR_SETTINGS = ("POTLUCK_DATABASE_URL", "POTLUCK_NATS_URL", "POTLUCK_NATS_SEED_FILE")


@pytest.fixture
def newcomer(tmp_path: Path) -> dict[str, str]:
    """A person with a fresh home: their own state directory and client configuration."""
    return {
        **os.environ,
        "POTLUCK_HOME": str(tmp_path / "state"),
        "POTLUCK_CONFIG": str(tmp_path / "client.toml"),
    }


def processes_mentioning(needle: str) -> list[str]:
    """Command lines of live processes that name `needle` (a state directory, say)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:  # ended while we looked
            continue
        line = " ".join(a.decode(errors="replace") for a in argv if a)
        if needle in line:
            found.append(f"{cmdline.parent.name}: {line}")
    return found


def hostd_pids(state: Path) -> list[int]:
    return [
        int(line.split(":")[0]) for line in processes_mentioning(str(state)) if " hostd --config " in line
    ]


def restarted_hostd(state: Path, killed: int, timeout: float = 60) -> int:
    """The new hostd's PID, once `potluck up` has said on its console that it restarted hostd."""
    deadline = time.monotonic() + timeout
    while True:
        console = (state / "up.log").read_text(errors="replace")
        pids = [pid for pid in hostd_pids(state) if pid != killed]
        if "hostd-local was killed by signal 9" in console and "restarted hostd-local" in console and pids:
            return pids[0]
        assert time.monotonic() < deadline, f"hostd not restarted after {timeout}s:\n{console[-3000:]}"
        time.sleep(0.2)


@pytest.mark.slow
def test_up_then_the_user_quick_start_then_down(newcomer: dict[str, str], tmp_path: Path) -> None:
    """README: `potluck up`, then the user quick start (login, create --wait, a command in the
    container over the real `ssh` through the gateway, release), then `potluck down`.
    An operator command given the quick start's exported database URL, which names no database
    here, is refused naming the pool's log and what to unset (before: only that it did not
    answer).
    Before the quick start its hostd is killed with SIGKILL: `potluck up` says so on its console
    and starts it again, and the quick start runs on the restarted hostd.
    Afterwards no process started for this state directory is alive (the restarted hostd
    included), no socket or PID file of one is left in it, and the log is kept."""
    ports = [
        "--api-port",
        str(free_port()),
        "--nats-port",
        str(free_port()),
        "--postgres-port",
        str(free_port()),
        "--ssh-port",
        str(free_port()),
        "--tunnel-port",
        str(free_port()),
        "--registry-port",
        str(free_port()),
    ]
    started = potluck("up", "--detach", *ports, env=newcomer, timeout=900)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        summary = started.stdout
        token = next(line.split()[-1] for line in summary.splitlines() if line.startswith("demo token"))
        api = next(line.split()[-1] for line in summary.splitlines() if line.startswith("allocator API"))
        gateway = next(line.split()[-1] for line in summary.splitlines() if line.startswith("SSH gateway"))
        assert f"potluck login --url {api} --token {token} --gateway {gateway}" in summary
        registry = next(
            line.split()[-1] for line in summary.splitlines() if line.startswith("image registry")
        )
        assert registry.startswith("127.0.0.1:")
        # The default image is in the registry's library, where other members' machines pull it;
        # the operator's command publishes it again with the pool's defaults (nothing to give).
        console = (Path(newcomer["POTLUCK_HOME"]) / "up.log").read_text()
        assert "publishing potluck-default:latest" in console, console
        assert "could not publish" not in console, console
        # up's console says what it does in its own words: the in-process enrollment's service
        # log line (JSON) once came out among them.
        assert '"event":' not in console, console
        # Nor with where in our code each line was said (rich's log path: "cli.py:1614").
        assert "cli.py:" not in console, console
        republished = potluck("ops", "images", "publish", "potluck-default:latest", env=newcomer)
        assert republished.returncode == 0, republished.stdout + republished.stderr
        assert f"published {registry}/library/potluck-default:latest@sha256:" in republished.stdout
        # A user finds the pool's own images beside theirs (before, `image ls` showed only their
        # namespace, empty, and nothing said what else could be run).
        as_user = {
            **newcomer,
            "POTLUCK_URL": api,
            "POTLUCK_TOKEN": token,
            "POTLUCK_CONFIG": str(Path(newcomer["POTLUCK_HOME"]) / "absent-client.toml"),
        }
        listed = potluck("image", "ls", "--json", env=as_user)
        assert listed.returncode == 0, listed.stderr
        assert {"name": "potluck-default", "tags": ["latest"]} in json.loads(listed.stdout)["library"]
        shown = potluck("image", "ls", env=as_user)
        assert "potluck-default:latest" in shown.stdout.splitlines(), shown.stdout
        assert "the pool's own images, for everyone" in shown.stderr, shown.stderr
        not_a_pool_name = potluck("ops", "images", "publish", "someone/else:1", env=newcomer)
        assert not_a_pool_name.returncode == 1
        assert "cannot name a pool image" in not_a_pool_name.stderr

        again = potluck("up", "--detach", *ports, env=newcomer)
        assert again.returncode == 0
        assert "already up" in again.stdout
        # Asked for other ports than the running pool's: it keeps its own, and says so (it
        # once answered "already up", exit 0, and the user believed the port they asked for).
        asked = str(free_port())
        elsewhere = potluck("up", "--detach", "--api-port", asked, env=newcomer)
        assert elsewhere.returncode == 1, elsewhere.stdout + elsewhere.stderr
        assert f"--api-port {asked} (the pool's: {api.rsplit(':', 1)[1]})" in elsewhere.stderr
        assert "`potluck down` stops it" in elsewhere.stderr
        assert "--state-dir" in elsewhere.stderr

        # The operator's quick start, its exports followed here too (README says to skip them on
        # such a machine): the URL names no database here, and the refusal names the pool's log.
        database = next(line.split()[-1] for line in summary.splitlines() if line.startswith("event log"))
        exported = f"postgresql://potluck@127.0.0.1:{free_port()}/potluck"
        listed = potluck("ops", "hosts", "list", env={**newcomer, "POTLUCK_DATABASE_URL": exported})
        assert listed.returncode == 1, listed.stdout + listed.stderr
        said = " ".join(listed.stderr.split())
        assert f"cannot reach the event log at {exported}" in said, said
        state_dir = newcomer["POTLUCK_HOME"]
        assert f"the `potluck up` pool with state in {state_dir} keeps its log at {database}" in said, said
        assert "unset POTLUCK_DATABASE_URL" in said, said

        state = Path(newcomer["POTLUCK_HOME"])
        [hostd] = hostd_pids(state)
        os.kill(hostd, signal.SIGKILL)
        restarted_hostd(state, hostd)

        # What a newcomer types wrong at login: each is a usage error (2) or an unreachable
        # allocator (3) that names what to give instead, never a traceback, and saves nothing.
        ssh_port = gateway.rsplit(":", 1)[1]
        for url, given_gateway, code, says in (
            (api.removeprefix("http://"), gateway, 2, "is not an http:// or https:// address"),
            ("htp://127.0.0.1:1", gateway, 2, "is not an http:// or https:// address"),
            (f"{api}/v1", gateway, 2, "names the API's /v1 path"),
            (f"{api}/somewhere", gateway, 2, "has no allocator API"),
            (f"http://127.0.0.1:{ssh_port}", gateway, 3, "does not answer as the allocator's HTTP API does"),
            (api, "127.0.0.1", 2, "is not HOST:PORT"),
            (api, "127.0.0.1:ssh", 2, "is not HOST:PORT"),
        ):
            mistyped = potluck(
                "login", "--url", url, "--token", token, "--gateway", given_gateway, env=newcomer
            )
            assert mistyped.returncode == code, (url, given_gateway, mistyped.stderr)
            assert says in mistyped.stderr, (url, given_gateway, mistyped.stderr)
            assert "Traceback" not in mistyped.stderr, mistyped.stderr
            assert "allocator API" in mistyped.stderr or "SSH gateway" in mistyped.stderr, mistyped.stderr
        empty = potluck("login", "--url", api, "--token", "", "--gateway", gateway, env=newcomer)
        assert empty.returncode == 2, empty.stderr
        assert "--token is empty: give the token an operator gave you" in empty.stderr, empty.stderr
        assert not (tmp_path / "client.toml").exists(), "a refused login saves nothing"

        logged_in = potluck("login", "--url", api, "--token", token, "--gateway", gateway, env=newcomer)
        assert logged_in.returncode == 0, logged_in.stderr
        # `potluck image push` with no engine where DOCKER_HOST says: the pool here started its own
        # (the summary's `Docker engine`), and the error names it.
        engine = next(line.split()[-1] for line in summary.splitlines() if line.startswith("Docker engine"))
        no_engine = {**newcomer, "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
        unpushed = potluck("image", "push", "my-sim:1", env=no_engine)
        assert unpushed.returncode == 3, unpushed.stderr
        assert f"export DOCKER_HOST={engine}" in unpushed.stderr, unpushed.stderr
        key = tmp_path / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        created = potluck(
            "alloc",
            "create",
            "--cpus",
            "1",
            "--memory",
            "512M",
            "--image",
            "potluck-default:latest",
            "--ssh-key",
            f"{key}.pub",
            "--wait",
            "--json",
            "--",
            "python3",
            "-c",
            "import time; time.sleep(600)",
            env=newcomer,
        )
        assert created.returncode == 0, created.stderr
        allocation = json.loads(created.stdout)
        assert allocation["state"] == "running"

        # Tracing is on in a pool from `potluck up`, its spans kept in the state directory:
        # `potluck ops trace` prints the allocation's trace from them, hostd's Docker calls included.
        database = next(line.split()[-1] for line in summary.splitlines() if line.startswith("event log"))
        for _ in range(60):  # the processes write their spans in batches
            traced = potluck("ops", "trace", allocation["id"], "--database-url", database, env=newcomer)
            assert traced.returncode == 0, traced.stderr
            # Each process writes its own batches: wait for the allocator's root and hostd's call alike.
            if "docker create+start" in traced.stdout and "  POST /v1/allocations  " in traced.stdout:
                break
            time.sleep(0.5)
        root = traced.stdout.splitlines()[1]
        assert root.split()[0] == "potluck-allocator", traced.stdout
        assert "  POST /v1/allocations  " in root, traced.stdout
        assert "potluck-hostd" in traced.stdout, traced.stdout + traced.stderr

        # An operator on this machine gives no option: the running pool's log, NATS and seed.
        # A seed NATS does not know is named as the cause, not as "no servers available".
        operator = {k: v for k, v in newcomer.items() if k not in OPERATOR_SETTINGS}
        status = potluck("ops", "status", "--live", env=operator)
        assert status.returncode == 0, status.stderr
        assert "Pool at log position" in status.stdout, status.stdout
        assert "folded to position" in status.stdout, status.stdout
        assert "not asked" not in status.stdout, status.stdout
        checked = potluck("ops", "replay", "--check", "--quiet", env=operator)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "OK: the live read models equal the replay" in checked.stdout, checked.stdout
        stranger = tmp_path / "stranger.seed"
        stranger.write_text(new_user_key().seed)
        refused = potluck("ops", "status", "--live", "--nats-seed-file", str(stranger), env=operator)
        assert "refuses this client" in refused.stdout, refused.stdout + refused.stderr
        assert "give --nats-seed-file" in refused.stdout, refused.stdout

        # The real OpenSSH client, through the gateway and hostd's outbound link, into the container.
        answered = potluck(
            "ssh", allocation["id"], "-i", str(key), "--", "python3", "--version", env=newcomer
        )
        assert answered.returncode == 0, answered.stdout + answered.stderr
        assert answered.stdout.startswith("Python 3."), answered.stdout
        # The gateway given to login is wrong (nothing listens there): `potluck cp` says which
        # setting names it, beside ssh's own words.
        astray = tmp_path / "astray.toml"
        astray.write_text(
            re.sub(
                r'gateway = "[^"]*"',
                f'gateway = "127.0.0.1:{free_port()}"',
                (tmp_path / "client.toml").read_text(),
            )
        )
        (tmp_path / "small.csv").write_text("a,b\n")
        unreached = potluck(
            "cp",
            "-i",
            str(key),
            str(tmp_path / "small.csv"),
            f"{allocation['id']}:/root/",
            env={**newcomer, "POTLUCK_CONFIG": str(astray)},
        )
        assert unreached.returncode == 255, unreached.stderr
        assert "Connection refused" in unreached.stderr, unreached.stderr
        assert "is the SSH gateway there up? `potluck login --gateway` names it" in unreached.stderr
        limit = potluck(
            "ssh",
            allocation["id"],
            "-i",
            str(key),
            "--",
            # cgroup v2, else v1: the container sees its own limit either way.
            "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
            env=newcomer,
        )
        assert limit.stdout.split() == [str(512 << 20)], limit.stdout + limit.stderr
        assert (tmp_path / "known_hosts").read_text().strip(), "the gateway's key is remembered"
        failed = potluck("ssh", allocation["id"], "-i", str(key), "--", "exit 7", env=newcomer)
        assert failed.returncode == 7, failed.stderr
        # A command that starts like one of ssh's own options goes to the container: ssh reads
        # options after the destination too, and `-V` there printed ssh's version, exit 0.
        dashed = potluck("ssh", allocation["id"], "-i", str(key), "--", "-V", env=newcomer)
        assert "OpenSSH" not in dashed.stdout + dashed.stderr, dashed.stderr
        assert dashed.returncode != 0
        # An id that is not one of the user's: the allocator says so (the gateway, rightly, says
        # only "Permission denied (publickey)", which sent people after their keys).
        stranger_id = potluck("ssh", "a-000000000000", "-i", str(key), "--", "true", env=newcomer)
        assert stranger_id.returncode == 1, stranger_id.stderr
        assert "no allocation a-000000000000 of yours" in stranger_id.stderr, stranger_id.stderr

        listed = potluck("alloc", "ls", "--json", env=newcomer)
        assert [a["id"] for a in json.loads(listed.stdout)] == [allocation["id"]]
        assert [a["host_name"] for a in json.loads(listed.stdout)] == ["local"]  # `--constraint name=local`
        shown = potluck("alloc", "show", allocation["id"], env=newcomer)
        assert "AllocationRunning" in shown.stdout
        released = potluck("alloc", "rm", allocation["id"], "--json", env=newcomer)
        assert json.loads(released.stdout)["state"] == "released"

        # Without --ssh-key the user's own default key is admitted, and they are told which;
        # with none in ~/.ssh they are told that nothing can reach it, and how to make one.
        home = tmp_path / "home"
        (home / ".ssh").mkdir(parents=True)
        shutil.copy(f"{key}.pub", home / ".ssh" / "id_ed25519.pub")
        small = ("--cpus", "0.1", "--memory", "64M", "--image", "potluck-default:latest", "--json")
        # -q: the id alone on stdout, as a script keeps it (ID=$(potluck alloc create -q ...)).
        keyless = potluck("alloc", "create", *small[:-1], "-q", "--wait", env={**newcomer, "HOME": str(home)})
        assert keyless.returncode == 0, keyless.stderr
        assert f"{home}/.ssh/id_ed25519.pub may SSH in" in keyless.stderr, keyless.stderr
        assert re.fullmatch(r"a-[0-9a-f]{12}\n", keyless.stdout), keyless.stdout
        keyless_id = keyless.stdout.strip()
        reached = potluck("ssh", keyless_id, "-i", str(key), "--", "true", env=newcomer)
        assert reached.returncode == 0, reached.stdout + reached.stderr
        # ssh and the CLI read the home the password database gives: an empty one there too, so
        # that keys of the machine's real home do not count.
        no_keys = tmp_path / "empty"
        no_keys.mkdir()
        nobody = subprocess.run(
            with_home(no_keys, [sys.executable, "-m", "potluck", "alloc", "create", *small], tmp_path),
            capture_output=True,
            text=True,
            env={**newcomer, "HOME": str(no_keys)},
            timeout=120,
            check=False,
        )
        assert nobody.returncode == 0, nobody.stderr
        assert "no public key in" in nobody.stderr, nobody.stderr
        assert "ssh-keygen -t ed25519" in nobody.stderr, nobody.stderr
        nobody_id = json.loads(nobody.stdout)["id"]

        # All of them at once, as `docker rm` takes them: `alloc ls -q` lists the ids (the
        # first one, released already, too), and an id that is not the user's is named
        # without stopping the others being released.
        ids = potluck("alloc", "ls", "-q", env=newcomer).stdout.split()
        assert ids == [allocation["id"], keyless_id, nobody_id]
        unknown = "a-000000000000"
        all_at_once = potluck("alloc", "rm", *ids, unknown, "--json", env=newcomer)
        assert all_at_once.returncode != 0
        assert f"no allocation {unknown} of yours" in all_at_once.stderr, all_at_once.stderr
        answers = [json.loads(line) for line in all_at_once.stdout.splitlines()]
        assert [(a["id"], a["state"]) for a in answers] == [(i, "released") for i in ids]
        listed = json.loads(potluck("alloc", "ls", "--json", env=newcomer).stdout)
        assert {a["state"] for a in listed} == {"released"}
        # With a wrong token every id would be refused alike: said once, not once per id.
        wrong = tmp_path / "wrong-token.toml"
        config = (tmp_path / "client.toml").read_text()
        wrong.write_text(re.sub(r'token = "[^"]*"', 'token = "pl_wrong"', config))
        refused = potluck("alloc", "rm", *ids, env={**newcomer, "POTLUCK_CONFIG": str(wrong)})
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.count("error:") == 1, refused.stderr
        assert "run `potluck login` with a valid token" in refused.stderr, refused.stderr  # not cut at 80
    finally:
        stopped = potluck("down", env=newcomer, timeout=180)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stdout
    # Twice: nothing runs there any more, which is an error naming the directory looked in.
    twice = potluck("down", env=newcomer)
    assert twice.returncode == 1, twice.stdout + twice.stderr
    assert f"no `potluck up` pool runs with state in {newcomer['POTLUCK_HOME']}" in twice.stderr
    assert "--state-dir" in twice.stderr
    assert "Traceback" not in twice.stderr
    state = Path(newcomer["POTLUCK_HOME"])
    assert not (state / "up.pid").exists()
    # Its console (up.log when detached) says when everything has stopped, not only that it stops.
    assert (state / "up.log").read_text().rstrip().endswith("stopped (the event log is kept)")
    assert (state / "postgres" / "data" / "PG_VERSION").exists(), "the event log is kept"
    assert processes_mentioning(str(state)) == []
    # Nor a socket or PID file that looks alive: containerd's sockets and nats-server's PID
    # file were left in the state directory (the images' layers under docker/data are not ours).
    ours = [p for d in ("pool", "postgres", "docker/run") for p in (state / d).rglob("*")]
    assert [str(p) for p in ours if p.is_socket() or p.suffix == ".pid"] == []


async def test_up_publishes_its_default_image_from_its_files_and_a_republish_sends_nothing(
    pool: Pool, docker_engines: list[DockerEngine], default_image: str
) -> None:
    """Tried: what `potluck up` does to publish its default image (`_publish_default_image`) into
    a pool registry that lacks it, then `ops images publish` of that image from the engine, then
    a second engine (a member's) pulling it from the library.
    Must hold: up publishes it without a word of failure, from this build's files: the library's
    manifest names the engine's image id as its configuration and the layer compressed once beside
    the cached root filesystem (before, the engine compressed 300 MB at every start); the
    engine's publish finds it there and uploads nothing (no blob upload in the registry's log),
    answering the same manifest digest; the member's engine pulls it (each layer checked against
    the configuration) as the very image id the operator's engine holds."""
    import docker as docker_py

    from potluck.allocator.registry_access import Scope
    from potluck.allocator.registry_tokens import TokenIssuer
    from potluck.kernel.signing_keys import load_signing_key
    from potluck.localstack.default_image import cache_dir, default_image_files
    from potluck.localstack.test_image import image_id
    from potluck.ops.pool_images import _Registry, publish_image
    from potluck.up import _publish_default_image

    operator, member = docker_engines[0], docker_engines[1]
    registry = await asyncio.to_thread(pool.start_image_registry)
    said: list[str] = []
    await _publish_default_image(pool, operator.url, registry.address, default_image, said.append)
    assert not [line for line in said if "could not publish" in line], said

    files = await asyncio.to_thread(default_image_files, operator.url)
    assert files is not None, "the engine's default image is this build's, as up loads it"
    assert files.layer.path.parent == cache_dir()
    engine_id = await asyncio.to_thread(image_id, operator.url, default_image)
    key = pool.registry_signing_key()
    token = TokenIssuer(load_signing_key(key)).issue(
        "operator", [Scope("repository", "library/potluck-default", frozenset({"pull"}))]
    )
    library = _Registry(registry.address, "library/potluck-default", token.token)
    status, headers, body = await asyncio.to_thread(
        library.request,
        "GET",
        "/v2/library/potluck-default/manifests/latest",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    assert status == 200, body
    manifest = json.loads(body)
    assert manifest["config"]["digest"] == engine_id
    assert [layer["digest"] for layer in manifest["layers"]] == [files.layer.digest]

    log = registry.process.log_path
    uploads_before = log.read_text(errors="replace").count("/blobs/uploads/")
    republished = await asyncio.to_thread(
        publish_image, operator.url, registry.address, key, default_image, quiet=True
    )
    assert (
        republished == f"{registry.address}/library/potluck-default:latest@{headers['docker-content-digest']}"
    )
    assert log.read_text(errors="replace").count("/blobs/uploads/") == uploads_before, "nothing sent again"

    client = docker_py.DockerClient(base_url=member.url)
    reference = f"{registry.address}/library/potluck-default"
    try:
        await asyncio.to_thread(
            client.api.pull, reference, "latest", auth_config={"registrytoken": token.token}
        )
        assert client.images.get(f"{reference}:latest").id == engine_id
    finally:
        with contextlib.suppress(docker_py.errors.ImageNotFound):
            client.images.remove(f"{reference}:latest")
        client.close()


def test_operator_commands_without_a_pool_say_what_to_give(newcomer: dict[str, str]) -> None:
    """Tried: operator commands with no --database-url, no POTLUCK_DATABASE_URL and no `potluck
    up` running (as after `ops/up --state-dir DIR` without exporting POTLUCK_HOME). Must hold:
    each exits 2 naming the option, the variable, where it looked and how to name another
    state directory (it said only "`potluck up` starts one", while a pool ran elsewhere)."""
    operator = {k: v for k, v in newcomer.items() if k not in OPERATOR_SETTINGS}
    database = "give --database-url (or POTLUCK_DATABASE_URL)"
    for args, gives, other in (
        (("ops", "status"), database, "POTLUCK_HOME"),
        (("ops", "hosts", "list"), database, "POTLUCK_HOME"),
        (("ops", "replay"), database, "POTLUCK_HOME"),
        (("ops", "backup", "x.dump"), database, "POTLUCK_HOME"),
        (("ops", "users", "web-token"), database, "POTLUCK_HOME"),
        (("ops", "hosts", "enroll", "laptop-2"), database, "--state-dir or POTLUCK_HOME"),
        (
            ("ops", "images", "publish", "potluck-default:latest"),
            "give --docker-url, --registry-address and --registry-token-key",
            "--state-dir or POTLUCK_HOME",
        ),
    ):
        done = potluck(*args, env=operator)
        said = " ".join(done.stderr.split())
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert gives in said, (args, said)
        assert f"no `potluck up` pool runs with state in {newcomer['POTLUCK_HOME']}" in said, said
        assert f"{other} names another pool's state directory" in said, said


def test_a_port_in_use_is_named(newcomer: dict[str, str]) -> None:
    """Tried: `potluck up` with --api-port on a port something listens on, in the foreground and
    twice with --detach. Must hold: each exits non-zero naming the port and the option to change;
    the detached one shows its child's error as lines, once per run."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        def up(*extra: str) -> subprocess.CompletedProcess[str]:
            ports = ("--nats-port", str(free_port()), "--postgres-port", str(free_port()))
            return potluck("up", *extra, "--api-port", str(port), *ports, env=newcomer)

        done = up()
        # The same in the background: the child's error, its line breaks kept (they were
        # shown as `\x0a`), and only this run's (up.log keeps earlier runs' lines too).
        detached = [up("--detach") for _ in range(2)]
    assert done.returncode != 0
    assert f"port {port} is in use" in done.stderr
    assert "--api-port" in done.stderr
    for attempt in detached:
        assert attempt.returncode == 1, attempt.stderr
        assert "\\x0a" not in attempt.stderr, attempt.stderr
        assert attempt.stderr.count(f"port {port} is in use") == 1, attempt.stderr
        assert "Traceback" not in attempt.stderr, attempt.stderr


def all_ports() -> list[str]:
    """Every port option of `potluck up`, each with a port of its own that nothing listens on."""
    options = (
        "--api-port",
        "--nats-port",
        "--postgres-port",
        "--ssh-port",
        "--tunnel-port",
        "--registry-port",
    )
    return [arg for option in options for arg in (option, str(free_port()))]


def with_port(ports: list[str], option: str, port: int) -> list[str]:
    return [str(port) if i > 0 and ports[i - 1] == option else arg for i, arg in enumerate(ports)]


@pytest.mark.slow
def test_up_again_without_port_options_listens_where_the_last_pool_did(
    newcomer: dict[str, str], shared_engine: dict[str, str]
) -> None:
    """Tried: `potluck up --detach` on a fresh state directory with every port option, `potluck
    down`, the machine's [policy] edited in its local.toml, then `potluck up --detach` there
    with none (README: "the next `ops/up` carries on where the last one stopped"); then the
    file broken by hand and `potluck up --detach` again.
    Must hold: the second pool listens on the first one's ports: the image registry's (every
    image pushed names it), NATS's and the gateway's (members' hostd.toml hold them) and the
    others; before, it took the defaults and those names pointed nowhere. A port given still
    wins, and is the one kept for the next start. The edited policy is the one its hostd runs
    with (before, each start wrote it over). The broken file is named (exit 1), left as it was,
    and nothing was started."""
    listed = ("allocator API", "SSH gateway", "NATS", "event log", "image registry")

    def addresses(said: str) -> dict[str, str]:
        return {
            name: line.split()[-1] for line in said.splitlines() for name in listed if line.startswith(name)
        }

    env = {**newcomer, **shared_engine}
    first = potluck("up", "--detach", *all_ports(), env=env, timeout=900)
    try:
        assert first.returncode == 0, first.stdout + first.stderr
    finally:
        down = potluck("down", env=newcomer, timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    # The machine's owner policy, edited between the two (README: its [policy] is kept).
    local = Path(newcomer["POTLUCK_HOME"]) / "pool" / "local.toml"
    config = tomllib.loads(local.read_text())
    edited = {"on_owner_busy": "ignore", "owner_busy_cpus": 1.7}
    local.write_text(tomli_w.dumps({**config, "policy": edited}))
    api = str(free_port())
    second = potluck("up", "--detach", "--api-port", api, env=env, timeout=900)
    try:
        assert second.returncode == 0, second.stdout + second.stderr
        before, after = addresses(first.stdout), addresses(second.stdout)
        assert len(before) == len(listed), first.stdout
        assert after == {**before, "allocator API": f"http://127.0.0.1:{api}"}, second.stdout
        assert tomllib.loads(local.read_text())["policy"] == edited
        policy = potluck("host", "policy", "--config", str(local), "--json", env=newcomer)
        assert policy.returncode == 0, policy.stderr
        assert json.loads(policy.stdout)["on_owner_busy"] == "ignore", policy.stdout
    finally:
        down = potluck("down", env=newcomer, timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    recorded = json.loads((Path(newcomer["POTLUCK_HOME"]) / "ports.json").read_text())
    assert recorded["api_port"] == int(api)
    # Broken by hand: named before anything starts, and left as it is for its member to mend.
    broken = local.read_text() + "\n[policy\n"
    local.write_text(broken)
    refused = potluck("up", "--detach", env=env, timeout=120)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"{local} is not valid TOML" in refused.stderr, refused.stderr
    assert local.read_text() == broken
    assert processes_mentioning(newcomer["POTLUCK_HOME"]) == []


def _server_pid(state: Path, program: str) -> int:
    """The PID of the one process of the pool in `state` that runs `program` (its first word's
    last part: Postgres' own backends name themselves otherwise)."""
    pids = [
        int(pid)
        for pid, line in (found.split(": ", 1) for found in processes_mentioning(str(state)))
        if line.split()[0].rsplit("/", 1)[-1] == program
    ]
    assert len(pids) == 1, processes_mentioning(str(state))
    return pids[0]


@pytest.mark.slow
def test_up_starts_again_the_nats_and_the_postgres_that_died(
    newcomer: dict[str, str], shared_engine: dict[str, str]
) -> None:
    """Tried: under `potluck up --detach`, its nats-server and then its Postgres are killed
    (SIGKILL), as an out-of-memory kill or a slip of an operator's hand would.
    Must hold: `up` says on its console that each died and is restarted (before: it watched
    only the services, said nothing, and a second `up` answered "already up" while every
    allocation hung), each comes back on its port, and the pool then serves a user's
    allocation from request to running."""
    env = {**newcomer, **shared_engine}
    started = potluck("up", "--detach", *all_ports(), env=env, timeout=900)
    state = Path(newcomer["POTLUCK_HOME"])
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        said = started.stdout.splitlines()
        token = next(line.split()[-1] for line in said if line.startswith("demo token"))
        api = next(line.split()[-1] for line in said if line.startswith("allocator API"))
        for name in ("nats-server", "postgres"):
            killed = _server_pid(state, name)
            os.kill(killed, signal.SIGKILL)
            deadline = time.monotonic() + 120
            while True:
                console = (state / "up.log").read_text(errors="replace")
                if f"{name} was killed by signal 9" in console and f"restarted {name}" in console:
                    break
                assert time.monotonic() < deadline, f"{name} not restarted:\n{console[-3000:]}"
                time.sleep(0.2)
            assert _server_pid(state, name) != killed
        logged_in = potluck("login", "--url", api, "--token", token, env=newcomer)
        assert logged_in.returncode == 0, logged_in.stderr
        created = potluck(
            "alloc", "create", "--cpus", "0.1", "--memory", "64M", "--image", "potluck-default:latest",
            "--wait", "--timeout", "120", "-q",
            env=newcomer, timeout=180,
        )  # fmt: skip
        assert created.returncode == 0, created.stdout + created.stderr
        alloc_id = created.stdout.strip()
        shown = potluck("alloc", "show", alloc_id, "--json", env=newcomer)
        assert json.loads(shown.stdout)["state"] == "running", shown.stdout
        released = potluck("alloc", "rm", alloc_id, env=newcomer)
        assert released.returncode == 0, released.stderr
        while _containers_named(shared_engine["DOCKER_HOST"], f"potluck-{alloc_id}"):
            assert time.monotonic() < deadline + 60, "the released allocation's container stayed"
            time.sleep(0.2)
    finally:
        down = potluck("down", env=newcomer, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert processes_mentioning(newcomer["POTLUCK_HOME"]) == []


def _containers_named(docker_url: str, name: str) -> list[str]:
    status, body = engine_request(docker_url, "GET", "/containers/json?all=1")
    assert status == 200, body[:300]
    return [c["Id"] for c in json.loads(body) if f"/{name}" in c.get("Names", [])]


def test_two_servers_given_one_port_are_named(newcomer: dict[str, str]) -> None:
    """Tried: `potluck up` (foreground and --detach) with --nats-port and --ssh-port given the
    --api-port's port, and --registry-port the --tunnel-port's. Must hold: exit 2 at once naming
    each option and its port, no traceback, nothing started for the state directory (it
    started Postgres, an engine, NATS and the services, and the allocator failed to bind half
    a minute later, as a traceback)."""
    ports = all_ports()
    api = int(ports[ports.index("--api-port") + 1])
    tunnel = int(ports[ports.index("--tunnel-port") + 1])
    ports = with_port(with_port(ports, "--nats-port", api), "--ssh-port", api)
    ports = with_port(ports, "--registry-port", tunnel)
    for extra in ([], ["--detach"]):
        began = time.monotonic()
        done = potluck("up", *extra, *ports, env=newcomer, timeout=60)
        assert done.returncode == 2, done.stdout + done.stderr
        said = " ".join(done.stderr.split())
        assert f"--api-port, --nats-port and --ssh-port are all {api}" in said, said
        assert f"--tunnel-port and --registry-port are both {tunnel}" in said, said
        assert "give them different ports" in said, said
        assert "Traceback" not in done.stderr
        assert time.monotonic() - began < 30, "refused before anything starts"
        assert processes_mentioning(newcomer["POTLUCK_HOME"]) == []
        assert not (Path(newcomer["POTLUCK_HOME"]) / "postgres").exists()


@pytest.mark.slow
def test_an_allocator_that_cannot_listen_is_named(
    newcomer: dict[str, str], shared_engine: dict[str, str]
) -> None:
    """Tried: `potluck up` with --api-port on a port a socket holds bound but not listening (so
    the check for listeners passes, as when another program takes the port while the pool
    starts). Must hold: exit 1 soon after the allocator exits, before the default image is
    published (a first publish sends ~120 MB), naming its log and why it stopped (the port), no
    traceback (it waited 30 s for the API, then raised an
    AssertionError with every service's log), and nothing left running."""
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # bound, never listening: nothing answers a connect
        port = holder.getsockname()[1]
        ports = with_port(all_ports(), "--api-port", port)
        done = potluck("up", *ports, env={**newcomer, **shared_engine}, timeout=900)
    assert done.returncode == 1, done.stdout + done.stderr
    said = " ".join(done.stderr.split())
    assert "error: the allocator stopped (exit code 1) before its API answered" in said, said
    assert f"cannot listen on 127.0.0.1:{port}" in said, said
    assert "allocator.log ends with" in said, said
    assert "\\x0a" not in done.stderr, "the log's lines are lines, not escaped line breaks"
    assert "Traceback" not in done.stderr
    assert "publishing" not in done.stdout + done.stderr, "named before the image is published"
    assert processes_mentioning(newcomer["POTLUCK_HOME"]) == []


@pytest.mark.slow
def test_ctrl_c_while_up_starts_stops_it_then(newcomer: dict[str, str]) -> None:
    """Tried: Ctrl-C (SIGINT) to a foreground `potluck up` as soon as it says it starts the
    Docker engine, long before the pool is ready. Must hold: it says it is stopping at once,
    stops within the step under way and the clean-up (it went on starting everything, printed
    the ready summary with "Ctrl-C stops the pool", and only then stopped), never prints the
    summary, and leaves nothing running; the event log is kept."""
    up = subprocess.Popen(
        [sys.executable, "-m", "potluck", "up", *all_ports()],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**newcomer, "COLUMNS": "200"},
    )
    assert up.stdout is not None
    console = []
    try:
        for line in up.stdout:
            console.append(line)
            if "Docker engine" in line:
                break
        up.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        rest, _ = up.communicate(timeout=120)
        took = time.monotonic() - interrupted
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    said = "".join(console) + rest
    assert "stopping: the step under way ends" in said, said
    assert "stopped before the pool was ready" in said, said
    assert "demo token" not in said, said
    assert "Ctrl-C stops the pool" not in said, said
    assert "Traceback" not in said, said
    # Loading the default image into a fresh engine is the longest step that can be under way.
    assert took < 60, (took, said)
    assert processes_mentioning(newcomer["POTLUCK_HOME"]) == []
    assert (Path(newcomer["POTLUCK_HOME"]) / "postgres" / "data" / "PG_VERSION").exists()


def _sigint_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_while_waiting_for_a_detached_up_stops_that_pool(newcomer: dict[str, str]) -> None:
    """Tried: Ctrl-C (SIGINT) to `potluck up --detach` while it waits for the pool it started in
    the background, once that pool says it starts the Docker engine. Must hold: exit 1 saying
    the pool that was starting stopped, and nothing started for the state directory is left
    running (it printed "Aborted!" while the pool, in a session of its own, came up anyway)."""
    state = Path(newcomer["POTLUCK_HOME"])
    up = subprocess.Popen(
        [sys.executable, "-m", "potluck", "up", "--detach", *all_ports()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=newcomer,
        # As a terminal's foreground command has it. A suite started as a background job
        # (`ops/test &`) inherits SIGINT ignored, and Python then leaves Ctrl-C ignored too.
        preexec_fn=_sigint_as_in_a_terminal,
    )
    try:
        deadline = time.monotonic() + 300
        # The pool's own Docker engine running, seen from its process (what up.log says may
        # reach the file later than it happens): loading the default image into it and starting
        # the services are still ahead, tens of seconds.
        while not any("dockerd" in line for line in processes_mentioning(str(state))):
            assert up.poll() is None, up.communicate()
            assert time.monotonic() < deadline, "the pool never got to its Docker engine"
            time.sleep(0.1)
        up.send_signal(signal.SIGINT)
        out, err = up.communicate(timeout=180)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        left = processes_mentioning(str(state))
        if left:  # without the fix the pool came up behind the person's back: stop it for them
            potluck("down", env=newcomer, timeout=180)
    assert up.returncode == 1, out + err
    assert "interrupted: the pool that was starting in the background stopped" in err, err
    assert "Aborted!" not in err, err
    assert "Traceback" not in err, err
    assert left == [], left


@pytest.mark.parametrize(
    "args",
    [
        ["alloc", "create", "--cpus", "x"],
        ["alloc", "create", "--quiet", "--json"],
        ["alloc", "ls", "--quiet", "--json"],
        ["alloc", "ls", "--state", "runing"],
        ["alloc", "rm"],
        ["alloc", "show"],
        ["host", "pause"],
        ["nope"],
        ["up", "--api-port", "0"],
        ["up", "--memory", "lots"],
    ],
)
def test_wrong_arguments_give_a_clear_error_and_a_non_zero_exit(
    newcomer: dict[str, str], args: list[str]
) -> None:
    done = potluck(*args, env=newcomer)
    assert done.returncode == 2
    assert "Error" in done.stderr or "error" in done.stderr


@pytest.mark.parametrize(
    ("tried", "wanted"),
    [
        (
            "status",
            ["`potluck ops status`", "`potluck host status --config hostd.toml`", "`potluck alloc ls`"],
        ),
        ("ps", ["`potluck alloc ls`", "`potluck job ls`"]),
        ("stop", ["`potluck down`", "`potluck alloc rm ID`"]),
    ],
)
def test_a_command_a_newcomer_tries_first_names_the_one_they_want(
    newcomer: dict[str, str], tried: str, wanted: list[str]
) -> None:
    """Tried: `potluck status` (and `ps`, `stop`), which are no commands, as the real process.
    Must hold: exit 2 as for any unknown command, and the error names the commands that do
    what was meant (it said only "No such command 'status'.")."""
    done = potluck(tried, env=newcomer)
    assert done.returncode == 2, done.stderr
    said = " ".join(done.stderr.split())
    assert f"No such command '{tried}'" in said, said
    for command in wanted:
        assert command in said, said


def test_an_event_log_that_does_not_answer_is_named_without_its_password(
    newcomer: dict[str, str], tmp_path: Path
) -> None:
    """Tried: POTLUCK_DATABASE_URL (as the operator's quick start exports it, with a password)
    naming a port where no Postgres listens, then every kind of operator command that opens the
    log (`ops hosts list`, `ops users add`, `ops replay`, `ops status`, `ops events show`, `ops
    archive`, `ops backup`, `ops restore`) and `potluck up`. Must hold: each exits 1 with one line
    naming the URL (its password as ***) and what to check; `up` says it would keep its log there
    and to unset the variable, and starts nothing (the ops commands and `up` came out as asyncpg's
    ConnectionRefusedError traceback; replay, status, events and archive said only "cannot reach
    the event log", with nothing on what to check)."""
    url = f"postgresql://potluck:hunter2@127.0.0.1:{free_port()}/potluck"
    env = {**newcomer, "POTLUCK_DATABASE_URL": url}
    shown = url.replace(":hunter2@", ":***@")
    dump = tmp_path / "pool.dump"
    dump.write_bytes(b"PGDMP")
    for args in (
        ("ops", "hosts", "list"),
        ("ops", "users", "add", "bob"),
        ("ops", "replay"),
        ("ops", "status"),
        ("ops", "events", "show", "user-bob"),
        ("ops", "archive", "--before", "2", "--dry-run"),
        ("ops", "backup", str(tmp_path / "new.dump")),
        ("ops", "restore", str(dump)),
    ):
        done = potluck(*args, env=env)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert f"error: cannot reach the event log at {shown}" in done.stderr, done.stderr
        assert "check --database-url (or POTLUCK_DATABASE_URL)" in done.stderr, done.stderr
        assert "hunter2" not in done.stderr
        assert "Traceback" not in done.stderr, done.stderr
    up = potluck("up", *all_ports(), env=env, timeout=300)
    assert up.returncode == 1, up.stdout + up.stderr
    said = " ".join(up.stderr.split())
    assert f"POTLUCK_DATABASE_URL names {shown}, which cannot be reached" in said, said
    assert "unset POTLUCK_DATABASE_URL" in said, said
    assert "hunter2" not in up.stderr
    assert "Traceback" not in up.stderr, up.stderr
    assert processes_mentioning(newcomer["POTLUCK_HOME"]) == []


@pytest.mark.parametrize("command", [["hostd"], ["host", "status"], ["host", "pause"]])
def test_a_member_command_without_its_configuration_says_where_one_comes_from(
    newcomer: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    """Tried: `potluck hostd` (and `host status`, `host pause`) with --config naming no file.
    Must hold: exit 2 naming the file and `potluck join TOKEN`, which writes one, and the
    README's hand-written example (it sent the member to `potluck hostd --help`, which holds
    no example); the README does hold it."""
    missing = tmp_path / "hostd.toml"
    done = potluck(*command, "--config", str(missing), env=newcomer)
    assert done.returncode == 2, done.stderr
    said = " ".join(done.stderr.split())
    assert f"{missing}: no such file; `potluck join TOKEN` writes it" in said, said
    assert "--help" not in said, said
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert "# hostd.toml (every field is described in services/hostd/config.py)" in readme


@pytest.mark.parametrize("command", [["hostd"], ["host", "status"], ["host", "policy"]])
def test_a_member_command_without_config_reads_the_one_join_wrote_here(
    newcomer: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    """Tried: a member command without --config, in a folder without hostd.toml, then (`host
    policy`, which reads the file alone) in one with it: `potluck join` writes ./hostd.toml
    unless told otherwise. Must hold: the first exits 2 naming hostd.toml and `potluck join
    TOKEN`, not click's "Missing option '--config'" (what every member command said before);
    the second reads that file."""
    env = {k: v for k, v in newcomer.items() if k != "POTLUCK_HOSTD_CONFIG"}

    def run_in(folder: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "potluck", *command],
            cwd=folder,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    done = run_in(tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    said = " ".join(done.stderr.split())
    assert "hostd.toml: no such file; `potluck join TOKEN` writes it" in said, said
    if command != ["host", "policy"]:
        return
    joined = tmp_path / "joined"
    joined.mkdir()
    (joined / "hostd.toml").write_text(
        'host_id = "h-3f2a9c1e7b40"\ncredentials_file = "h.creds"\nstate_dir = "state"\n'
        '[donate]\ncpus = 1\nmemory = "1G"\ndisk = "1G"\n[policy]\nthrottle_to = 0.5\n'
    )
    policy = run_in(joined)
    assert policy.returncode == 0, policy.stderr
    assert "throttle_to = 0.5" in policy.stdout, policy.stdout


def test_a_pools_state_directory_given_for_its_gateways_names_the_gateways(
    newcomer: dict[str, str], tmp_path: Path
) -> None:
    """Tried: an operator of a `potluck up` pool writing hostd.toml by hand (README: for a machine
    enrolled with --credentials-out) asks `potluck sshgateway --print-client-key --state-dir`
    with the pool's state directory (POTLUCK_HOME), and gives it to `ops hosts enroll --gateway
    ADDRESS=DIR`. Must hold: both refuse it (exit 1, exit 2) and name the folder where that
    pool's gateway keeps its keys (before, only that the directory holds no key), and that folder
    then prints the key, the one its refusal named."""
    state = Path(newcomer["POTLUCK_HOME"])
    gateway = pool_files(state).gateway_state_dir
    key = client_public_key(GatewaySettings(state_dir=gateway), make=True)

    printed = potluck("sshgateway", "--print-client-key", "--state-dir", str(state), env=newcomer)
    assert printed.returncode == 1, printed.stdout + printed.stderr
    said = " ".join(printed.stderr.split())
    assert f"{state} is a `potluck up` pool's state directory: its gateway's is {gateway}" in said, said
    pinned = potluck("ops", "hosts", "enroll", "desk", "--gateway", f"127.0.0.1:2223={state}", env=newcomer)
    assert pinned.returncode == 2, pinned.stdout + pinned.stderr
    said = " ".join(pinned.stderr.split())
    assert f"its gateway's is {gateway}" in said, said

    right = potluck("sshgateway", "--print-client-key", "--state-dir", str(gateway), env=newcomer)
    assert right.returncode == 0, right.stderr
    assert right.stdout.strip() == key


def test_user_commands_without_login_say_what_to_do(newcomer: dict[str, str]) -> None:
    done = potluck("alloc", "ls", env=newcomer)
    assert done.returncode == 2
    assert "potluck login" in done.stderr


def test_a_url_in_potluck_url_without_its_scheme_is_named(newcomer: dict[str, str]) -> None:
    """Tried: `potluck alloc ls` with POTLUCK_URL=localhost:8080 (no http://) and a token.
    Must hold: exit 2 naming the variable and the form to give, no traceback (aiohttp's
    InvalidUrlClientError came out as one)."""
    done = potluck("alloc", "ls", env={**newcomer, "POTLUCK_URL": "localhost:8080", "POTLUCK_TOKEN": "pl_x"})
    assert done.returncode == 2, done.stderr
    assert "POTLUCK_URL: 'localhost:8080' is not an http:// or https:// address" in done.stderr
    assert "Traceback" not in done.stderr


#: Run in a process of its own: the CLI's group callbacks configure logging (structlog caches
#: its loggers), which must not leak into the tests that run after this one in pytest's process.
HELP_WALK = """
import json, sys
from click import Context, Group
from click.testing import CliRunner
from potluck.cli import main

def walk(group, prefix):
    # list_commands/get_command, as click's own help does: commands attached on first need
    # (potluck.lazy_group) are not in `group.commands` until then.
    found = [prefix]
    context = Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        found += walk(command, [*prefix, name]) if isinstance(command, Group) else [[*prefix, name]]
    return found

runner = CliRunner()
results = []
for path in walk(main, []):
    result = runner.invoke(main, [*path, "--help"], prog_name="potluck")
    results.append({"path": path, "code": result.exit_code, "output": result.output})
json.dump(results, sys.stdout)
"""


def test_every_command_has_help(newcomer: dict[str, str]) -> None:
    """Tried: `--help` on every command and group of the CLI. Must hold: each exits 0 with its
    usage, and one whose log defaults to a running pool's names that pool's NATS as its NATS
    default (README: every `potluck ops` command takes the pool's log, NATS and seed). The
    top-level one runs as the real `python -m potluck`; the others through click's runner in
    one process (a subprocess each took over a minute of the suite's budget, and `--help`
    runs none of a command's own code)."""
    done = potluck("--help", env=newcomer)
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout
    walked = subprocess.run(
        [sys.executable, "-c", HELP_WALK],
        capture_output=True,
        text=True,
        env=newcomer,
        timeout=120,
        check=False,
    )
    assert walked.returncode == 0, walked.stderr
    results = json.loads(walked.stdout)
    assert len(results) > 40, results  # the walk found the whole CLI, not only the top
    for result in results:
        assert result["code"] == 0, result
        assert "Usage: potluck" in result["output"], result
        # A command that takes a running pool's log by default takes its NATS too: its help
        # must not name another default (`ops replay --help` showed nats://127.0.0.1:4222).
        said = " ".join(result["output"].split())
        if "default: the running `potluck up` pool's" in said and "--nats-url" in said:
            assert "[default: nats://127.0.0.1:4222]" not in said, result


@pytest.mark.parametrize("command", [["alloc", "create"], ["run", "--tasks", "1"]])
def test_ssh_key_must_be_an_existing_public_key(
    newcomer: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    """Tried: `--ssh-key` naming a file that does not exist, and the private key of a pair made
    by the real ssh-keygen (the `.pub` left off). Must hold: exit 2 before anything is asked of
    the allocator (no login needed), the missing file told how to make one, the private key
    named as such and never read into a request (it was sent, and the allocator's 400 quoted
    its first bytes back)."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    shape = ["--cpus", "1", "--memory", "64M", "--image", "potluck-default:latest"]
    missing = potluck(*command, *shape, "--ssh-key", str(tmp_path / "none.pub"), "--", "true", env=newcomer)
    assert missing.returncode == 2, missing.stderr
    assert "no such file; `ssh-keygen -t ed25519` makes" in missing.stderr, missing.stderr
    private = potluck(*command, *shape, "--ssh-key", str(key), "--", "true", env=newcomer)
    assert private.returncode == 2, private.stderr
    assert f"{key} is a private key, which stays on this machine: give its public half ({key}.pub)" in (
        " ".join(private.stderr.split())
    ), private.stderr
    assert "BEGIN OPENSSH" not in private.stderr
    assert "not logged in" not in private.stderr, "refused before any request"


@pytest.mark.slow
def test_up_says_why_its_hostd_did_not_come_online(
    newcomer: dict[str, str], shared_engine: dict[str, str]
) -> None:
    """Tried: `potluck up --detach --memory 100T`, a donation past any machine this runs on
    (a size, so it passes the options' check; hostd refuses it at start). Must hold: exit 1
    with hostd's own reason in the error (it said only "did not come online; see the logs in
    the state directory"), saying hostd stopped and its exit code (`up` failed only after
    waiting a minute for it), naming the log, and nothing started for the state directory is
    left running."""
    ports = [
        *("--api-port", str(free_port()), "--nats-port", str(free_port())),
        *("--postgres-port", str(free_port()), "--ssh-port", str(free_port())),
        *("--tunnel-port", str(free_port()), "--registry-port", str(free_port())),
    ]
    env = {**newcomer, **shared_engine}
    done = potluck("up", "--detach", "--memory", "100T", *ports, env=env, timeout=900)
    assert done.returncode == 1, done.stdout + done.stderr
    # Said as soon as hostd stopped (it waited out its minute for a hostd long gone before).
    assert "the local hostd did not come online (it stopped, exit code 3): " in done.stderr, done.stderr
    assert "donate.memory: 100T is more than" in done.stderr, done.stderr
    assert "hostd-local.log" in done.stderr, done.stderr
    assert processes_mentioning(newcomer["POTLUCK_HOME"]) == []


def _log_rows(database_url: str) -> list[tuple[object, ...]]:
    """Every event of the log, hot and archived, in position order, as the database has it."""

    async def read() -> list[tuple[object, ...]]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT * FROM all_events ORDER BY position")
        finally:
            await conn.close()
        return [tuple(row.values()) for row in rows]

    return asyncio.run(read())


def _archived(database_url: str) -> int:
    """How many of the log's events are in the archive table."""

    async def read() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM events_archive"))
        finally:
            await conn.close()

    return asyncio.run(read())


T = TypeVar("T")


async def _on_log(database_url: str, work: Callable[[EventStore], Awaitable[T]]) -> T:
    store = await EventStore.open(database_url, max_size=2)
    try:
        return await work(store)
    finally:
        await store.close()


@pytest.mark.slow
def test_backup_restore_then_up_on_the_restored_log(
    newcomer: dict[str, str], tmp_path: Path, postgres_url: str, shared_engine: dict[str, str]
) -> None:
    """README, the operator's backup: `potluck ops backup` of a log, `ops restore` into an
    empty database, then `potluck up` with POTLUCK_DATABASE_URL naming it, on a fresh state
    directory (the old one lost with the machine). The log holds the old pool's own machine,
    enrolled as `local` as its `potluck up` did.
    Part of the log is archived first (`ops archive`).
    Tried: also a backup onto an existing file, a restore into a database that holds a log and
    one into a database not made yet (it was said to be unreachable, pointing at another log);
    a backup into a directory that does not exist (it crashed with a traceback); and one beside a
    world-readable `pool.dump.partial` left there (pg_dump wrote through it, and the dump kept
    its mode 0644).
    Must hold: the file is private (0600) and the stray file is left as it was; the others are
    refused (exit 1) saying what to do;
    the restored log holds the very same events (`all_events`), as many of them archived; `up` starts
    on it (it crashed with WrongExpectedVersion on the demo user, whose token was in the lost
    state directory) and its demo token works; the pool's replay sees the restored users; the
    old `local` is revoked by `potluck up`, the log saying why, and `up --detach` says so on its
    terminal (before, only in up.log) and in up.log, so that one machine only holds the name
    (before, a second `local` was enrolled beside it, a name `potluck join` is refused); `down`
    leaves nothing running."""
    source = asyncio.run(_fresh_database(postgres_url, f"backup_src_{os.getpid()}"))
    target = asyncio.run(_fresh_database(postgres_url, f"backup_dst_{os.getpid()}"))
    operator = {k: v for k, v in newcomer.items() if k not in OPERATOR_SETTINGS}
    on_source = {**operator, "POTLUCK_DATABASE_URL": source}
    for args in (("users", "add", "demo"), ("users", "add", "bob"), ("users", "rotate-token", "bob")):
        done = potluck("ops", *args, env=on_source)
        assert done.returncode == 0, done.stderr
    old_local, _ = asyncio.run(_on_log(source, lambda store: enroll_host(store, LOCAL)))
    # Part of the log is archived (a long-running pool's is), so the backup must carry both tables.
    moved = potluck("ops", "archive", "--before", "5", "--keep-recent", "0s", "-q", env=on_source)
    assert moved.returncode == 0, moved.stderr
    assert _archived(source) > 0, moved.stdout
    dump = tmp_path / "pool.dump"
    nowhere = potluck("ops", "backup", str(tmp_path / "no-such-dir" / "pool.dump"), env=on_source)
    assert nowhere.returncode == 1, nowhere.stderr
    assert f"{tmp_path / 'no-such-dir'} is not a directory: create it" in nowhere.stderr, nowhere.stderr
    assert "Traceback" not in nowhere.stderr
    stray = tmp_path / "pool.dump.partial"
    stray.write_text("someone else's\n")
    stray.chmod(0o644)
    backed = potluck("ops", "backup", str(dump), env=on_source)
    assert backed.returncode == 0, backed.stderr
    assert f"backed up the event log through position 4 (4 events) to {dump}" in backed.stdout
    assert dump.stat().st_mode & 0o777 == 0o600
    assert (stray.read_text(), stray.stat().st_mode & 0o777) == ("someone else's\n", 0o644)
    assert sorted(p.name for p in tmp_path.iterdir() if "dump" in p.name) == [
        "pool.dump",
        "pool.dump.partial",
    ]
    again = potluck("ops", "backup", str(dump), env=on_source)
    assert again.returncode == 1
    assert "exists: remove it or name another file" in again.stderr, again.stderr
    over = potluck("ops", "restore", str(dump), env=on_source)
    assert over.returncode == 1
    assert "already holds an event log (head 4): restore into an empty database" in over.stderr

    missing = target.rsplit("/", 1)[0] + "/not_made_yet"
    early = potluck("ops", "restore", str(dump), "--database-url", missing, env=operator)
    assert early.returncode == 1
    assert "the database 'not_made_yet' does not exist on that server: create it first" in early.stderr
    restored = potluck("ops", "restore", str(dump), "--database-url", target, env=operator)
    assert restored.returncode == 0, restored.stderr
    assert "restored the event log through position 4 (4 events)" in restored.stdout
    assert _log_rows(target) == _log_rows(source)
    assert _archived(target) == _archived(source)

    up_env = {**operator, **shared_engine, "POTLUCK_DATABASE_URL": target}
    started = potluck("up", "--detach", *all_ports(), env=up_env, timeout=900)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        said = started.stdout.splitlines()
        token = next(line.split()[-1] for line in said if line.startswith("demo token"))
        api = next(line.split()[-1] for line in said if line.startswith("allocator API"))
        logged_in = potluck("login", "--url", api, "--token", token, env=operator)
        assert logged_in.returncode == 0, logged_in.stderr
        replayed = potluck("ops", "replay", env=operator)
        assert replayed.returncode == 0, replayed.stderr
        assert "2 users" in replayed.stdout, replayed.stdout
        console = (Path(newcomer["POTLUCK_HOME"]) / "up.log").read_text(errors="replace")
        assert f"revoked {old_local}, the log's earlier `local` machine" in console, console
        assert f"note: revoked {old_local}, the log's earlier `local` machine" in started.stderr, (
            started.stderr
        )
        new_local = next(line.split()[-1] for line in said if line.startswith("local host"))
        hosts = asyncio.run(_on_log(target, current_hosts)).hosts
        assert hosts[old_local].admin == "revoked", hosts[old_local]
        holding = [h.host_id for h in hosts.values() if h.name == LOCAL and not h.gone]
        assert holding == [new_local] != [old_local], hosts
        revoked = asyncio.run(_on_log(target, lambda store: store.read_stream(host_stream(old_local))))
        assert [(r.type, r.data["by"], r.data["reason"]) for r in revoked[-1:]] == [
            ("HostRevoked", REPLACED_BY, LOST_LOCAL)
        ]
    finally:
        down = potluck("down", env=operator, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert processes_mentioning(newcomer["POTLUCK_HOME"]) == []


@pytest.mark.slow
def test_up_on_a_log_with_a_password_keeps_it_and_the_demo_token_from_other_users(
    newcomer: dict[str, str], postgres_url: str, shared_engine: dict[str, str]
) -> None:
    """Tried: `potluck up --detach` with POTLUCK_DATABASE_URL naming a database with a password
    in its URL (the operator's quick start exports one), then what any other local user could
    read: every process's command line (`ps`, /proc/PID/cmdline) and the state directory's files.
    Must hold: no command line holds the password (the registry, allocator and gateway were
    started with `--database-url URL`); up.json (the demo token, the URL), up.log (the console,
    which prints the demo token) and demo.token are 0600 (up.json and up.log were 0644); the
    console's `event log` line shows the URL with its password as ***."""
    url = asyncio.run(_fresh_database(postgres_url, f"secret_{os.getpid()}"))
    parts = urlsplit(url)
    password = parts.password
    if password is None:  # the test server trusts loopback: any password is accepted
        password = "hunter2-" + secrets.token_hex(4)
        url = urlunsplit(parts._replace(netloc=f"{parts.username}:{password}@{parts.hostname}:{parts.port}"))
    env = {**newcomer, **shared_engine, "POTLUCK_DATABASE_URL": url}
    state = Path(newcomer["POTLUCK_HOME"])
    started = potluck("up", "--detach", *all_ports(), env=env, timeout=900)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert processes_mentioning(password) == []
        assert processes_mentioning(str(state)), "the pool's processes are not running"
        for name in ("up.json", "up.log", "demo.token"):
            assert (state / name).stat().st_mode & 0o077 == 0, name
        [event_log] = [line for line in started.stdout.splitlines() if line.startswith("event log")]
        assert event_log.split()[-1] == url.replace(f":{password}@", ":***@")
        assert password not in started.stdout + (state / "up.log").read_text(errors="replace")
    finally:
        down = potluck("down", env=env, timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
