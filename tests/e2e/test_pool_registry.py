"""The pool's image registry: real docker-registry, real allocator tokens, two real engines.

Users push into their own namespace with their Potluck token, through the
registry's token authentication; nobody reads or writes another user's images,
and wrong or missing credentials get a clear refusal.
"""

import asyncio
from typing import Any

import aiohttp
import docker
import jwt

from potluck.contracts.registry import TOKEN_PATH
from potluck.localstack.docker_engine import DockerEngine
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
