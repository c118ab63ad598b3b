"""Images that carry labels of Potluck's own namespace (`potluck.*`), on a real engine.

The engine merges an image's labels into those of every container made from it: a key the
create call does not set shows the image's value. Such an image is refused before anything
is made from it, on every path that creates a container (a start, a warm container made
ahead).
"""

import uuid
from collections.abc import Iterator

import docker
import pytest

from potluck.hostd.docker_driver import DockerDriver, ImageRefused, LimitsNotApplied
from potluck.hostd.warm_engine import create_warm, list_warm
from potluck.hostd.warm_keeper import WarmKeeper
from potluck.hostd.warm_pool import warm_key
from potluck.localstack import DockerEngine
from tests.fixtures.docker import container_spec
from tests.fixtures.images import labelled_image, remove_images

HOST = "host-image-labels"
MiB = 1 << 20
#: What the audit's images carried: another allocation's id, a disk bound of 64 TiB.
SPOOFS = {
    "allocation": {"potluck.allocation": "someone-elses-allocation"},
    "warm-disk": {"potluck.warm.disk": str(64 << 40)},
    "several": {"potluck.managed": "1", "potluck.spec": "{}", "org.example.kept": "yes"},
}


@pytest.fixture
def client(docker_engine: DockerEngine) -> Iterator[docker.DockerClient]:
    client = docker.DockerClient(base_url=docker_engine.url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(params=sorted(SPOOFS))
def spoofing_image(
    request: pytest.FixtureRequest, docker_engine: DockerEngine
) -> Iterator[tuple[str, list[str]]]:
    """An image `FROM` the test image with a LABEL line of ours; its tag and our labels in it."""
    labels = SPOOFS[request.param]
    reference = f"potluck-spoof-{request.param}-{uuid.uuid4().hex[:8]}:1"
    labelled_image(docker_engine, reference, labels)
    try:
        yield reference, sorted(k for k in labels if k.startswith("potluck."))
    finally:
        remove_images(docker_engine, [reference])


def _made_from(client: docker.DockerClient, image: str) -> list[str]:
    return [c.name or "" for c in client.containers.list(all=True, filters={"ancestor": image})]


def test_a_start_refuses_the_image_before_making_anything(
    docker_driver: DockerDriver, client: docker.DockerClient, spoofing_image: tuple[str, list[str]]
) -> None:
    """Tried: run() of an allocation (with a network of its own) from an image with labels of
    ours. Must hold: ImageRefused (a LimitsNotApplied, which hostd reports as the allocation's
    failure), naming the image, every label of ours in it and what to do; no container and no
    network was made from it."""
    image, ours = spoofing_image
    spec = container_spec(image, HOST, network=True)
    with pytest.raises(ImageRefused) as caught:
        docker_driver.run(spec)
    assert isinstance(caught.value, LimitsNotApplied)
    message = str(caught.value)
    assert message.startswith(f"the image {image} carries the label"), message
    assert all(label in message for label in ours), message
    assert "rebuild the image without them" in message
    assert "no container was made" in message
    assert _made_from(client, image) == []
    assert client.networks.list(names=[spec.container_name]) == []


async def test_the_warm_pool_makes_nothing_of_the_image_and_drops_its_shape(
    docker_driver: DockerDriver, client: docker.DockerClient, spoofing_image: tuple[str, list[str]]
) -> None:
    """Tried: a warm container of the image's shape, made directly (create_warm) and by the warm
    keeper after a placement of the shape (take, then a refill, as hostd does). Must hold:
    create_warm raises ImageRefused and makes nothing; the keeper takes none, forgets the shape
    instead of trying it again, and no container of the image exists, warm or other."""
    image, _ = spoofing_image
    spec = container_spec(image, HOST, command=None, disk_bytes=64 * MiB)
    key = warm_key(spec, env_at_take=True)
    assert key is not None
    with pytest.raises(ImageRefused, match="carries the label"):
        create_warm(docker_driver, HOST, key)

    keeper = WarmKeeper(docker_driver, HOST, 1, lambda: 1 << 40)
    assert await keeper.take(spec) is None  # none of its shape yet: created cold (and refused)
    await keeper.refill()
    assert keeper.recent.keys == []
    assert keeper.ready == []
    assert list_warm(docker_driver, HOST) == []
    assert _made_from(client, image) == []
