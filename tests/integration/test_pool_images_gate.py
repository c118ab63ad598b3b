"""The ledger of the pool's images as the driver's gate (services/hostd/pool_images.py), on a real
Docker engine: both ways a container of an allocation's image is made (created for it, or made
ahead as a warm one) refuse an image the pool did not bring, as if the engine lacked it."""

import pytest

from potluck.hostd.docker_driver import DockerDriver, ImageNotAvailable
from potluck.hostd.pool_images import PoolImages
from potluck.hostd.warm_engine import create_warm
from potluck.hostd.warm_pool import warm_key
from tests.fixtures.docker import container_spec

HOST = "host-pool-images"


def _image_id(driver: DockerDriver, image: str) -> str:
    with driver._errors(f"inspecting {image}") as client:
        return str(client.api.inspect_image(image)["Id"])  # type: ignore[no-untyped-call]


def test_an_image_the_pool_did_not_bring_is_absent_to_both_ways_of_making_a_container(
    docker_driver: DockerDriver, test_image: str
) -> None:
    """Tried: the engine holds the test image (built on it, as a member builds theirs); the
    driver's gate is an empty ledger with an empty allow-list; a container of it is run, and a
    warm one made; then its id is recorded in the ledger, and both are tried again; then the
    ledger is emptied and the allow-list names it. Must hold: with the empty ledger both raise
    ImageNotAvailable (the pull path's signal) and no container is made from it; recorded, or
    listed by the member, both make their container."""
    ledger = PoolImages(None)
    docker_driver.image_gate = ledger.admits
    spec = container_spec(test_image, HOST)
    key = warm_key(spec, env_at_take=True)
    assert key is not None
    made_before = {c.container_id for c in docker_driver.list_managed(HOST)}

    with pytest.raises(ImageNotAvailable, match="did not pull for the pool"):
        docker_driver.run(spec)
    with pytest.raises(ImageNotAvailable, match="did not pull for the pool"):
        create_warm(docker_driver, HOST, key)
    assert {c.container_id for c in docker_driver.list_managed(HOST)} == made_before

    ledger.add(_image_id(docker_driver, test_image))
    assert docker_driver.run(spec)
    warm = create_warm(docker_driver, HOST, key)
    docker_driver.remove(warm.container_id)

    listed = PoolImages(None, ["potluck-test:*"])
    docker_driver.image_gate = listed.admits
    other = container_spec(test_image, HOST)
    assert docker_driver.run(other)
