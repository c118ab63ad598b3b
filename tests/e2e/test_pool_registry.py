"""The pool's image registry: real docker-registry, real allocator tokens, two real engines.

Users push into their own namespace with their Potluck token, through the
registry's token authentication; nobody reads or writes another user's images,
and wrong or missing credentials get a clear refusal.
"""

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import docker
import jwt

from potluck.allocator.pool_registry import MAX_REPOSITORIES
from potluck.contracts.registry import TOKEN_PATH
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.reaper import start_time
from potluck.up_state import PID_FILE, READY_FILE, Running
from tests.fixtures.pool import Pool


def _push(engine: DockerEngine, reference: str, auth: dict[str, str] | None) -> list[dict[str, Any]]:
    client = docker.DockerClient(base_url=engine.url)
    try:
        repository, _, tag = reference.rpartition(":")
        return list(client.images.push(repository, tag, auth_config=auth, stream=True, decode=True))
    finally:
        client.close()


def _pull_error(engine: DockerEngine, reference: str, auth: dict[str, str] | None) -> str | None:
    client = docker.DockerClient(base_url=engine.url)
    try:
        client.images.pull(reference, auth_config=auth)
    except docker.errors.APIError as exc:
        return str(exc)
    finally:
        client.close()
    return None


def _tag(engine: DockerEngine, image: str, reference: str) -> None:
    client = docker.DockerClient(base_url=engine.url)
    try:
        client.images.get(image).tag(reference)
    finally:
        client.close()


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(user, password)}


def _errors(lines: list[dict[str, Any]]) -> list[str]:
    return [
        str(line.get("error") or line.get("errorDetail"))
        for line in lines
        if "error" in line or "errorDetail" in line
    ]


async def test_users_push_and_pull_only_in_their_own_namespace(
    pool: Pool, docker_engines: list[DockerEngine], test_image: str
) -> None:
    await pool.wait_api()
    registry = await asyncio.to_thread(pool.start_image_registry)
    alice = await pool.add_user("alice")
    bob = await pool.add_user("bob")
    laptop_a, laptop_b = docker_engines
    mine = f"{registry.address}/alice/tiny:1"
    await asyncio.to_thread(_tag, laptop_a, test_image, mine)

    # No credentials, a wrong token, or another user's namespace: refused, nothing stored.
    assert _errors(await asyncio.to_thread(_push, laptop_a, mine, None)), "an anonymous push went through"
    wrong = {"username": "alice", "password": "pl_not-a-token"}
    assert _errors(await asyncio.to_thread(_push, laptop_a, mine, wrong)), "a wrong token pushed"
    as_bob = {"username": "bob", "password": bob}
    assert _errors(await asyncio.to_thread(_push, laptop_a, mine, as_bob)), (
        "bob pushed into alice's namespace"
    )

    # Alice's own push works, and she can pull it on the other laptop.
    as_alice = {"username": "alice", "password": alice}
    lines = await asyncio.to_thread(_push, laptop_a, mine, as_alice)
    assert not _errors(lines), lines[-5:]
    assert any(str(line.get("aux", {}).get("Digest", "")).startswith("sha256:") for line in lines), lines[-5:]
    assert await asyncio.to_thread(_pull_error, laptop_b, mine, as_alice) is None, pool.logs()

    # Bob cannot read it, with his token or without one.
    assert await asyncio.to_thread(_pull_error, laptop_b, mine, as_bob) is not None
    assert await asyncio.to_thread(_pull_error, laptop_b, mine, None) is not None


async def test_token_endpoint_refuses_clearly_and_grants_only_the_own_namespace(pool: Pool) -> None:
    await pool.wait_api()
    alice = await pool.add_user("alice")
    url = pool.api + TOKEN_PATH
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Basic")
            assert "token" in (await response.json())["error"]["message"]
        async with http.get(url, headers=_basic("alice", "pl_wrong")) as response:
            assert response.status == 401
        for scope in ["nonsense", "repository:Alice/x:pull", "repository:a/b", "repository:../x:pull"]:
            async with http.get(url, params={"scope": scope}, headers=_basic("alice", alice)) as response:
                assert response.status == 400, (scope, await response.text())
                assert (await response.json())["error"]["field"] == "scope"
        async with http.get(url, params={"service": "elsewhere"}, headers=_basic("alice", alice)) as response:
            assert response.status == 400
        scopes = [
            ("scope", "repository:alice/sim:pull,push"),
            ("scope", "repository:bob/sim:pull,push"),
            ("scope", "registry:catalog:*"),
        ]
        async with http.get(url, params=scopes, headers=_basic("x", alice)) as response:
            assert response.status == 200
            body = await response.json()
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["sub"] == "alice"
    assert claims["access"] == [{"type": "repository", "name": "alice/sim", "actions": ["pull", "push"]}]


