"""A missing image is pulled, not a failure: real registry, real allocator and hostd, two engines.

Engine A is the user's laptop, engine B the member's: the user's image is built and pushed from A
and removed there, so it is in the pool registry only. Before this change hostd failed such an
allocation at once (`image_not_available`: it never pulled).
"""

import asyncio
import contextlib
import ipaddress
import json
import re
import socket
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest

from potluck.contracts.messages import ImageToken, ImageTokenRequest, Reply
from potluck.contracts.registry_locality import literally_local
from potluck.contracts.subjects import IMAGE_TOKEN
from potluck.hostd.shared_details import MEMBERS_ADDRESS
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.ports import free_port
from potluck.localstack.process import ChildProcess, start_listening
from potluck.localstack.registry_server import registry_binary, registry_config
from potluck.localstack.test_image import DEFAULT_TAG
from tests.e2e.allocator_api import create_on
from tests.e2e.conftest import wait_for_status
from tests.fixtures.images import build_and_push, get_allocation, has_image
from tests.fixtures.pool import Pool


def _pull_error(engine: DockerEngine, reference: str, token: str) -> str | None:
    client = docker.DockerClient(base_url=engine.url)
    try:
        client.images.pull(reference, auth_config={"registrytoken": token})
    except docker.errors.APIError as exc:
        return str(exc)
    finally:
        client.close()
    return None


async def _failed_once(
    http: aiohttp.ClientSession, pool: Pool, token: str, alloc_id: str, saying: str
) -> dict[str, Any]:
    """The allocation once it failed: image_pull_failed after one try (not retried), saying so."""
    failed: dict[str, Any] = await get_allocation(http, pool.api, token, alloc_id, "?wait=failed&timeout=60")
    assert failed["state"] == "failed", (failed, pool.logs(80))
    assert failed["reason"] == "image_pull_failed"
    assert saying in failed["detail"], failed["detail"]
    assert "(tried once)" in failed["detail"], failed["detail"]
    return failed


