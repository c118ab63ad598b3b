"""A tiny local image for tests, built without any registry.

The root filesystem is Debian's static busybox with a link for every applet
it has, a few empty mount points, and an /etc/passwd with root and nobody.
It is loaded with the engine's import endpoint (`docker import`), so nothing
is pulled: no registry can be reached where the tests run.
"""

import io
import json
import subprocess
import tarfile
import time
import urllib.parse
from pathlib import Path

from potluck.kernel.elf import is_static_elf
from potluck.localstack.docker_engine import engine_request
from potluck.localstack.errors import LocalStackError

DEFAULT_TAG = "potluck-test:latest"
BUSYBOX = Path("/bin/busybox")
# Applets the tests rely on, linked even if `busybox --list-full` should not name them.
REQUIRED_APPLETS = [
    "sh", "ls", "cat", "echo", "sleep", "dd", "head", "tail", "sha256sum", "id", "ps",
    "kill", "mkdir", "rm", "yes", "seq", "stat", "wc", "tr", "printf", "true", "false",
    "env", "stty", "tar", "md5sum", "grep", "sed", "awk", "find", "xargs", "touch",
    "hostname", "whoami", "uname", "du", "df", "mount", "nproc", "timeout", "base64",
]  # fmt: skip
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


def _applet_paths() -> list[str]:
    """Where each applet lives (bin/sh, usr/bin/env, ...), as busybox itself says."""
    result = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True, check=False)
    paths = {line.strip() for line in result.stdout.splitlines() if line.strip()}
    names = {path.rsplit("/", 1)[-1] for path in paths}
    paths.update(f"bin/{name}" for name in REQUIRED_APPLETS if name not in names)
    paths.discard("bin/busybox")
    return sorted(paths)


def rootfs_tarball() -> bytes:
    try:
        busybox = BUSYBOX.read_bytes()
    except OSError as exc:
        raise LocalStackError(f"cannot read {BUSYBOX} ({exc}): `apt-get install busybox-static`") from exc
    if not is_static_elf(busybox):
        raise LocalStackError(
            f"{BUSYBOX} is not a static executable, so it cannot run in an empty image: "
            "`apt-get install busybox-static` (it replaces the dynamic busybox)"
        )
    now = int(time.time())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:

        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, now
            tar.addfile(info)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, now
            tar.addfile(info, io.BytesIO(data))

        for directory in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root",
                          "home", "proc", "sys", "dev", "var", "run"):  # fmt: skip
            add_dir(directory)
        add_dir("tmp", 0o1777)
        add_dir("var/tmp", 0o1777)
        add_file("bin/busybox", busybox, 0o755)
        for path in _applet_paths():
            link = tarfile.TarInfo(path)
            link.type, link.linkname, link.mode, link.mtime = (
                tarfile.SYMTYPE,
                "/bin/busybox",
                0o777,
                now,
            )
            tar.addfile(link)
        add_file("etc/passwd", PASSWD.encode())
        add_file("etc/group", GROUP.encode())
        add_file("etc/hostname", b"potluck\n")
    return buffer.getvalue()


def image_exists(docker_url: str, tag: str) -> bool:
    status, body = engine_request(docker_url, "GET", f"/images/{urllib.parse.quote(tag)}/json")
    if status == 200:
        return True
    if status == 404:
        return False
    raise LocalStackError(f"GET /images/{tag}/json on {docker_url} answered {status}: {body[:300]!r}")


def image_id(docker_url: str, tag: str) -> str:
    """The id (`sha256:...`) of the image the engine holds as `tag`."""
    status, body = engine_request(docker_url, "GET", f"/images/{urllib.parse.quote(tag)}/json")
    if status != 200:
        raise LocalStackError(f"GET /images/{tag}/json on {docker_url} answered {status}: {body[:300]!r}")
    return str(json.loads(body)["Id"])


def import_rootfs(docker_url: str, tar: bytes, tag: str, *, changes: list[str]) -> str:
    """Load a root filesystem tarball as image `tag` (the engine's import, no registry)."""
    repo, colon, version = tag.rpartition(":")
    if not colon or "/" in version:  # no tag, or the colon was a registry's port
        repo, version = tag, "latest"
    query = [("fromSrc", "-"), ("repo", repo), ("tag", version)] + [("changes", c) for c in changes]
    try:
        status, body = engine_request(
            docker_url,
            "POST",
            "/images/create?" + urllib.parse.urlencode(query),
            body=tar,
            headers={"Content-Type": "application/x-tar"},
            timeout=600.0,
        )
    except OSError as exc:
        raise LocalStackError(
            f"cannot reach the Docker engine at {docker_url} to build {tag}: {exc}; start it first"
        ) from exc
    if status != 200:
        raise LocalStackError(f"importing {tag} into {docker_url} answered {status}: {body[:300]!r}")
    # The answer is a stream of JSON objects; a failure arrives as {"error": ...} with status 200.
    for line in body.splitlines():
        if line.strip() and "error" in (message := json.loads(line)):
            raise LocalStackError(f"importing {tag} into {docker_url} failed: {message['error']}")
    return tag


def build_test_image(docker_url: str, tag: str = DEFAULT_TAG) -> str:
    """Import the busybox image under `tag` unless the engine has it already; return `tag`."""
    try:
        if image_exists(docker_url, tag):
            return tag
    except OSError as exc:
        raise LocalStackError(
            f"cannot reach the Docker engine at {docker_url} to build {tag}: {exc}; start it first"
        ) from exc
    return import_rootfs(
        docker_url,
        rootfs_tarball(),
        tag,
        changes=["ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin", 'CMD ["/bin/sh"]'],
    )