def _potluck(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "potluck", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )


async def test_potluck_image_push_and_ls_from_the_users_own_engine(
    pool: Pool, docker_engines: list[DockerEngine], test_image: str, tmp_path: Path
) -> None:
    """`potluck image push` of a local image lands in the user's namespace; `ls` shows it to that
    user only; a missing image and no login each fail with a clear message and exit code 2."""
    await pool.wait_api()
    registry = await asyncio.to_thread(pool.start_image_registry)
    dana = await pool.add_user("dana")
    erin = await pool.add_user("erin")
    laptop = docker_engines[0]
    await asyncio.to_thread(_tag, laptop, test_image, "example.org/team/sim:7")
    base = {"DOCKER_HOST": laptop.url, "POTLUCK_URL": pool.api, "POTLUCK_CONFIG": str(tmp_path / "none.toml")}
    as_dana = {**base, "POTLUCK_TOKEN": dana}

    pushed = await asyncio.to_thread(
        _potluck, "image", "push", "example.org/team/sim:7", "--json", env=as_dana
    )
    assert pushed.returncode == 0, pushed.stderr + pool.logs()
    result = json.loads(pushed.stdout)
    assert result["image"] == f"{registry.address}/dana/sim:7"
    assert result["digest"].startswith("sha256:")

    listed = await asyncio.to_thread(_potluck, "image", "ls", "--json", env=as_dana)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["images"] == [{"name": f"{registry.address}/dana/sim", "tags": ["7"]}]
    others = await asyncio.to_thread(_potluck, "image", "ls", "--json", env={**base, "POTLUCK_TOKEN": erin})
    assert json.loads(others.stdout)["images"] == []

    missing = await asyncio.to_thread(_potluck, "image", "push", "no-such-image:1", env=as_dana)
    assert missing.returncode == 2
    assert "has no image no-such-image:1" in missing.stderr
    anonymous = await asyncio.to_thread(_potluck, "image", "push", "example.org/team/sim:7", env=base)
    assert anonymous.returncode == 2
    assert "not logged in" in anonymous.stderr
    # What to do, without a token on the command line (`potluck login` warns against that).
    assert "run `potluck login --url URL` (it asks for the token" in anonymous.stderr, anonymous.stderr
    assert "--token" not in anonymous.stderr, anonymous.stderr

    # Erin cannot run Dana's image: refused at once, naming the field, before any placement.
    body = {"cpus": 0.1, "memory": "64M", "image": result["image"], "command": ["true"]}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            pool.api + "/v1/allocations", json=body, headers={"Authorization": f"Bearer {erin}"}
        ) as response,
    ):
        assert response.status == 403, await response.text()
        refusal = (await response.json())["error"]
    assert refusal["field"] == "image"
    assert f"{registry.address}/erin/" in refusal["message"]


def _as_up_pool(state_dir: Path, pool: Pool, engine: DockerEngine, registry: str) -> None:
    """Write what a running `potluck up` leaves in its state directory (up_state.py: its PID and
    start time, its addresses), naming `engine` as the pool's own Docker engine: the PID is this
    test process's, which runs as long as the test does."""
    pid = os.getpid()
    state_dir.mkdir(parents=True)
    (state_dir / PID_FILE).write_text(f"{pid} {start_time(pid)}")
    ready = Running(
        pid=pid,
        api=pool.api,
        nats="",
        database=pool.database_url,
        docker=engine.url,
        ssh="",
        image="",
        token="",
        host_id="",
        logs="",
        registry=registry,
    )
    (state_dir / READY_FILE).write_text(json.dumps(dataclasses.asdict(ready)))


