"""The image `potluck up` offers users: what a data user expects, built here from apt's own sources.

Debian's minbase (debootstrap) plus `PACKAGES`: an SFTP server, scp's remote
side (openssh-client has /usr/bin/scp, which `scp -O` runs as `scp -t`),
rsync, tar, ca-certificates, python3 with pip and venv, git and curl. Nothing
is pulled from a registry (none may be reachable): the packages come from
the archive this machine's apt already uses (apt_sources.py reads its
sources lists, and its proxy), and the root filesystem is loaded with
`docker import`.

The tarball is cached under the user's cache folder (`cache_dir()`) with a
name that changes with the suite and the package list, so only the first
build pays for the download (a few minutes), and a changed list builds anew.
The image carries the same key in `POTLUCK_IMAGE_KEY`: an engine holding an
older build of the tag gets the new one.
"""

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from potluck.localstack.apt_sources import apt_proxies, machine_archive, machine_suite
from potluck.localstack.docker_engine import engine_request
from potluck.localstack.errors import LocalStackError
from potluck.localstack.test_image import import_rootfs

__all__ = ["DEFAULT_IMAGE", "PACKAGES", "cache_dir", "ensure_default_image", "image_key", "rootfs_tarball"]

DEFAULT_IMAGE = "potluck-default:latest"
PACKAGES = (
    "openssh-sftp-server", "openssh-client", "rsync", "tar", "ca-certificates",
    "python3", "python3-pip", "python3-venv", "git", "curl",
)  # fmt: skip
FALLBACK_SUITE = "bookworm"
KEY_VARIABLE = "POTLUCK_IMAGE_KEY"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "potluck"


def image_key(suite: str, packages: tuple[str, ...] = PACKAGES) -> str:
    """Names one build: a new suite or package list is a new key, so a new tarball and image."""
    digest = hashlib.sha256("\n".join([suite, *sorted(packages)]).encode()).hexdigest()
    return f"{suite}-{digest[:12]}"


def _debootstrap(say: Callable[[str], None]) -> str:
    found = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None
    )
    if found is not None:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise LocalStackError(
            "building the default image needs debootstrap: install it (apt-get install debootstrap; "
            "ops/setup does) or build potluck-default:latest yourself"
        )
    say("installing debootstrap")
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "debootstrap"],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        check=True,
        capture_output=True,
    )
    return shutil.which("debootstrap") or "/usr/sbin/debootstrap"


def rootfs_tarball(say: Callable[[str], None] = lambda _: None) -> tuple[Path, str]:
    """The cached root filesystem tarball and its key, built first if it is not there."""
    suite = machine_suite() or FALLBACK_SUITE
    key = image_key(suite)
    tarball = cache_dir() / f"rootfs-{key}.tar"
    if tarball.exists():
        return tarball, key
    tarball.parent.mkdir(parents=True, exist_ok=True)
    # One build at a time per key: two builders (`potluck up` while the tests run, two test
    # workers) would write the same .partial file. Whoever waited finds the tarball built.
    with tarball.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tarball.exists():
            _build_rootfs(tarball, suite, say)
    return tarball, key


def _build_rootfs(tarball: Path, suite: str, say: Callable[[str], None]) -> None:
    archive = machine_archive(suite)
    if archive is None:
        raise LocalStackError(
            f"no `deb` entry for suite {suite} in /etc/apt/sources.list or /etc/apt/sources.list.d/: "
            "the default image is built from the packages this machine's apt uses; add one "
            f"(e.g. `deb http://registry.example.org/debian {suite} main`) or build "
            f"{DEFAULT_IMAGE} yourself"
        )
    debootstrap = _debootstrap(say)
    argv = [debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}"]
    if archive.keyring is not None and Path(archive.keyring).is_file():
        argv.append(f"--keyring={archive.keyring}")
    with tempfile.TemporaryDirectory(prefix="potluck-rootfs-") as tmp:
        root = Path(tmp) / "root"
        say(f"building a Debian {suite} root filesystem from {archive.uri} (debootstrap; minutes, once)")
        built = subprocess.run(
            [*argv, suite, str(root), archive.uri],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, **apt_proxies()},
        )
        if built.returncode != 0:
            raise LocalStackError(f"debootstrap failed:\n{built.stdout[-2000:]}{built.stderr[-2000:]}")
        shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
        shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
        (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial")
        with tarfile.open(partial, "w") as archive_file:
            archive_file.add(root, arcname=".")
        partial.replace(tarball)


def _engine_key(docker_url: str) -> str | None:
    """The key of the engine's DEFAULT_IMAGE; "" for an image without one; None if it has none."""
    status, body = engine_request(docker_url, "GET", f"/images/{DEFAULT_IMAGE}/json")
    if status == 404:
        return None
    if status != 200:
        raise LocalStackError(
            f"GET /images/{DEFAULT_IMAGE}/json on {docker_url} answered {status}: {body[:300]!r}"
        )
    env = (json.loads(body).get("Config") or {}).get("Env") or []
    for item in env:
        name, _, value = str(item).partition("=")
        if name == KEY_VARIABLE:
            return value
    return ""


def ensure_default_image(docker_url: str, say: Callable[[str], None] = lambda _: None) -> str:
    """The default image's tag, made available (this build of it) on the engine at `docker_url`."""
    wanted = image_key(machine_suite() or FALLBACK_SUITE)
    try:
        have = _engine_key(docker_url)
    except OSError as exc:
        raise LocalStackError(
            f"cannot reach the Docker engine at {docker_url}: {exc}; start it first"
        ) from exc
    if have == wanted:
        return DEFAULT_IMAGE
    tarball, key = rootfs_tarball(say)
    say(f"loading {DEFAULT_IMAGE} into the Docker engine")
    import_rootfs(
        docker_url,
        tarball.read_bytes(),
        DEFAULT_IMAGE,
        changes=[
            'CMD ["/bin/bash"]',
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            f"ENV {KEY_VARIABLE}={key}",
        ],
    )
    return DEFAULT_IMAGE
