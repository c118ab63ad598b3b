"""An exec's output stream: frames decoded however the reads cut them, the 101 head, early output, the end.

ExecStream is driven here by the bytes the engine would send (what its
transport hands `data_received`), with no connection: the engine's side is
covered by tests/e2e/test_ssh_through_hostd.py.
"""

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.hostd.exec_errors import ExecError
from potluck.hostd.exec_stream import FRAME_HEADER, ExecStream, FrameDecoder

UPGRADED = b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n"


def _frame(stream: int, payload: bytes) -> bytes:
    return FRAME_HEADER.pack(stream, len(payload)) + payload


def _merged(pieces: list[tuple[bytes, bool]]) -> list[tuple[bytes, bool]]:
    """Adjacent pieces of one stream joined, empty ones dropped: what a reader can tell apart."""
    out: list[tuple[bytes, bool]] = []
    for data, stderr in pieces:
        if not data:
            continue
        if out and out[-1][1] == stderr:
            out[-1] = (out[-1][0] + data, stderr)
        else:
            out.append((data, stderr))
    return out


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


class Recorder:
    """An ExecSink that keeps what it is given."""

    def __init__(self) -> None:
        self.data: list[tuple[bytes, bool]] = []
        self.eofs = 0
        self.pauses = 0
        self.resumes = 0

    def exec_data(self, data: bytes, stderr: bool) -> None:
        assert self.eofs == 0, "output after the end"
        self.data.append((data, stderr))

    def exec_eof(self) -> None:
        self.eofs += 1

    def exec_pause(self) -> None:
        self.pauses += 1

    def exec_resume(self) -> None:
        self.resumes += 1


# Frames.

_FRAMES = st.lists(st.tuples(st.sampled_from([1, 2]), st.binary(max_size=40)), max_size=12)


@given(_FRAMES, st.lists(st.integers(min_value=0), max_size=20))
def test_frames_decode_the_same_however_the_reads_cut_them(
    frames: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    wire = b"".join(_frame(stream, payload) for stream, payload in frames)
    decoder = FrameDecoder()
    pieces = [piece for chunk in _cut(wire, cuts) for piece in decoder.feed(chunk)]
    assert all(data for data, _ in pieces), "an empty piece was handed on"
    assert _merged(pieces) == _merged([(payload, stream == 2) for stream, payload in frames])


def test_a_frame_is_handed_on_in_pieces_as_it_arrives() -> None:
    decoder = FrameDecoder()
    wire = _frame(1, b"hello world")
    assert decoder.feed(wire[:3]) == []
    assert decoder.feed(wire[3:11]) == [(b"hel", False)]
    assert decoder.feed(wire[11:]) == [(b"lo world", False)]


def test_stream_2_is_stderr_and_the_others_stdout() -> None:
    decoder = FrameDecoder()
    wire = _frame(2, b"err") + _frame(1, b"out") + _frame(0, b"in?")
    assert decoder.feed(wire) == [(b"err", True), (b"out", False), (b"in?", False)]


# The upgraded connection.


async def test_output_that_came_with_the_101_is_kept_until_a_sink_is_attached() -> None:
    stream = ExecStream("e1", tty=False)
    stream.data_received(UPGRADED + _frame(1, b"motd\n") + _frame(2, b"warn\n"))
    async with asyncio.timeout(1):
        await stream.upgraded
    sink = Recorder()
    stream.attach(sink)
    stream.data_received(_frame(1, b"$ "))
    assert sink.data == [(b"motd\n", False), (b"warn\n", True), (b"$ ", False)]


async def test_a_head_that_arrives_in_pieces_is_read_whole() -> None:
    stream = ExecStream("e1", tty=True)
    sink = Recorder()
    stream.attach(sink)
    for byte in UPGRADED + b"\x1b[0mhi":
        stream.data_received(bytes([byte]))
    async with asyncio.timeout(1):
        await stream.upgraded
    assert b"".join(data for data, _ in sink.data) == b"\x1b[0mhi"
    assert all(not stderr for _, stderr in sink.data)


async def test_with_a_tty_the_bytes_pass_as_they_are() -> None:
    stream = ExecStream("e1", tty=True)
    sink = Recorder()
    stream.attach(sink)
    raw = _frame(2, b"looks like a frame")
    stream.data_received(UPGRADED + raw)
    assert sink.data == [(raw, False)]


async def test_an_answer_other_than_101_fails_the_start_with_the_engines_words() -> None:
    stream = ExecStream("e1", tty=False)
    sink = Recorder()
    stream.attach(sink)
    stream.data_received(b"HTTP/1.1 409 Conflict\r\nContent-Type: text/plain\r\n\r\ncontainer is paused\n")
    with pytest.raises(ExecError, match="exec start answered 409: container is paused"):
        await stream.upgraded
    assert sink.data == []


async def test_an_answer_that_is_not_http_fails_the_start() -> None:
    stream = ExecStream("e1", tty=False)
    stream.data_received(b"SSH-2.0-OpenSSH\r\n\r\n")
    with pytest.raises(ExecError, match="not HTTP"):
        await stream.upgraded


async def test_a_head_without_an_end_fails_the_start() -> None:
    stream = ExecStream("e1", tty=False)
    stream.data_received(b"HTTP/1.1 101 UPGRADED\r\n" + b"X: y\r\n" * 20_000)
    with pytest.raises(ExecError, match="no end of head"):
        await stream.upgraded


async def test_a_connection_lost_before_the_101_fails_the_start_and_ends_the_stream() -> None:
    stream = ExecStream("e1", tty=False)
    sink = Recorder()
    stream.attach(sink)
    stream.connection_lost(ConnectionResetError("reset"))
    with pytest.raises(ExecError, match="closed the stream"):
        await stream.upgraded
    assert sink.eofs == 1


async def test_the_end_reaches_the_sink_once_after_the_output_even_if_attached_late() -> None:
    stream = ExecStream("e1", tty=False)
    stream.data_received(UPGRADED + _frame(1, b"bye\n"))
    assert stream.eof_received() is False  # the transport closes itself
    stream.connection_lost(None)
    sink = Recorder()
    stream.attach(sink)
    assert sink.data == [(b"bye\n", False)]
    assert sink.eofs == 1


async def test_the_engine_sockets_flow_control_reaches_the_sink() -> None:
    stream = ExecStream("e1", tty=False)
    stream.pause_writing()  # before a sink: nothing to tell yet
    sink = Recorder()
    stream.attach(sink)
    stream.pause_writing()
    stream.resume_writing()
    assert (sink.pauses, sink.resumes) == (1, 1)
