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

The image is loaded (`docker load`) with an image configuration written here
from the tarball alone (its digest, its time, the key), so one build is one
image id on every engine of this machine. Its one layer, gzip-compressed, is
cached beside the tarball the first time the pool registry needs it
(`compressed_layer`): `potluck up` publishes the image from those files
(`default_image_files`) instead of having its engine compress 300 MB at every
start.
"""

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from potluck.localstack.apt_sources import apt_proxies, machine_archive, machine_suite
from potluck.localstack.docker_engine import engine_request
from potluck.localstack.errors import LocalStackError
from potluck.localstack.test_image import image_id

__all__ = [
    "DEFAULT_IMAGE",
    "PACKAGES",
    "ImageFiles",
    "cache_dir",
    "compressed_layer",
    "config_digest",
    "default_image_files",
    "ensure_default_image",
    "image_config",
    "image_key",
    "load_rootfs",
    "prune_older_builds",
    "rootfs_tarball",
]

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


def _cached_tarball(suite: str) -> tuple[Path, str]:
    """Where the root filesystem tarball of `suite` is cached (there or not), and its key."""
    key = image_key(suite)
    return cache_dir() / f"rootfs-{key}.tar", key


def rootfs_tarball(say: Callable[[str], None] = lambda _: None) -> tuple[Path, str]:
    """The cached root filesystem tarball and its key, built first if it is not there."""
    suite = machine_suite() or FALLBACK_SUITE
    tarball, key = _cached_tarball(suite)
    if tarball.exists():
        return tarball, key
    tarball.parent.mkdir(parents=True, exist_ok=True)
    # One build at a time per key: two builders (`potluck up` while the tests run, two test
    # workers) would write the same .partial file. Whoever waited finds the tarball built.
    with tarball.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tarball.exists():
            _build_rootfs(tarball, suite, say)
    prune_older_builds(key, say)
    return tarball, key


def prune_older_builds(key: str, say: Callable[[str], None] = lambda _: None) -> list[Path]:
    """Remove the cached files of every build but `key`'s (~450 MB each: a changed package list or
    suite would otherwise leave the last one on the user's disk for good); the files removed.

    A build whose lock another process holds (building or compressing it now) is left alone; one
    that is being read goes on reading: a removed file stays readable to whoever has it open."""
    removed: list[Path] = []
    others = {path.name.removeprefix("rootfs-").partition(".")[0] for path in cache_dir().glob("rootfs-*")}
    for other in sorted(others - {key}):
        lock_path = cache_dir() / f"rootfs-{other}.lock"
        # The lock file stays: a builder of `other` waiting on it then finds no tarball and builds
        # under the same lock, where a new lock file would let a second builder in beside it.
        with lock_path.open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            for path in sorted(cache_dir().glob(f"rootfs-{other}.*")):
                if path == lock_path:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    size = path.stat().st_size
                    path.unlink()
                    removed.append(path)
                    say(f"removed {path.name} ({size >> 20} MiB), an older build of {DEFAULT_IMAGE}")
    return removed


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


def _digest_file(path: Path) -> str:
    """`sha256:...` of the file at `path`."""
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(1 << 20):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def _saved_digest(saved: Path) -> str | None:
    """The `sha256:...` digest kept in the file `saved`; None when it holds none (or is missing)."""
    with contextlib.suppress(OSError):
        text = saved.read_text().strip()
        if text.startswith("sha256:") and len(text) == 71:
            return text
    return None


def _cached_digest(tarball: Path) -> str:
    """The tarball's digest (the layer's diff id), computed once and kept beside it."""
    saved = tarball.with_name(tarball.name + ".sha256")
    kept = _saved_digest(saved)
    if kept is not None:
        return kept
    digest = _digest_file(tarball)
    partial = saved.with_name(f"{saved.name}.{os.getpid()}.partial")
    partial.write_text(digest + "\n")
    partial.replace(saved)
    return digest


def _engine_arch(docker_url: str) -> str:
    status, body = engine_request(docker_url, "GET", "/version")
    if status != 200:
        raise LocalStackError(f"GET /version on {docker_url} answered {status}: {body[:300]!r}")
    return str(json.loads(body)["Arch"])


def image_config(tarball: Path, key: str, arch: str) -> bytes:
    """The default image's configuration for the engine's `arch`: the same bytes for one tarball,
    so the same image id on every load and in the registry."""
    created = datetime.fromtimestamp(int(tarball.stat().st_mtime), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": {
            "Cmd": ["/bin/bash"],
            "Env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                f"{KEY_VARIABLE}={key}",
            ],
        },
        "history": [{"created": created, "created_by": f"potluck: debootstrap --variant=minbase ({key})"}],
        "rootfs": {"type": "layers", "diff_ids": [_cached_digest(tarball)]},
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def config_digest(config: bytes) -> str:
    """The digest of an image configuration: the image's id, and the blob's name in a registry."""
    return f"sha256:{hashlib.sha256(config).hexdigest()}"


def _archive_pieces(tarball: Path, config: bytes, tag: str) -> tuple[int, Iterator[bytes]]:
    """`docker save`'s format around `tarball` as its one layer: the archive's size, and its
    bytes in pieces of a MiB, the tarball read as they are sent (a first `up`'s ~300 MB image
    never held in memory)."""
    config_name = f"{config_digest(config).removeprefix('sha256:')}.json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": ["layer/layer.tar"]}])
    head = io.BytesIO()
    with tarfile.open(fileobj=head, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in (("manifest.json", manifest.encode()), (config_name, config)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        layer = tarfile.TarInfo("layer/layer.tar")
        layer.size = tarball.stat().st_size
        tar.addfile(layer)  # its header only: the contents follow
        header_end = head.tell()
    # tarfile wrote the two end-of-archive blocks after the header: the layer goes in between.
    header = head.getvalue()[:header_end]
    tail = b"\0" * (-layer.size % tarfile.BLOCKSIZE + 2 * tarfile.BLOCKSIZE)

    def pieces() -> Iterator[bytes]:
        yield header
        sent = 0
        with tarball.open("rb") as layer_file:
            while sent < layer.size and (chunk := layer_file.read(min(1 << 20, layer.size - sent))):
                sent += len(chunk)
                yield chunk
        if sent != layer.size:  # the engine would read the trailer as the layer's last bytes
            raise LocalStackError(f"{tarball} shrank while it was loaded ({sent} of {layer.size} bytes)")
        yield tail

    return len(header) + layer.size + len(tail), pieces()


def load_rootfs(docker_url: str, tarball: Path, config: bytes, tag: str = DEFAULT_IMAGE) -> None:
    """`docker load` of the root filesystem `tarball` as the image `config` describes, tagged `tag`."""
    size, pieces = _archive_pieces(tarball, config, tag)
    status, answer = engine_request(
        docker_url,
        "POST",
        "/images/load?quiet=1",
        body=pieces,
        headers={"Content-Type": "application/x-tar", "Content-Length": str(size)},
        timeout=600.0,
    )
    if status != 200:
        raise LocalStackError(f"loading {tag} into {docker_url} answered {status}: {answer[:300]!r}")
    for line in answer.splitlines():
        if line.strip() and "error" in (message := json.loads(line)):
            raise LocalStackError(f"loading {tag} into {docker_url} failed: {message['error']}")


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
    load_rootfs(docker_url, tarball, image_config(tarball, key, _engine_arch(docker_url)))
    return DEFAULT_IMAGE


@dataclass(frozen=True)
class Blob:
    """A file the registry stores under its digest."""

    path: Path
    digest: str
    size: int


@dataclass(frozen=True)
class ImageFiles:
    """What makes the default image in a registry: its configuration and its compressed layer."""

    config: bytes
    layer: Blob


def compressed_layer(tarball: Path, say: Callable[[str], None] = lambda _: None) -> Blob:
    """The tarball gzip-compressed, as a registry stores the layer: made once, kept beside it."""
    packed = tarball.with_name(tarball.name + ".gz")
    saved = packed.with_name(packed.name + ".sha256")

    def found() -> Blob | None:
        digest = _saved_digest(saved)
        with contextlib.suppress(OSError):
            if digest is not None and packed.exists():
                return Blob(packed, digest, packed.stat().st_size)
        return None

    blob = found()
    if blob is not None:
        return blob
    with tarball.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        blob = found()
        if blob is not None:
            return blob
        say(f"compressing {DEFAULT_IMAGE}'s layer for the image registry (once; kept in {packed.parent})")
        partial = packed.with_name(packed.name + ".partial")
        digest = hashlib.sha256()
        # gzip (wbits 31) with no name and no time in its header: the same file for one tarball.
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        with partial.open("wb") as out, tarball.open("rb") as raw:
            while chunk := raw.read(1 << 20):
                data = compressor.compress(chunk)
                digest.update(data)
                out.write(data)
            data = compressor.flush()
            digest.update(data)
            out.write(data)
        partial.replace(packed)
        saved.write_text(f"sha256:{digest.hexdigest()}\n")
    blob = found()
    assert blob is not None  # just written
    return blob


def default_image_files(docker_url: str, say: Callable[[str], None] = lambda _: None) -> ImageFiles | None:
    """The files of the image DEFAULT_IMAGE names on the engine at `docker_url`, or None when that
    is not this build's image as `ensure_default_image` loads it (an older one, or one the operator
    built): then only the engine has it, and only the engine can push it."""
    tarball, key = _cached_tarball(machine_suite() or FALLBACK_SUITE)
    if not tarball.exists():  # the engine's image came from elsewhere: no minutes of debootstrap for it
        return None
    config = image_config(tarball, key, _engine_arch(docker_url))
    if image_id(docker_url, DEFAULT_IMAGE) != config_digest(config):
        return None
    return ImageFiles(config, compressed_layer(tarball, say))
