"""The helper every container gets: this machine's static busybox, read-only at /.potluck/busybox.

Some of what hostd does inside a container must not depend on the image:
an interactive allocation (no command) has to stay up whatever the image's
CMD is (a shell with no terminal exits at once), and file transfers must
work in an image that has no sftp-server, scp or rsync. A static busybox
needs nothing from the image (no libc, no loader), so it is bind-mounted
into every container at `HELPER_PATH` and `KEEP_ALIVE` runs from it.

Why this cannot give anything away: the mount is read-only (the container
cannot change the binary the next container runs), and so is the directory
it sits in (`HELPER_DIR`, a read-only tmpfs of its own): in a plain directory
of the container's layer, root in the container renamed the directory away
(the bind moves with it) and put a program of its own at `HELPER_PATH`, which
hostd's next keep-alive, file transfer or launcher then ran as the helper; a
mount point cannot be renamed or removed, and nothing can be added beside it
on a read-only file system. The file must be owned
by root, writable by nobody else and without setuid/setgid bits (checked
here before it is offered; no-new-privileges would void them anyway), and
busybox runs with the container's own user, capabilities and seccomp
profile, like anything the image brings. Debian's `busybox-static` provides
it (ops/setup installs it); without one, containers get no helper and an
interactive allocation runs its image's CMD as before, with a warning.
"""

import stat
from pathlib import Path

import structlog

from potluck.kernel.elf import is_static_elf

__all__ = ["HELPER_DIR", "HELPER_PATH", "KEEP_ALIVE", "find_helper"]

log = structlog.get_logger(__name__)

#: The directory of the helper inside each container, a read-only file system of its own.
HELPER_DIR = "/.potluck"
#: Where the helper appears inside each container.
HELPER_PATH = HELPER_DIR + "/busybox"
#: What an interactive allocation runs: nothing but waiting to be released or to expire.
KEEP_ALIVE = [HELPER_PATH, "sleep", "infinity"]
#: Where Debian's busybox-static puts it.
CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


def _refusal(path: Path) -> str | None:
    """Why `path` may not be offered to containers; None if it may."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # before opening it: a FIFO's open would wait
            return "not a regular file"
        with path.open("rb") as binary:
            head = binary.read(65536)
    except OSError as exc:
        return f"unreadable ({exc})"
    if info.st_mode & (stat.S_ISUID | stat.S_ISGID):
        return "setuid or setgid"
    if info.st_uid != 0 or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "not owned by root, or writable by others"
    if not info.st_mode & stat.S_IXOTH:
        return "not executable by every user"
    if not is_static_elf(head):
        return "not a static executable (the dynamic busybox package?)"
    return None


def find_helper(candidates: tuple[str, ...] = CANDIDATES) -> str | None:
    """The path (on this machine) of a static busybox that containers may get; None if none is."""
    for candidate in candidates:
        path = Path(candidate).resolve()
        why = _refusal(path)
        if why is None:
            return str(path)
        log.debug("helper.refused", path=str(path), why=why)
    log.warning(
        "helper.missing",
        tried=list(candidates),
        hint="install busybox-static (ops/setup does): without it interactive allocations run their "
        "image's CMD and images without an sftp-server get no SFTP",
    )
    return None
