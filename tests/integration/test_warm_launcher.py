"""A task's warm container started ahead and frozen in its launcher (services/hostd/launcher.py,
warm_engine.py), on a real Docker engine: what runs once it is taken is what `docker run`
would have run, and a command the image lacks is found out before anything is frozen."""

import time
import uuid
from collections.abc import Iterator

import docker
import pytest

from potluck.hostd.container_config import ContainerSpec
from potluck.hostd.docker_driver import DockerDriver
from potluck.hostd.warm_engine import ShapeCannotStart, create_warm, list_warm, take_warm
from potluck.hostd.warm_pool import warm_key
from tests.fixtures.docker import container_spec

HOST = "host-warm-launcher"
MiB = 1 << 20


def _spec(image: str, command: list[str]) -> ContainerSpec:
    return container_spec(image, HOST, disk_bytes=64 * MiB, command=command)


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
    made (started ahead, frozen), then at once taken; and one of an image with an ENTRYPOINT.
    Must hold: each taken one prints its line once, arguments intact, and exits with the
    command's code (5; the entrypoint's 4 with the command after it), every time, with the
    go signal sent right after the unfreeze (the engine's late "paused" event is waited out)."""
    assert docker_driver.helper is not None, "no static busybox: run ops/setup (busybox-static)"
    client = docker.DockerClient(base_url=docker_driver.base_url)
    cases = [
        (test_image, ["sh", "-c", 'echo "[$0] [$1]"; exit 5', "a b", "c'd"], 5, b"[a b] [c'd]\n"),
        (entrypoint_image, ["x", "y z"], 4, b"entry:x y z\n"),
    ]
    try:
        for image, command, code, printed in cases:
            for _ in range(10):
                spec = _spec(image, command)
                key = warm_key(spec)
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
    """Tried: a warm container of a command that is not in the image. Must hold: making it
    fails with ShapeCannotStart, saying the exit code and docker's own message, and leaves no
    container behind (nothing frozen waits for a take that could only fail)."""
    spec = _spec(test_image, ["no-such-tool", "--flag"])
    key = warm_key(spec)
    assert key is not None
    with pytest.raises(ShapeCannotStart, match=r'ended with 127 .*"no-such-tool": executable file not found'):
        create_warm(docker_driver, HOST, key)
    assert list_warm(docker_driver, HOST) == []