async def test_potluck_image_push_finds_the_up_pools_own_engine_without_docker_host(
    pool: Pool, docker_engines: list[DockerEngine], test_image: str, tmp_path: Path
) -> None:
    """Tried: `potluck image push` with DOCKER_HOST not set, on a machine where a `potluck up`
    pool runs its own Docker engine (its state directory names a real engine holding the image)
    and the default socket does not answer (none here) or lacks the image; with --json too; then
    with DOCKER_HOST naming a socket where nothing answers. Must hold: the push goes from the
    pool's engine (before, it failed, exit 3, telling the user to export DOCKER_HOST) and its
    output names that engine; the image is in the user's namespace; a DOCKER_HOST that is set
    is still the engine used (exit 3, naming the pool's engine as a hint), never overridden."""
    await pool.wait_api()
    registry = await asyncio.to_thread(pool.start_image_registry)
    fay = await pool.add_user("fay")
    engine = docker_engines[0]
    await asyncio.to_thread(_tag, engine, test_image, "leftovers-sim:3")
    state_dir = tmp_path / "up"
    _as_up_pool(state_dir, pool, engine, registry.address)
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    env.update(
        POTLUCK_HOME=str(state_dir),
        POTLUCK_URL=pool.api,
        POTLUCK_TOKEN=fay,
        POTLUCK_CONFIG=str(tmp_path / "none.toml"),
    )

    def potluck(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "potluck", *args],
            capture_output=True,
            text=True,
            env={**env, **extra},
            timeout=120,
            check=False,
        )

    pushed = await asyncio.to_thread(potluck, "image", "push", "leftovers-sim:3")
    assert pushed.returncode == 0, pushed.stderr + pool.logs()
    said = " ".join(pushed.stdout.split())
    assert f"pushed {registry.address}/fay/leftovers-sim:3 (sha256:" in said, said
    assert f"from the `potluck up` pool's Docker engine at {engine.url} (DOCKER_HOST is not set" in said, said
    as_json = await asyncio.to_thread(potluck, "image", "push", "leftovers-sim:3", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["engine"] == engine.url
    listed = await asyncio.to_thread(potluck, "image", "ls", "--json")
    assert json.loads(listed.stdout)["images"] == [
        {"name": f"{registry.address}/fay/leftovers-sim", "tags": ["3"]}
    ]

    nowhere = f"unix://{tmp_path}/no-docker.sock"
    exported = await asyncio.to_thread(potluck, "image", "push", "leftovers-sim:3", DOCKER_HOST=nowhere)
    assert exported.returncode == 3, exported.stderr
    assert f"export DOCKER_HOST={engine.url}" in exported.stderr, exported.stderr


async def test_a_users_images_are_listed_however_many_repositories_sort_before_theirs(pool: Pool) -> None:
    """Tried: a pool registry holding 10,050 repositories whose names sort before zoe's (others'
    namespaces, `a00000/x` ...), and zoe's own `zoe/sim`; zoe asks GET /v1/images.
    The repositories are made as directories in the registry's storage, where Distribution's
    catalog finds them (10,050 pushes would take minutes), and the registry serves them as usual.
    Must hold: zoe's listing holds her repository, and none of the others' (it read the catalog
    from its start and stopped after 10,000 names, so she was shown none of hers)."""
    await pool.wait_api()
    registry = await asyncio.to_thread(pool.start_image_registry)
    zoe = await pool.add_user("zoe")
    repositories = registry.workdir / "data" / "docker" / "registry" / "v2" / "repositories"

    def make_repositories() -> None:
        for i in range(MAX_REPOSITORIES + 50):
            (repositories / f"a{i:05}" / "x" / "_layers").mkdir(parents=True)
        (repositories / "zoe" / "sim" / "_layers").mkdir(parents=True)

    await asyncio.to_thread(make_repositories)
    async with (
        aiohttp.ClientSession() as http,
        http.get(pool.api + "/v1/images", headers={"Authorization": f"Bearer {zoe}"}) as response,
    ):
        body = await response.json()
    assert response.status == 200, body
    assert [image["name"] for image in body["images"]] == [f"{registry.address}/zoe/sim"]
