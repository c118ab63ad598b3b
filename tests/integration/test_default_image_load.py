"""Loading a root filesystem as an image (`potluck up`'s default image) on a real engine.

The default image's tarball is ~300 MB: it is sent to the engine as it is read, so a first
`potluck up` on a member's laptop does not hold it (twice) in memory.
"""

import json
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from potluck.localstack import DockerEngine
from potluck.localstack.default_image import config_digest, image_config, load_rootfs
from potluck.localstack.docker_engine import engine_request
from potluck.localstack.errors import LocalStackError

MiB = 1024 * 1024
LAYER_MIB = 96

# Run in a child so that its peak resident memory is the load's alone, not the test worker's.
MEASURE = """
import json, resource, sys
from pathlib import Path
from potluck.localstack.default_image import config_digest, image_config, load_rootfs
url, tarball, arch, tag = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
config = image_config(tarball, "test-key", arch)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
load_rootfs(url, tarball, config, tag)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"grown_kib": after - before, "image_id": config_digest(config)}))
"""


@pytest.fixture
def tag(docker_engine: DockerEngine) -> Iterator[str]:
    name = f"potluck-load-test:{uuid.uuid4().hex[:8]}"
    yield name
    engine_request(docker_engine.url, "DELETE", f"/images/{name}?force=1")


def _arch(url: str) -> str:
    status, body = engine_request(url, "GET", "/version")
    assert status == 200, body
    return str(json.loads(body)["Arch"])


def _rootfs(tmp_path: Path) -> Path:
    """A tarball of a root filesystem holding one file of LAYER_MIB MiB."""
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    with (root / "data" / "big").open("wb") as big:
        big.truncate(LAYER_MIB * MiB)
    tarball = tmp_path / "rootfs.tar"
    with tarfile.open(tarball, "w") as archive:
        archive.add(root, arcname=".")
    return tarball


def test_a_root_filesystem_is_loaded_as_it_is_read_not_held_in_memory(
    docker_engine: DockerEngine, tmp_path: Path, tag: str
) -> None:
    """Tried: loading a 96 MiB root filesystem. Must hold: the engine has the image, with the id
    its configuration names and all of the layer, and the loading process's peak memory grew by
    far less than the layer (it grew by twice the layer when the archive was built in memory)."""
    tarball = _rootfs(tmp_path)
    measured = subprocess.run(
        [sys.executable, "-c", MEASURE, docker_engine.url, str(tarball), _arch(docker_engine.url), tag],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert measured.returncode == 0, measured.stderr
    answer = json.loads(measured.stdout)
    assert answer["grown_kib"] * 1024 < tarball.stat().st_size // 4, answer

    status, body = engine_request(docker_engine.url, "GET", f"/images/{tag}/json")
    assert status == 200, body
    image = json.loads(body)
    assert image["Id"] == answer["image_id"]
    assert image["Size"] >= LAYER_MIB * MiB


def test_a_file_that_is_no_tarball_is_refused_by_name_and_tags_nothing(
    docker_engine: DockerEngine, tmp_path: Path, tag: str
) -> None:
    """Tried: loading a "root filesystem" of random bytes. Must hold: LocalStackError naming the
    tag and the engine, and no image under that tag afterwards."""
    garbage = tmp_path / "rootfs.tar"
    garbage.write_bytes(b"not a tar archive\n" * 4096)
    config = image_config(garbage, "test-key", _arch(docker_engine.url))
    assert config_digest(config).startswith("sha256:")

    with pytest.raises(LocalStackError, match=f"loading {tag} into {docker_engine.url}"):
        load_rootfs(docker_engine.url, garbage, config, tag)

    status, _ = engine_request(docker_engine.url, "GET", f"/images/{tag}/json")
    assert status == 404
