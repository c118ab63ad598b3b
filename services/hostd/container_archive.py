"""`potluck-archive get PATH`: a file or directory of a container, as the tar `docker cp` reads.

A running container's files are read inside it: the tar is written by `tar -c` run in the
container (the helper busybox's, helper.py, else the image's own), as the container's user,
in its mount namespace, like everything hostd's SFTP server does there (container_files.py),
so no path the container controls is ever resolved or mounted on the member's machine. The
engine's archive (`GET /containers/<id>/archive?path=PATH`) is not used for a running
container: before reading, the engine bind-mounts the container's mounts (its /etc/hosts,
/etc/resolv.conf, /etc/hostname and the helper) onto their places in the container's root
seen from the member's machine, in the engine's own mount namespace, resolving each place
first and mounting on it after. A process of the container's that swapped a directory of
that path for a symlink in between (`/etc` for a link to `/some/dir` of the member's) made
the engine, as root, create `resolv.conf` in that directory of the member's machine and mount
the container's writable file over it (seen on the engine's vfs driver, and possible on any
where the container may rename `/etc`: btrfs, zfs, overlayfs with redirect_dir).

A stopped container (a kept one, AllocationExited.kept_until) has nothing running that could
swap a path, and cannot be started while the engine reads it (the engine holds the
container's lock meanwhile): its files are the engine's archive, read by the engine itself.

Either way the tar goes to the session's stdout as it comes, with the channel's flow control
(engine_stream.py, or the exec's own stream); its top entry is PATH's last name, as `tar -c
-C dirname basename` writes it (what `potluck cp` unpacks, with its own safe filter), and
`PATH/.` is what the directory holds (top entry `.`). A PATH that is not there, or `PATH/`
naming a file: a message on stderr, exit status 2. `PATH/` naming a link to a directory is
refused from a running container the same way, saying to ask for `PATH/.` (busybox's tar
cannot name the link's target after the link, as the engine does).
"""

from urllib.parse import quote

import structlog

from potluck.hostd.engine_stream import EngineStream, StreamedProcess, open_stream
from potluck.hostd.exec_bridge import ExecBridge, SessionProcess
from potluck.hostd.exec_errors import ExecError
from potluck.hostd.helper import HELPER_PATH

log = structlog.get_logger(__name__)

__all__ = ["IN_CONTAINER", "MISSING_PATH", "open_archive", "open_archive_inside"]

#: The exit status of a session asking for a path the container does not have.
MISSING_PATH = 2

#: PATH ($1) as a tar on stdout, read in the container; $2 the helper busybox (empty: the
#: image's own tar). Paths are positional parameters, never spliced into the script.
IN_CONTAINER = r"""
B=$2; p=$1
t() { if [ -n "$B" ]; then "$B" tar "$@"; else tar "$@"; fi; }
missing() { echo "potluck: $p: no such file or directory in the allocation" >&2; exit 2; }
notdir() { echo "potluck: $p: not a directory in the allocation" >&2; exit 2; }
case $p in /*) d=$p;; *) d=/$p;; esac
case $d in
*/.)
  d=${d%.}
  if [ ! -d "$d" ]; then [ -e "${d%/}" ] && notdir; missing; fi
  cd -- "$d" || exit 2
  t -c -f - -- .; exit $?;;
*/)
  while case $d in */) [ "$d" != / ];; *) false;; esac; do d=${d%/}; done
  if [ "$d" = / ]; then cd / && { t -c -f - -- .; exit $?; }; exit 2; fi
  [ -e "$d" ] || missing
  [ -d "$d" ] || notdir
  if [ -L "$d" ]; then
    echo "potluck: $p: a link to a directory: ask for $d/. (what it holds)" >&2; exit 2
  fi;;
*)
  { [ -e "$d" ] || [ -L "$d" ]; } || missing;;
esac
name=${d##*/}; parent=${d%/*}; [ -n "$parent" ] || parent=/
cd -- "$parent" || exit 2
t -c -f - -- "$name"
"""


class _ArchiveStream(EngineStream):
    def __init__(self, container_id: str, path: str, process: StreamedProcess) -> None:
        super().__init__(
            f"/containers/{container_id}/archive?path={quote(path, safe='/')}", "the container's files"
        )
        self._process = process

    def body_received(self, data: bytes) -> None:
        self._process.emit(data)

    def body_ended(self) -> None:
        self._process.finish(0)

    def pause_writing(self) -> None:
        pass


async def open_archive(docker_url: str, container_id: str, path: str, timeout: float) -> StreamedProcess:
    """PATH's tar streaming to a session (attach it next); a missing PATH ends it at once with
    a message and MISSING_PATH; ExecError if the engine refuses otherwise."""
    process = StreamedProcess("archive", container_id)
    stream = _ArchiveStream(container_id, path, process)
    status, message = await open_stream(docker_url, stream, timeout)
    if status == 404:
        process.emit(f"potluck: {path}: no such file or directory in the allocation\n".encode(), stderr=True)
        process.finish(MISSING_PATH)
        return process
    if status == 500 and "not a directory" in message:
        # `PATH/` where PATH is a file: the engine's words name the file's place on the member's
        # disk (its data-root's overlay2/<id>/merged/...): logged, and the user told in ours.
        log.info(
            "archive.not_a_directory", container_id=container_id[:12], path=path[:256], message=message[:500]
        )
        process.emit(f"potluck: {path}: not a directory in the allocation\n".encode(), stderr=True)
        process.finish(MISSING_PATH)
        return process
    if status == 400:
        # The engine's words may name where the container's files are on the member's disk.
        log.info("archive.refused", container_id=container_id[:12], path=path[:256], message=message[:500])
        process.emit(f"potluck: {path}: cannot be read from the allocation\n".encode(), stderr=True)
        process.finish(MISSING_PATH)
        return process
    if status != 200:
        raise ExecError(f"the container's files at {path}: {status} {message}")
    process.transport = stream.transport
    return process


async def open_archive_inside(
    bridge: ExecBridge, alloc_id: str, path: str, *, helper: bool
) -> SessionProcess:
    """PATH's tar written by `tar -c` in the allocation's running container (module docstring);
    `helper`: the container has the helper busybox. ExecRefused when it no longer runs."""
    argv = [HELPER_PATH, "sh"] if helper else ["sh"]
    argv += ["-c", IN_CONTAINER, "potluck-archive", path, HELPER_PATH if helper else ""]
    return await bridge.open(alloc_id, argv, tty=False, env={})
