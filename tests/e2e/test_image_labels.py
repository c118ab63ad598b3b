"""An image may not speak for hostd: one carrying a label of Potluck's own namespace is
refused, and cannot claim another allocation's container (the audit's HIGH finding).

The attack: user B builds `FROM` a usable image plus `LABEL potluck.allocation=<A's
allocation>` and places an interactive allocation from it on a host that keeps warm
containers. The engine merges image labels into its containers', so a warm container made
ahead for B's shape, whose create did not set that label, showed A's allocation id; a
restarted hostd grouped it with A's kept container, preferred the running one and removed
A's, with A's results inside.
"""

import asyncio
import io
import tarfile

import docker

from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG
from tests.e2e.conftest import start_laptop, wait_for_status
from tests.fixtures.images import labelled_image, remove_images
from tests.fixtures.pool import Pool, allocation, place, spec

SPOOF_IMAGE = "potluck-spoof:1"


def _file(client: docker.DockerClient, container_id: str, path: str) -> bytes:
    """A file of a container, running or not (`docker cp`)."""
    stream, _ = client.api.get_archive(container_id, path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.extractfile(tar.getmembers()[0])
        assert member is not None
        return member.read()


async def test_an_image_with_another_allocations_id_is_refused_and_claims_nothing(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """Tried: on a host keeping one warm container per shape, A's task writes a result and
    exits, its container kept; then B's interactive allocation from an image `FROM` the test
    image with `LABEL potluck.allocation=<A's id>`; then hostd is restarted, and so reconciles
    the engine's containers against what it should run.
    Must hold: B fails with limits_not_applied, its detail naming the image, the label and
    what to do (rebuild without it); no container of B's image exists, not even a warm one
    (the warm pool drops the shape); after the restart A's container is the same one, still
    stopped, its result inside, and A is still exited and kept."""
    engine = docker_engines[0]
    labelled_image(engine, SPOOF_IMAGE, {"potluck.allocation": "result-a"})
    client = docker.DockerClient(base_url=engine.url)
    try:
        host = await start_laptop(
            pool, engine, "laptop-labels", warm_containers=1, allowed_images=[DEFAULT_TAG, "potluck-spoof:*"]
        )
        task = spec(command=["sh", "-c", "echo result-of-a > /result"]).model_copy(update={"keep_for_s": 600})
        await place(pool.store, host.host_id, "result-a", task)
        await wait_for_status(pool, "result-a", "exited")
        kept = client.containers.get("potluck-result-a")
        assert kept.status == "exited"
        assert _file(client, kept.id or "", "/result") == b"result-of-a\n"

        await place(
            pool.store, host.host_id, "b", spec(image=SPOOF_IMAGE).model_copy(update={"command": None})
        )
        await wait_for_status(pool, "b", "failed")
        state = await allocation(pool.store, "b")
        assert state is not None
        assert state.reason == "limits_not_applied"
        assert state.detail is not None
        assert f"the image {SPOOF_IMAGE} carries the label potluck.allocation of Potluck's" in state.detail
        assert "rebuild the image without them" in state.detail, state.detail
        assert "result-a" not in state.detail  # the label named, never its value
        # The warm pool tried B's shape after B's placement, and dropped it.
        assert host.process is not None
        deadline = asyncio.get_running_loop().time() + 30
        while "hostd.warm_shape_dropped" not in host.process.log_tail(400):
            assert asyncio.get_running_loop().time() < deadline, pool.logs(80)
            await asyncio.sleep(0.2)
        assert client.containers.list(all=True, filters={"ancestor": SPOOF_IMAGE}) == []

        host.process.stop()
        pool.start_hostd(host)
        await pool.wait_for_host(host.host_id, "active")
        # A placement after the restart runs: the restarted hostd has reconciled before it.
        await place(pool.store, host.host_id, "after", spec())
        await wait_for_status(pool, "after", "running")
        assert "hostd.removing_unwanted" not in host.process.log_tail(400)
        after = client.containers.get("potluck-result-a")
        assert after.id == kept.id
        assert after.status == "exited"
        assert _file(client, after.id or "", "/result") == b"result-of-a\n"
        a = await allocation(pool.store, "result-a")
        assert a is not None
        assert (a.status, a.kept_until is not None) == ("exited", True)
        assert client.containers.list(all=True, filters={"ancestor": SPOOF_IMAGE}) == []
    finally:
        client.close()
        remove_images(engine, [SPOOF_IMAGE])
