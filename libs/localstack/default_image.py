"""The image `potluck up` offers users: a shell and Python.

Pulled where a registry answers; otherwise built here from Debian's own
packages (debootstrap, minbase plus python3) and loaded with `docker import`.
The root filesystem tarball is cached, so only the first build pays for the
download.
"""

import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from potluck.localstack.errors import LocalStackError
from potluck.localstack.test_image import image_exists, import_rootfs

DEFAULT_IMAGE = "potluck-default:latest"
PULL_CANDIDATE = "python:3.11-slim-bookworm"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "potluck"


def _pull(docker_url: str) -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    pulled = subprocess.run(
        [docker, "-H", docker_url, "pull", "-q", PULL_CANDIDATE],
        capture_output=True,
        timeout=120,
        check=False,
    )
    if pulled.returncode != 0:
        return False
    tagged = subprocess.run(
        [docker, "-H", docker_url, "tag", PULL_CANDIDATE, DEFAULT_IMAGE], capture_output=True, check=False
    )
    return tagged.returncode == 0


def _rootfs_tarball(say: Callable[[str], None]) -> Path:
    tarball = cache_dir() / f"rootfs-{SUITE}-python3.tar"
    if tarball.exists():
        return tarball
    debootstrap = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None
    )
    if debootstrap is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise LocalStackError(
                "no registry answers and debootstrap is missing: install debootstrap "
                "(apt-get install debootstrap) or pull an image with a shell and Python"
            )
        say("installing debootstrap")
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "debootstrap"],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            check=True,
            capture_output=True,
        )
        debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="potluck-rootfs-") as tmp:
        root = Path(tmp) / "root"
        say(f"building a Debian {SUITE} root filesystem with Python (debootstrap; a minute or two, once)")
        built = subprocess.run(
            [debootstrap, "--variant=minbase", "--include=python3", SUITE, str(root), MIRROR],
            capture_output=True,
            text=True,
            check=False,
        )
        if built.returncode != 0:
            raise LocalStackError(f"debootstrap failed:\n{built.stdout[-2000:]}{built.stderr[-2000:]}")
        shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
        partial = tarball.with_suffix(".partial")
        with tarfile.open(partial, "w") as archive:
            archive.add(root, arcname=".")
        partial.replace(tarball)
    return tarball


def ensure_default_image(docker_url: str, say: Callable[[str], None] = lambda _: None) -> str:
    """The default image's tag, made available on the engine at `docker_url`."""
    if image_exists(docker_url, DEFAULT_IMAGE):
        return DEFAULT_IMAGE
    say(f"trying to pull {PULL_CANDIDATE}")
    if _pull(docker_url):
        return DEFAULT_IMAGE
    tarball = _rootfs_tarball(say)
    say(f"loading {DEFAULT_IMAGE} into the Docker engine")
    import_rootfs(
        docker_url,
        tarball.read_bytes(),
        DEFAULT_IMAGE,
        changes=[
            'CMD ["/bin/bash"]',
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ],
    )
    return DEFAULT_IMAGE
