"""What the driver refuses before any of an allocation's code runs, on a real engine."""

import uuid

import pytest

from potluck.contracts.engine import EngineFacts
from potluck.hostd.container_config import ContainerSpec
from potluck.hostd.docker_driver import DockerDriver, LimitsNotApplied
from potluck.localstack import DockerEngine

MiB = 1024 * 1024


class _EngineWithoutSeccomp(DockerDriver):
    """The real engine, as if its `docker info` listed no seccomp among its security options."""

    def engine_facts(self) -> EngineFacts:
        return super().engine_facts().model_copy(update={"seccomp": False})


def test_an_engine_without_seccomp_runs_nothing(docker_engine: DockerEngine, test_image: str) -> None:
    """run() on an engine that applies no seccomp profile: LimitsNotApplied names seccomp and
    no container of the allocation exists afterwards (none was made, none started)."""
    spec = ContainerSpec(
        allocation_id=f"t-{uuid.uuid4().hex[:12]}", host_id="host-seccomp", image=test_image, cpus=0.5,
        memory_bytes=64 * MiB, disk_bytes=256 * MiB, pids_limit=64, command=["sleep", "1000"],
    )  # fmt: skip
    with _EngineWithoutSeccomp(docker_engine.url) as driver:
        try:
            with pytest.raises(LimitsNotApplied, match="seccomp") as caught:
                driver.run(spec)
            assert caught.value.field == "seccomp"
            assert driver.list_managed("host-seccomp") == []
        finally:
            for container in driver.list_managed("host-seccomp"):
                driver.remove(container.container_id)
