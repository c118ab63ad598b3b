"""Images that carry labels of Potluck's own namespace (`potluck.*`), on a real engine.

The engine merges an image's labels into those of every container made from it: a key the
create call does not set shows the image's value. Such an image is refused before anything
is made from it, on every path that creates a container (a start, a warm container made
ahead).

And behind that refusal: containers made from such an image anyway (by an older hostd,
which read no image labels: the audit's warm container with another allocation's id, a
disk bound of 64 TiB) claim nothing. Their labels show the image's values, and hostd
takes no owner and no bound from them.
"""

import uuid
from collections.abc import Iterator
from dataclasses import replace

import docker
import pytest

from potluck.hostd.container_config import (
    LABEL_HOST,
    LABEL_MANAGED,
    LABEL_WARM,
    ContainerSpec,
    create_kwargs,
)
from potluck.hostd.docker_driver import DockerDriver, ImageRefused, LimitsNotApplied, create_container
from potluck.hostd.exec_bridge import ExecBridge
from potluck.hostd.reconciler import reconcile
from potluck.hostd.warm_engine import create_warm, list_warm
from potluck.hostd.warm_keeper import WarmKeeper
from potluck.hostd.warm_pool import warm_create_kwargs, warm_key
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


#: 64 TiB: the audit's disk bound.
HUGE = 64 << 40


@pytest.fixture
def audits_image(docker_engine: DockerEngine) -> Iterator[tuple[str, ContainerSpec]]:
    """The audit's image, all in one: another allocation's id (A's, of the spec yielded), a
    disk bound of 64 TiB for a warm container, a spec of A's with that bound; its tag, and A."""
    victim = container_spec("any", HOST)
    spoofed = replace(victim, disk_bytes=HUGE, network=True)
    labels = {
        "potluck.allocation": victim.allocation_id,
        "potluck.warm.disk": str(HUGE),
        "potluck.spec": spoofed.to_json(),
    }
    reference = f"potluck-spoof-audit-{uuid.uuid4().hex[:8]}:1"
    labelled_image(docker_engine, reference, labels)
    try:
        yield reference, victim
    finally:
        remove_images(docker_engine, [reference])


def _as_an_older_hostd_made_it(
    driver: DockerDriver, client: docker.DockerClient, image: str, spec: ContainerSpec, *, warm: bool
) -> str:
    """A running container of `spec` made from `image` without hostd's image check, with the
    labels an older hostd set: an allocation's own container (`create_kwargs`, whose labels
    never had the warm disk label), or a warm container (labels: host, managed, warm only)
    taken by the allocation (renamed after it, as take_warm does)."""
    if warm:
        key = warm_key(spec, env_at_take=True)
        assert key is not None
        kwargs = warm_create_kwargs(
            key, HOST, uuid.uuid4().hex[:12], disk_quota=False, helper=None, cgroup_parent=None,
            image_entrypoint=None,
        )  # fmt: skip
        kwargs["labels"] = {LABEL_HOST: HOST, LABEL_MANAGED: "1", LABEL_WARM: "1"}
        # Without the helper's keep-alive the image's CMD (/bin/sh) runs, and with no stdin it
        # ends at once: the pause that makes it "frozen" raced its exit. An open stdin keeps
        # the shell waiting, as `docker run -d -i` does, with the image's command unchanged.
        kwargs["stdin_open"] = True
    else:
        kwargs = create_kwargs(spec, disk_quota=False)
        del kwargs["labels"][LABEL_WARM]  # set since, to none
    kwargs["image"] = image
    container = create_container(client, kwargs)
    if warm:
        container.rename(spec.container_name)
    container.start()
    return container.id or ""


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