async def test_a_pushed_image_is_pulled_by_a_host_that_never_saw_it_and_a_dead_registry_fails_clearly(
    pool: Pool, docker_engines: list[DockerEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tried: alice pushes her own image; an allocation of it is placed on a laptop that never
    had it; then hosts ask for tokens they should not get; then the registry stops and another
    image of hers is asked for. Must hold: the first allocation runs after `pulling` was logged,
    the host pulled with a token the allocator scoped to that one repository; a host gets no
    token for an allocation placed elsewhere nor for another repository; with the registry down
    the allocation shows `pulling` with progress, then fails with `image_pull_failed` and a
    detail naming the image and the registry, its capacity freed and nothing of it left on the
    engine; a name that is no image reference is a 400 naming the field."""
    laptop_a, laptop_b = docker_engines
    await pool.wait_api()
    registry = await asyncio.to_thread(pool.start_image_registry)
    alice = await pool.add_user("alice")
    await pool.add_user("bob")
    own, second = f"{registry.address}/alice/own:1", f"{registry.address}/alice/own:2"
    await asyncio.to_thread(build_and_push, laptop_a, [own, second], alice)
    big = f"{registry.address}/alice/big:1"  # 80 MB that do not compress, for a 64 MB disk
    fill = "head -c 83886080 /dev/urandom > /big"
    await asyncio.to_thread(build_and_push, laptop_a, [big], alice, layer=fill)
    assert not await asyncio.to_thread(has_image, laptop_a, own)
    assert not await asyncio.to_thread(has_image, laptop_b, own)

    # Short retries for the registry-down half: two attempts, two seconds apart.
    monkeypatch.setenv("POTLUCK_HOSTD_PULL_ATTEMPTS", "2")
    monkeypatch.setenv("POTLUCK_HOSTD_PULL_BACKOFF_S", "2")
    host = await pool.enroll("laptop-b")
    pool.write_config(host, laptop_b, allowed_images=[DEFAULT_TAG, f"{registry.address}/alice/*:*"])
    pool.start_hostd(host)
    await pool.wait_for_host(host.host_id, "active")
    stranger = await pool.enroll("laptop-x")  # enrolled, no hostd: only its NATS identity is used
    small = await pool.enroll("laptop-small")  # donates the least disk there is: 64 MB
    pool.write_config(
        small,
        laptop_a,
        allowed_images=[f"{registry.address}/alice/*:*"],
        donate={"cpus": 1, "memory": "1G", "disk": "64M"},
    )
    pool.start_hostd(small)
    await pool.wait_for_host(small.host_id, "active")

    async with aiohttp.ClientSession() as http:
        # Not a reference at all: refused before anything is placed, naming the field.
        headers = {"Authorization": f"Bearer {alice}"}
        bad = {"cpus": 0.2, "memory": "64M", "image": "alice//own:1"}
        async with http.post(f"{pool.api}/v1/allocations", json=bad, headers=headers) as response:
            assert response.status == 400, await response.text()
            assert (await response.json())["error"]["field"] == "image"

        created = await create_on(http, pool.api, alice, own)
        running = await get_allocation(http, pool.api, alice, created["id"], "?wait=running&timeout=60")
        assert running["state"] == "running", (running, pool.logs(80))
        assert running["host_id"] == host.host_id
        history = await get_allocation(http, pool.api, alice, created["id"], "/events")
        types = [entry["type"] for entry in history["events"]]
        assert types.index("AllocationPulling") < types.index("AllocationRunning"), types
        assert await asyncio.to_thread(has_image, laptop_b, own)

        # Tokens: the host of the allocation gets one for its repository, pull only; a host it
        # is not placed on gets none; the right host gets none for another repository.
        async def ask(as_host: Any, alloc_id: str, image: str) -> Reply:
            nc = await pool.client(as_host)
            try:
                request = ImageTokenRequest(alloc_id=alloc_id, image=image)
                msg = await nc.request(
                    f"{IMAGE_TOKEN}.{as_host.host_id}", request.model_dump_json().encode(), timeout=5
                )
                return Reply.model_validate_json(msg.data)
            finally:
                await nc.close()

        granted = await ask(host, created["id"], own)
        assert granted.ok, granted
        token = ImageToken.model_validate(granted.data)
        assert token.repository == "alice/own"
        elsewhere = await ask(stranger, created["id"], own)
        assert not elsewhere.ok
        assert (elsewhere.error or {})["code"] == "NOT_YOUR_ALLOCATION"
        other_repository = await ask(host, created["id"], f"{registry.address}/bob/secret:1")
        assert not other_repository.ok
        assert (other_repository.error or {})["code"] == "NOT_ITS_IMAGE"
        # The registry itself holds the token to its scope: it pulls alice/own, and nothing else.
        assert await asyncio.to_thread(_pull_error, laptop_a, second, token.token) is None
        refused = await asyncio.to_thread(_pull_error, laptop_a, f"{registry.address}/bob/own:1", token.token)
        assert refused is not None

        # An image larger than the host's donated disk: not pulled on, not retried, failed clearly.
        too_big = await create_on(http, pool.api, alice, big, on="laptop-small")
        await _failed_once(http, pool, alice, too_big["id"], "bytes of disk this host donates")
        assert not await asyncio.to_thread(has_image, laptop_a, big)

        # The registry goes away: the next allocation waits in `pulling`, then fails, saying why;
        # one released while its host pulls is released, and its pull dropped.
        await asyncio.to_thread(registry.stop)
        doomed = await create_on(http, pool.api, alice, second)
        dropped = await create_on(http, pool.api, alice, second)
        await wait_for_status(pool, dropped["id"], "pulling", timeout=30)
        async with http.delete(f"{pool.api}/v1/allocations/{dropped['id']}", headers=headers) as response:
            assert response.status == 200, await response.text()
        await wait_for_status(pool, doomed["id"], "pulling", timeout=30)
        shown = await get_allocation(http, pool.api, alice, doomed["id"], "?wait=pulling&timeout=30")
        assert shown["state"] in ("pulling", "failed"), shown
        if shown["state"] == "pulling":
            assert shown["pull"] is not None
        failed = await get_allocation(http, pool.api, alice, doomed["id"], "?wait=failed&timeout=60")
        assert failed["state"] == "failed", (failed, pool.logs(80))
        assert failed["reason"] == "image_pull_failed"
        assert second in failed["detail"], failed["detail"]
        assert f"the registry {registry.address}" in failed["detail"], failed["detail"]
        assert "tried 2 times" in failed["detail"], failed["detail"]
        assert not await asyncio.to_thread(has_image, laptop_b, second)
        assert (await get_allocation(http, pool.api, alice, dropped["id"]))["state"] == "released"
        hostd_log = [
            json.loads(line) for line in (pool.workdir / "hostd-laptop-b.log").read_text().splitlines()
        ]
        assert any(
            entry.get("event") == "hostd.image_pull_dropped" and entry.get("alloc_id") == dropped["id"]
            for entry in hostd_log
        ), pool.logs(80)
        async with http.get(f"{pool.api}/v1/pool", headers=headers) as response:
            hosts = (await response.json())["hosts"]
        mine = next(h for h in hosts if h["host_id"] == host.host_id)
        # Only the running allocation still holds capacity on the host.
        assert mine["reserved"]["cpus"] == pytest.approx(0.2), mine


def _pull_as(engine: DockerEngine, reference: str, user: str, password: str) -> None:
    client = docker.DockerClient(base_url=engine.url)
    try:
        client.images.pull(reference, auth_config={"username": user, "password": password})
    finally:
        client.close()


async def test_ten_allocations_on_two_laptops_the_holder_first_the_other_after_a_pull(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """Issue 14's acceptance, as a user and two members would see it. Tried: alice's image is in
    the pool registry and on laptop A only; A has room for six of her allocations, B for more;
    she asks for ten, one after the other. Must hold: all ten run; the first six went to A (it
    holds the image) and ran without a pull; the four on B ran after `pulling` was logged, the
    first of them pulling the image itself."""
    laptop_a, laptop_b = docker_engines
    await pool.wait_api()
    registry = await asyncio.to_thread(pool.start_image_registry)
    alice = await pool.add_user("alice", allocations=100, cpus=100.0, memory_bytes=1 << 40)
    image = f"{registry.address}/alice/ten:1"
    await asyncio.to_thread(build_and_push, laptop_a, [image], alice, layer="echo ten > /marker")
    await asyncio.to_thread(_pull_as, laptop_a, image, "alice", alice)
    assert not await asyncio.to_thread(has_image, laptop_b, image)

    allowed = [DEFAULT_TAG, f"{registry.address}/alice/*:*"]
    a, b = await pool.enroll("laptop-a"), await pool.enroll("laptop-b")
    # Within the test machine's two cores, as hostd demands: room for six on A, eight on B.
    pool.write_config(a, laptop_a, allowed_images=allowed, donate={"cpus": 1.5, "memory": "2G", "disk": "4G"})
    pool.write_config(b, laptop_b, allowed_images=allowed, donate={"cpus": 2, "memory": "2G", "disk": "4G"})
    for host in (a, b):
        pool.start_hostd(host)
        await pool.wait_for_host(host.host_id, "active")
        await pool.wait_for_images(host.host_id)

    body = {"cpus": 0.25, "memory": "64M", "disk": "64M", "image": image, "command": ["sleep", "3600"]}
    headers = {"Authorization": f"Bearer {alice}"}
    placed: list[tuple[str, str]] = []
    async with aiohttp.ClientSession() as http:
        for _ in range(10):
            async with http.post(f"{pool.api}/v1/allocations", json=body, headers=headers) as response:
                created: dict[str, Any] = await response.json()
                assert response.status == 201, created
            placed.append((created["id"], created["host_id"]))
        assert [host for _, host in placed] == [a.host_id] * 6 + [b.host_id] * 4, (placed, pool.logs())
        first_pull_on_b: int | None = None  # the log position of B's first `pulling`
        for alloc_id, host_id in placed:
            running = await get_allocation(http, pool.api, alice, alloc_id, "?wait=running&timeout=90")
            assert running["state"] == "running", (running, pool.logs(80))
            history = await get_allocation(http, pool.api, alice, alloc_id, "/events")
            types = [entry["type"] for entry in history["events"]]
            at = {entry["type"]: entry["position"] for entry in history["events"]}
            if host_id == a.host_id:
                assert "AllocationPulling" not in types, types
            elif first_pull_on_b is None:  # B's first: the image is not there, B pulls it
                assert at["AllocationPulling"] < at["AllocationRunning"], types
                first_pull_on_b = at["AllocationPulling"]
            else:
                # Runs after that pull was logged; it pulls itself unless the image arrived
                # before B took it up (a slow machine places the ten slower than B pulls).
                assert first_pull_on_b < at["AllocationRunning"], (types, first_pull_on_b, at)
    assert await asyncio.to_thread(has_image, laptop_b, image)


def _build_local(engine: DockerEngine, reference: str, layer: str) -> str:
    """An image only this engine has (the test image and one layer more); its id."""
    client = docker.DockerClient(base_url=engine.url)
    try:
        container = client.containers.create(DEFAULT_TAG, ["sh", "-c", layer], network_mode="none")
        container.start()
        container.wait(timeout=30)
        repository, _, tag = reference.rpartition(":")
        image = container.commit(repository, tag)
        container.remove(force=True)
        return str(image.id)
    finally:
        client.close()


def _image_ids(engine: DockerEngine) -> dict[str, str]:
    """Every name the engine gives an image, with the image's id."""
    client = docker.DockerClient(base_url=engine.url)
    try:
        return {tag: str(image.id) for image in client.images.list() for tag in image.tags}
    finally:
        client.close()


async def test_the_pools_own_image_reaches_a_laptop_that_never_had_it(
    pool: Pool, docker_engines: list[DockerEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `potluck up` does with its default image, on two laptops. Tried: the operator
    publishes `potluck-course:1`, built on laptop A only, in the pool registry's library; alice
    asks for it by that Docker Hub-style name on laptop B, which never had it and reaches no
    Docker Hub; she also tries to overwrite the library with her own token; then the registry
    stops and another library name is asked for on B. Must hold: B pulls the library's copy and
    runs it, holding it under the name asked for (same image id as on A) and not under the
    library's; alice's push is refused and the library copy is unchanged; a name that cannot be
    a pool image is refused by `publish` saying why; with the registry down, the allocation
    fails with a detail naming the pool registry (never a silent fall back to Docker Hub)."""
    from potluck.ops.pool_images import PublishFailed, publish_image

    laptop_a, laptop_b = docker_engines
    await pool.wait_api()
    registry = await asyncio.to_thread(pool.start_image_registry)
    alice = await pool.add_user("alice")
    course = "potluck-course:1"
    built = await asyncio.to_thread(_build_local, laptop_a, course, "echo course > /marker")
    key = pool.registry_signing_key()
    published = await asyncio.to_thread(
        publish_image, laptop_a.url, registry.address, key, course, quiet=True
    )
    assert published.startswith(f"{registry.address}/library/potluck-course:1@sha256:"), published
    assert f"{registry.address}/library/potluck-course:1" not in await asyncio.to_thread(_image_ids, laptop_a)
    with pytest.raises(PublishFailed, match="cannot name a pool image"):
        await asyncio.to_thread(publish_image, laptop_a.url, registry.address, key, "alice/sim:1", quiet=True)
    # alice's own image under the library's name: the registry refuses her token there.
    await asyncio.to_thread(
        _build_local, laptop_a, f"{registry.address}/library/potluck-course:1", "echo evil > /marker"
    )
    client = docker.DockerClient(base_url=laptop_a.url)
    try:
        lines = list(
            client.images.push(
                f"{registry.address}/library/potluck-course",
                "1",
                auth_config={"username": "alice", "password": alice},
                stream=True,
                decode=True,
            )
        )
    finally:
        client.close()
    assert any("error" in line for line in lines), lines[-3:]

    monkeypatch.setenv("POTLUCK_HOSTD_PULL_ATTEMPTS", "2")
    monkeypatch.setenv("POTLUCK_HOSTD_PULL_BACKOFF_S", "1")
    host = await pool.enroll("laptop-b")
    pool.write_config(host, laptop_b, allowed_images=[DEFAULT_TAG, "potluck-course:*"])
    pool.start_hostd(host)
    await pool.wait_for_host(host.host_id, "active")
    assert course not in await asyncio.to_thread(_image_ids, laptop_b)

    async with aiohttp.ClientSession() as http:
        created = await create_on(http, pool.api, alice, course)
        running = await get_allocation(http, pool.api, alice, created["id"], "?wait=running&timeout=60")
        assert running["state"] == "running", (running, pool.logs(80))
        history = await get_allocation(http, pool.api, alice, created["id"], "/events")
        types = [entry["type"] for entry in history["events"]]
        assert types.index("AllocationPulling") < types.index("AllocationRunning"), types
        on_b = await asyncio.to_thread(_image_ids, laptop_b)
        assert on_b.get(course) == built, on_b  # the operator's image, not alice's attempt
        assert not [name for name in on_b if name.startswith(registry.address)], on_b

        await asyncio.to_thread(registry.stop)
        doomed = await create_on(http, pool.api, alice, "potluck-course:2")
        failed = await get_allocation(http, pool.api, alice, doomed["id"], "?wait=failed&timeout=90")
        assert failed["state"] == "failed", (failed, pool.logs(80))
        assert failed["reason"] == "image_pull_failed"
        assert f"the pool registry at {registry.address} does not answer" in failed["detail"], failed[
            "detail"
        ]
        assert "docker.io" not in failed["detail"], failed["detail"]  # no registry was tried


def _loopback_name() -> str:
    """A name of this machine that resolves only to loopback and is not `localhost` (the
    hostname, or a name /etc/hosts gives 127.0.0.1, as Debian's does): only the host's own
    lookup can tell where it leads."""
    names = [socket.gethostname()]
    with contextlib.suppress(OSError):
        for line in Path("/etc/hosts").read_text().splitlines():
            names += line.split("#", 1)[0].split()[1:]
    for name in names:
        if literally_local(name) or not re.fullmatch(r"[a-zA-Z0-9-]+(\.[a-zA-Z0-9-]+)*", name):
            continue
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)}
        except OSError:
            continue
        if addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses):
            return name
    raise AssertionError(
        f"no name but localhost resolves to loopback here (tried {names}): add one to /etc/hosts"
    )


async def test_a_users_image_name_cannot_send_a_laptop_to_its_own_machine_or_network(
    pool: Pool, docker_engines: list[DockerEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tried: alice asks for images whose registry is a port on the laptops' own loopback (a
    listener of the test's): by address, as `localhost`, and as a name of this machine that
    resolves to loopback. Laptop A allows any image; laptop B's member names the registry (by
    address) in allowed_images. Must hold:
    - by address or `localhost`, the request goes only to B (the allocator places such an image
      only where its member named the registry); constrained to A, it is refused at once (422,
      naming the registry and `potluck image push`), and no allocation is recorded for it;
    - by name, the allocator cannot tell, A's hostd can: it fails as image_pull_failed, once,
      saying the registry is on the host's own machine or network, without the address;
    - A's engine never connected to the port; B's does (its member asked for that registry), so
      the refusals are what kept A away, and B's failure names the registry as alice wrote it;
      A still runs a pool image (the test image, published in the pool's library) afterwards."""
    laptop_a, laptop_b = docker_engines
    monkeypatch.setenv("POTLUCK_HOSTD_PULL_ATTEMPTS", "1")
    dialled = 0

    async def count(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal dialled
        dialled += 1
        writer.close()

    listener = await asyncio.start_server(count, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    a, b = await pool.enroll("laptop-a"), await pool.enroll("laptop-b")
    pool.write_config(a, laptop_a, allowed_images=[])  # none listed: any image
    pool.write_config(b, laptop_b, allowed_images=[DEFAULT_TAG, f"127.0.0.1:{port}/probe/*:*"])
    for host in (a, b):
        pool.start_hostd(host)
    await pool.wait_api()
    await pool.wait_for_host(a.host_id, "active")
    await pool.wait_for_host(b.host_id, "active")
    alice = await pool.add_user("alice")
    headers = {"Authorization": f"Bearer {alice}"}
    try:
        async with aiohttp.ClientSession() as http:
            for image in (f"127.0.0.1:{port}/probe/tool:1", f"localhost:{port}/probe/tool:1"):
                body = {"cpus": 0.2, "memory": "64M", "image": image, "constraints": {"name": "laptop-a"}}
                async with http.post(f"{pool.api}/v1/allocations", json=body, headers=headers) as r:
                    refused = await r.json()
                    assert r.status == 422, refused
                registry = image.split("/", 1)[0]
                assert refused["error"]["code"] == "NO_HOST_ALLOWS_IMAGE", refused
                assert refused["error"]["field"] == "image", refused
                assert f"names the registry {registry} in its allowed_images" in refused["error"]["message"]
                assert "potluck image push" in refused["error"]["message"], refused

            async with http.get(f"{pool.api}/v1/allocations", headers=headers) as r:
                assert (await r.json())["allocations"] == []  # nothing recorded for them
            resolved = await create_on(
                http, pool.api, alice, f"{_loopback_name()}:{port}/probe/tool:1", on="laptop-a"
            )
            by_name = await _failed_once(
                http, pool, alice, resolved["id"], "on this host's own machine or network"
            )
            # hostd says where the name led, but not the member's address itself.
            assert f"{_loopback_name()} is {MEMBERS_ADDRESS}" in by_name["detail"], by_name["detail"]
            assert "127.0." not in by_name["detail"], by_name["detail"]
            assert dialled == 0

            unconstrained = {"cpus": 0.2, "memory": "64M", "image": f"127.0.0.1:{port}/probe/tool:1"}
            async with http.post(f"{pool.api}/v1/allocations", json=unconstrained, headers=headers) as r:
                named = await r.json()
                assert r.status in (201, 202), named
            failed = await get_allocation(http, pool.api, alice, named["id"], "?wait=failed&timeout=60")
            assert failed["reason"] == "image_pull_failed", (failed, pool.logs(80))
            assert [f["host_id"] for f in failed["failed_on"]] == [b.host_id], failed
            assert "own machine or network" not in failed["detail"], failed["detail"]
            # The engine's error names the registry's address, which alice wrote herself and
            # reads back (shared_details.py takes out only the member's other addresses).
            assert f"127.0.0.1:{port}" in failed["detail"], failed["detail"]
            assert dialled > 0

            # A runs no image of its member's it did not pull for the pool (pool_images.py).
            await asyncio.to_thread(pool.publish_in_library, laptop_a)
            fine = await create_on(http, pool.api, alice, DEFAULT_TAG, on="laptop-a")
            running = await get_allocation(http, pool.api, alice, fine["id"], "?wait=running&timeout=60")
            assert running["state"] == "running", (running, pool.logs(80))
    finally:
        listener.close()


def _open_registry(workdir: Path) -> tuple[ChildProcess, int]:
    """docker-registry as the pool runs it, but without token authentication: a registry of
    the member's own network (named in allowed_images), which anybody may pull from."""
    port = free_port()
    config = registry_config(
        storage=workdir / "data", port=port, realm="-", cert=workdir / "-", service="-", issuer="-"
    )
    del config["auth"]
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yml").write_text(json.dumps(config))
    proc = ChildProcess([registry_binary(), "serve", str(workdir / "config.yml")], log_path=workdir / "log")
    start_listening(proc, port, what="docker-registry")
    return proc, port


def _push_plain(engine: DockerEngine, reference: str, layer: str) -> None:
    """The test image and one layer made by `layer`, pushed anonymously as `reference`, and
    removed from `engine` again."""
    _build_local(engine, reference, layer)
    client = docker.DockerClient(base_url=engine.url)
    try:
        repository, _, tag = reference.rpartition(":")
        lines = list(client.images.push(repository, tag, stream=True, decode=True))
        assert not [line for line in lines if "error" in line], lines[-3:]
        client.images.remove(reference)
    finally:
        client.close()


class StallingLink:
    """A loopback relay to `upstream` that carries each connection's first `cut` bytes from the
    registry and then nothing more, holding the connection open: a link that died mid-layer."""

    def __init__(self, upstream: int, cut: int) -> None:
        self.upstream, self.cut = upstream, cut
        self.carried = 0
        self.held: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self.held += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, limit: int | None) -> None:
            passed = 0
            while data := await src.read(65536):
                if limit is not None:
                    data = data[: max(0, limit - passed)]
                    passed += len(data)
                    self.carried += len(data)
                    if not data:
                        await asyncio.Event().wait()  # the link is dead: nothing more, no close
                dst.write(data)
                await dst.drain()

        with contextlib.suppress(OSError):
            await asyncio.gather(pump(reader, up_writer, None), pump(up_reader, writer, self.cut))

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self.held:
            writer.close()


async def test_a_pull_that_stops_progressing_fails_saying_so_and_is_not_pulling_for_ever(
    pool: Pool, docker_engines: list[DockerEngine], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Tried: a registry of the member's network (named in B's allowed_images) holds an image of
    8 MB that does not compress; the link to it carries the first 256 KB of each connection and
    then stays open and silent, as a link that died mid-layer. hostd's stall bound is 3 s, one
    attempt. Before, the engine waited on the link for ever, and the allocation stayed
    `pulling`. Must hold: the allocation fails (image_pull_failed, no other host), its detail
    says there was no progress for 3 s and names the registry; the link did carry bytes (the
    pull had begun: this is a stall, not a refused connection); hostd logged the stall once;
    the allocation's capacity is free again (B runs the test image afterwards)."""
    laptop_a, laptop_b = docker_engines
    monkeypatch.setenv("POTLUCK_HOSTD_PULL_ATTEMPTS", "1")
    monkeypatch.setenv("POTLUCK_HOSTD_PULL_STALL_S", "3")
    registry, registry_port = await asyncio.to_thread(_open_registry, tmp_path / "team-registry")
    link = StallingLink(registry_port, cut=256 * 1024)
    port = await link.start()
    try:
        await asyncio.to_thread(
            _push_plain,
            laptop_a,
            f"127.0.0.1:{registry_port}/team/big:1",
            "head -c 8388608 /dev/urandom > /big",
        )
        b = await pool.enroll("laptop-b")
        pool.write_config(
            b,
            laptop_b,
            allowed_images=[DEFAULT_TAG, f"127.0.0.1:{port}/team/*:*"],
            donate={"cpus": 1, "memory": "1G", "disk": "1G"},
        )
        pool.start_hostd(b)
        await pool.wait_api()
        await pool.wait_for_host(b.host_id, "active")
        alice = await pool.add_user("alice")
        async with aiohttp.ClientSession() as http:
            created = await create_on(http, pool.api, alice, f"127.0.0.1:{port}/team/big:1")
            failed = await get_allocation(http, pool.api, alice, created["id"], "?wait=failed&timeout=90")
            assert failed["state"] == "failed", (failed, pool.logs(80))
            assert failed["reason"] == "image_pull_failed", failed
            assert "no progress for 3 s" in failed["detail"], failed["detail"]
            assert f"127.0.0.1:{port}" in failed["detail"], failed["detail"]
            assert "(tried once)" in failed["detail"], failed["detail"]
            assert link.carried > 0
            assert b.process is not None
            assert b.process.log_tail(5000).count("hostd.image_pull_stalled") == 1, pool.logs(80)

            fine = await create_on(http, pool.api, alice, DEFAULT_TAG)
            running = await get_allocation(http, pool.api, alice, fine["id"], "?wait=running&timeout=60")
            assert running["state"] == "running", (running, pool.logs(80))
    finally:
        link.close()
        registry.stop()
