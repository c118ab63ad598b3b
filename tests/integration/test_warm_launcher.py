"""A task's warm container started ahead and frozen in its launcher (services/hostd/launcher.py,
warm_engine.py), on a real Docker engine: what runs once it is taken is what `docker run`
would have run, with the environment values of the allocation that took it, and a command
the image lacks is found out before anything is frozen."""

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace

import docker
import pytest

from potluck.hostd.container_config import ContainerSpec
from potluck.hostd.docker_driver import DockerDriver
from potluck.hostd.exec_bridge import ExecBridge
from potluck.hostd.warm_engine import ShapeCannotStart, create_warm, list_warm, take_warm
from potluck.hostd.warm_pool import warm_key
from tests.fixtures.docker import container_spec
from tests.fixtures.exec_output import bridge_output

HOST = "host-warm-launcher"
MiB = 1 << 20


def _spec(image: str, command: list[str], env: dict[str, str] | None = None) -> ContainerSpec:
    return container_spec(image, HOST, disk_bytes=64 * MiB, command=command, env=env or {})


def _exited(client: docker.DockerClient, container_id: str) -> tuple[int, bytes]:
    deadline = time.monotonic() + 30
    while True:
        attrs = client.api.inspect_container(container_id)
        if not attrs["State"]["Running"]:
            return int(attrs["State"]["ExitCode"]), client.api.logs(container_id)
        assert time.monotonic() < deadline, f"{container_id[:12]} still runs"
        time.sleep(0.05)


@pytest.fixture
def entrypoint_image(docker_driver: DockerDriver, test_image: str) -> Iterator[str]:
    """The test image with an ENTRYPOINT: `sh -c 'echo "entry:$*"; exit 4' entry`."""
    client = docker.DockerClient(base_url=docker_driver.base_url)
    made = client.containers.create(test_image, command=["true"])
    tag = f"potluck-entrypoint-{uuid.uuid4().hex[:8]}"
    made.commit(
        repository=tag,
        tag="latest",
        changes=['ENTRYPOINT ["sh", "-c", "echo \\"entry:$*\\"; exit 4", "entry"]'],
    )
    made.remove()
    try:
        yield f"{tag}:latest"
    finally:
        client.images.remove(f"{tag}:latest", force=True)
        client.close()


def test_a_taken_launcher_runs_the_command_as_docker_would(
    docker_driver: DockerDriver, test_image: str, entrypoint_image: str
) -> None:
    """Tried, 10 times each: a warm container of `sh -c 'echo "[$0] [$1]"; exit 5' 'a b' "c'd"`
    made (started ahead, frozen), then at once taken; one of an image with an ENTRYPOINT; and
    one taken by an allocation with environment values (quotes, a newline, `$`, non-ASCII),
    which the container was made without.
    Must hold: each taken one prints its line once, arguments and values intact, its stdin
    empty as under `docker run` without `-i`, and exits with the command's code (5; the
    entrypoint's 4 with the command after it; 6), every time, with the go signal sent right
    after the unfreeze (the engine's late "paused" event is waited out)."""
    assert docker_driver.helper is not None, "no static busybox: run ops/setup (busybox-static)"
    client = docker.DockerClient(base_url=docker_driver.base_url)
    env = {"TOKEN": 'it\'s "quoted" $HOME `x`\nline 2', "NAME": "ü  two spaces", "EMPTY": ""}
    show_env = 'echo "[$TOKEN] [$NAME] [$EMPTY] [$(cat)]"; exit 6'
    cases = [
        (test_image, ["sh", "-c", 'echo "[$0] [$1]"; exit 5', "a b", "c'd"], {}, 5, b"[a b] [c'd]\n"),
        (entrypoint_image, ["x", "y z"], {}, 4, b"entry:x y z\n"),
        (test_image, ["sh", "-c", show_env], env, 6, f"[{env['TOKEN']}] [{env['NAME']}] [] []\n".encode()),
    ]
    try:
        for image, command, values, code, printed in cases:
            for _ in range(10):
                spec = _spec(image, command, values)
                key = warm_key(spec, env_at_take=True)
                assert key is not None
                warm = create_warm(docker_driver, HOST, key)
                assert warm.started
                assert client.api.inspect_container(warm.container_id)["State"]["Paused"] is True
                assert client.api.logs(warm.container_id) == b""
                container_id = take_warm(docker_driver, warm, spec)
                assert _exited(client, container_id) == (code, printed)
                docker_driver.remove(container_id)
    finally:
        client.close()


def test_a_command_the_image_lacks_is_found_out_before_the_freeze(
    docker_driver: DockerDriver, test_image: str
) -> None:
    """Tried: a warm container of a command that is not in the image, 10 times over (its
    launcher may end between hostd's two looks at it, an inspect and a `top`, which the engine
    then refuses: seen under load). Must hold: making it fails with ShapeCannotStart every
    time, saying the exit code and docker's own message, and leaves no container behind
    (nothing frozen waits for a take that could only fail)."""
    for _ in range(10):
        spec = _spec(test_image, ["no-such-tool", "--flag"])
        key = warm_key(spec, env_at_take=True)
        assert key is not None
        with pytest.raises(
            ShapeCannotStart, match=r'ended with 127 .*"no-such-tool": executable file not found'
        ):
            create_warm(docker_driver, HOST, key)
    assert list_warm(docker_driver, HOST) == []


def test_sessions_into_a_warm_container_get_the_allocations_env(
    docker_driver: DockerDriver, test_image: str
) -> None:
    """Tried: an interactive warm container and a task's, each taken by an allocation with
    environment values the container was made without; then a session into each through
    hostd's exec bridge, which knows the allocations' values (`env_of`), the session sending a
    TERM of its own. Must hold: the session sees the allocation's values, the session's own
    TERM wins over the allocation's (as it wins over a container's environment), and the
    engine's record of the container holds none of the values (they were never in it)."""
    client = docker.DockerClient(base_url=docker_driver.base_url)
    env = {"TOKEN": "s3cret 'v'", "TERM": "from-the-allocation"}
    specs = {
        spec.allocation_id: spec
        for spec in (
            _spec(test_image, ["sleep", "1000"], env),
            replace(_spec(test_image, [], env), command=None),
        )
    }
    bridge = ExecBridge(docker_driver.base_url, HOST, env_of=lambda alloc_id: specs[alloc_id].env)
    try:
        for spec in specs.values():
            key = warm_key(spec, env_at_take=True)
            assert key is not None
            container_id = take_warm(docker_driver, create_warm(docker_driver, HOST, key), spec)
            said = asyncio.run(
                bridge_output(
                    bridge,
                    spec.allocation_id,
                    ["sh", "-c", 'printf "%s|%s" "$TOKEN" "$TERM"'],
                    {"TERM": "xterm"},
                )
            )
            assert said == b"s3cret 'v'|xterm"
            recorded = client.api.inspect_container(container_id)["Config"]["Env"]
            assert not any(entry.startswith(("TOKEN=", "TERM=")) for entry in recorded)
            docker_driver.remove(container_id)
    finally:
        client.close()
