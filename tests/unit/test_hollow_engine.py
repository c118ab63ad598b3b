"""The hollow engine: DockerDriver's interface over dicts, as hostd's container manager uses it."""

import threading

import pytest

from potluck.hostd.container_config import ContainerSpec
from potluck.hostd.docker_driver import ContainerNotFound, DockerDriverError, ImageNotAvailable
from potluck.hostd.hollow_engine import STOPPED_EXIT, HollowDriver


def _spec(alloc_id: str = "a-1", image: str = "busybox:latest", host_id: str = "h-1") -> ContainerSpec:
    return ContainerSpec(
        allocation_id=alloc_id, host_id=host_id, image=image,
        cpus=0.5, memory_bytes=64 << 20, disk_bytes=64 << 20, pids_limit=64, command=["sleep", "1"],
    )  # fmt: skip


def test_a_container_runs_exits_with_its_code_and_is_removed() -> None:
    """run() starts a container (again: the same one), finish() gives it an exit code that
    state() and list_managed() read back, and remove() forgets it; an unknown id is refused."""
    driver = HollowDriver("h-1", ["busybox:latest"])
    container_id = driver.run(_spec())
    assert driver.run(_spec()) == container_id
    assert driver.state(container_id).running
    assert driver.usage(container_id).memory_bytes > 0
    driver.finish(container_id, 3)
    state = driver.state("potluck-a-1")  # by name, as hostd asks after a restart
    assert (state.running, state.exit_code, state.allocation_id) == (False, 3, "a-1")
    assert [c.container_id for c in driver.list_managed("h-1")] == [container_id]
    driver.remove(container_id)
    driver.remove(container_id)  # already gone is fine, as for Docker
    assert driver.list_managed(None) == []
    with pytest.raises(ContainerNotFound):
        driver.state(container_id)


def test_stop_reports_a_die_event_to_a_follower() -> None:
    """A stopped container exits 143 and its die event reaches the reader of events(), which
    ends when closed."""
    driver = HollowDriver("h-1", ["*"])
    stream = driver.events("h-1")
    seen: list[dict[str, object]] = []
    reader = threading.Thread(target=lambda: seen.extend(stream))
    reader.start()
    container_id = driver.run(_spec())
    driver.stop(container_id)
    stream.close()
    reader.join(5)
    assert not reader.is_alive()
    assert [(e["action"], e["exit_code"]) for e in seen] == [("start", None), ("die", STOPPED_EXIT)]
    assert driver.state(container_id).exit_code == STOPPED_EXIT


def test_only_the_images_it_has_run_and_another_spec_is_refused() -> None:
    """An image it was not given is not available (hostd would pull it); a container name
    reused with another spec is refused, as the real driver does; images in use stay."""
    driver = HollowDriver("h-1", ["busybox:latest"])
    with pytest.raises(ImageNotAvailable):
        driver.run(_spec(image="alpine:3"))
    driver.run(_spec())
    with pytest.raises(DockerDriverError):
        driver.run(_spec(image="busybox:latest", host_id="h-2"))
    [image] = driver.images()
    assert (image.tags, image.containers) == (("busybox:latest",), 1)
    with pytest.raises(DockerDriverError):
        driver.remove_image(image)
    driver.pull("alpine:3")
    assert driver.run(_spec(alloc_id="a-2", image="alpine:3"))
