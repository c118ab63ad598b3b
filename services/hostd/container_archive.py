"""`potluck-archive get PATH`: a file or directory of a container, as the tar `docker cp` reads.

`GET /containers/<id>/archive?path=PATH` works on a running container and on
a stopped one (a kept container, AllocationExited.kept_until): the engine
reads the container's filesystem itself, nothing runs in the container. The
tar goes to the session's stdout as it comes, with the channel's flow control
(engine_stream.py); its top entry is PATH's last name, as `tar -c -C
dirname basename` writes it (what `potluck cp` unpacks, with its own safe
filter). A PATH that is not there: a message on stderr, exit status 2.
"""

from urllib.parse import quote

import structlog

from potluck.hostd.engine_stream import EngineStream, StreamedProcess, open_stream
from potluck.hostd.exec_errors import ExecError

log = structlog.get_logger(__name__)

__all__ = ["MISSING_PATH", "open_archive"]

#: The exit status of a session asking for a path the container does not have.
MISSING_PATH = 2


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
