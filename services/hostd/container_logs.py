"""`potluck-logs`: a container's stdout and stderr, from the engine's log, to a session.

`GET /containers/<id>/logs?stdout=1&stderr=1[&follow=1][&tail=N]` works on a
running container and on a stopped one (a kept container, AllocationExited.kept_until).
The engine multiplexes the two streams in frames (exec_stream.FrameDecoder;
the containers run without a TTY); each payload goes to the session's stdout
or stderr as it comes, with the channel's flow control (engine_stream.py).
With `follow` the engine ends the answer when the container stops, and the
session ends then, exit status 0; without it, once the log so far is sent.

The log is bounded on the member's disk, as part of the allocation's disk: every
container is created with the json-file driver, `max-size` and `max-file` set
(container_config.py: ContainerSpec.log_config) and read back before it starts,
so `--tail` and the whole log are at most those files.
"""

from dataclasses import dataclass

from potluck.hostd.engine_stream import EngineStream, StreamedProcess, open_stream
from potluck.hostd.exec_errors import ExecError
from potluck.hostd.exec_stream import FrameDecoder

__all__ = ["LogsRequest", "open_logs"]


@dataclass(frozen=True)
class LogsRequest:
    follow: bool = False
    #: The last lines only; None: the whole log.
    tail: int | None = None

    def path(self, container_id: str) -> str:
        query = "stdout=1&stderr=1"
        if self.follow:
            query += "&follow=1"
        if self.tail is not None:
            query += f"&tail={self.tail}"
        return f"/containers/{container_id}/logs?{query}"


class _LogsStream(EngineStream):
    def __init__(self, request: LogsRequest, container_id: str, process: StreamedProcess) -> None:
        super().__init__(request.path(container_id), "the container's logs")
        self._frames = FrameDecoder()
        self._process = process

    def body_received(self, data: bytes) -> None:
        for piece, stderr in self._frames.feed(data):
            self._process.emit(piece, stderr)

    def body_ended(self) -> None:
        self._process.finish(0)

    def pause_writing(self) -> None:
        pass  # nothing is written after the request


async def open_logs(
    docker_url: str, container_id: str, request: LogsRequest, timeout: float
) -> StreamedProcess:
    """The container's logs streaming to a session (attach it next); ExecError if the engine refuses."""
    process = StreamedProcess("logs", container_id)
    stream = _LogsStream(request, container_id, process)
    status, message = await open_stream(docker_url, stream, timeout)
    if status != 200:
        raise ExecError(f"the container's logs: {status} {message}")
    process.transport = stream.transport
    return process