@pytest.mark.parametrize("warm", [False, True], ids=["own", "warm"])
async def test_a_label_of_the_image_cannot_change_the_sftp_disk_bound(
    docker_driver: DockerDriver,
    client: docker.DockerClient,
    audits_image: tuple[str, ContainerSpec],
    warm: bool,
) -> None:
    """Tried: a running container of allocation B from the audit's image (a warm disk bound of
    64 TiB, a spec of 64 TiB), made as an older hostd made it: B's own, or a warm one B took.
    Must hold: the image's values do show in its labels (what the attack relied on); yet what
    the exec side's SFTP server may still write is B's bound from the spec hostd holds, less
    what the layer holds; with no spec held, nothing (0), never the label's 64 TiB."""
    image, _ = audits_image
    spec = container_spec(image, HOST, disk_bytes=64 * MiB)
    container_id = _as_an_older_hostd_made_it(docker_driver, client, image, spec, warm=warm)
    labels = client.containers.get(container_id).labels
    assert labels["potluck.warm.disk"] == str(HUGE)

    bridge = ExecBridge(docker_driver.base_url, HOST, disk_bound_of={spec.allocation_id: spec.disk_bytes}.get)
    assert await bridge.container_for(spec.allocation_id) == container_id
    left = await bridge.disk_left(spec.allocation_id)
    assert left is not None
    assert 0 < left <= spec.disk_bytes
    assert await ExecBridge(docker_driver.base_url, HOST).disk_left(spec.allocation_id) == 0


async def test_a_container_of_the_image_claims_no_other_allocations_container(
    docker_engine: DockerEngine,
    client: docker.DockerClient,
    audits_image: tuple[str, ContainerSpec],
    test_image: str,
) -> None:
    """Tried: A's container, with a network of its own, stopped and kept (its files are A's
    results); beside it, made from the audit's image (potluck.allocation=A, a spec of A's with
    a network) as an older hostd made them, a warm container not taken (frozen: running, so
    preferred to a stopped one) and one taken by B. Then what a restarted hostd does: list this
    host's containers, reconcile them (A kept, B wanted), ask the exec side for each, and remove
    B's container (its release).
    Must hold: the engine lists the warm one as nobody's and B's as B's, A's as A's with its
    spec; reconciliation removes none of them and adopts B's; the exec side gives A's
    container for A and B's for B; removing B's leaves A's network and container, and A
    starts again on its network."""
    image, victim = audits_image
    with DockerDriver(docker_engine.url, internal_networks=True) as driver:
        a = replace(victim, image=test_image, network=True)
        b = container_spec(image, HOST, disk_bytes=64 * MiB)
        try:
            a_id = driver.run(a)
            driver.stop(a_id, 1)
            warm_id = _as_an_older_hostd_made_it(
                driver, client, image, container_spec(image, HOST, command=None), warm=True
            )
            client.api.rename(warm_id, f"potluck_warm_{uuid.uuid4().hex[:12]}")  # not taken
            driver.pause(warm_id)  # tries again if the engine fails the freeze
            b_id = _as_an_older_hostd_made_it(driver, client, image, b, warm=True)
            assert client.containers.get(warm_id).labels["potluck.allocation"] == a.allocation_id

            found = {c.container_id: c for c in driver.list_managed(HOST)}
            assert {cid: c.allocation_id for cid, c in found.items()} == {
                a_id: a.allocation_id,
                warm_id: "",
                b_id: b.allocation_id,
            }
            assert found[a_id].spec == a
            assert found[b_id].spec is None
            actual = [c for c in found.values() if c.allocation_id]
            plan = reconcile({b.allocation_id: b}, actual, kept={a.allocation_id})
            assert plan.remove == []
            assert [c.container_id for c in plan.adopt] == [b_id]

            bridge = ExecBridge(driver.base_url, HOST)
            assert await bridge.container_for(a.allocation_id, stopped_ok=True) == a_id
            assert await bridge.container_for(b.allocation_id) == b_id

            driver.remove(b_id)
            assert client.networks.list(names=[a.container_name])
            client.api.start(a_id)
            networks = driver.inspect(a_id)["NetworkSettings"]["Networks"]
            assert list(networks) == [a.container_name]
        finally:
            for container in driver.list_managed(HOST):
                driver.remove(container.container_id)
        assert client.networks.list(names=[a.container_name]) == []  # A's own, removed with it
