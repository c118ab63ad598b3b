"""How hostd reads a kept (or running) container for a session, without servers: the chunked
answers of the engine decoded across any cut, and the reserved session commands parsed.

What must hold: a chunked body gives back exactly its bytes however the reads cut it (size
lines, payloads and their CRLFs split anywhere), and is done after its last chunk; a bad size
is an ExecError. `potluck-logs` and `potluck-archive get PATH` are recognised with their
options; anything else is left to run in the container; a malformed reserved command is
refused with its usage.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.hostd.container_logs import LogsRequest
from potluck.hostd.engine_stream import ChunkDecoder
from potluck.hostd.exec_errors import ExecError, ExecRefused
from potluck.hostd.reserved_commands import ArchiveGet, ArchivePut, reserved_command


def chunked(pieces: list[bytes]) -> bytes:
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces if p) + b"0\r\n\r\n"


@given(st.lists(st.binary(max_size=300), max_size=8), st.lists(st.integers(1, 64), min_size=1))
def test_a_chunked_body_comes_back_whole_however_it_is_cut(pieces: list[bytes], cuts: list[int]) -> None:
    body = chunked(pieces)
    decoder = ChunkDecoder()
    out, pos, i = b"", 0, 0
    while pos < len(body):
        step = cuts[i % len(cuts)]
        out += b"".join(decoder.feed(body[pos : pos + step]))
        pos, i = pos + step, i + 1
    assert out == b"".join(pieces)
    assert decoder.done


def test_a_bad_chunk_size_is_an_error() -> None:
    with pytest.raises(ExecError):
        ChunkDecoder().feed(b"zz\r\nhello\r\n")


def test_reserved_commands_are_recognised_and_others_left_alone() -> None:
    assert reserved_command("potluck-logs") == LogsRequest()
    assert reserved_command("potluck-logs --follow --tail 5") == LogsRequest(follow=True, tail=5)
    assert reserved_command("potluck-logs -f") == LogsRequest(follow=True)
    assert reserved_command("potluck-archive get '/out dir'") == ArchiveGet("/out dir")
    assert reserved_command("potluck-archive put 8192 '/in dir/' a.bin") == ArchivePut(
        8192, "/in dir/", "a.bin"
    )
    path = LogsRequest(follow=True, tail=2).path("c1")
    assert path == "/containers/c1/logs?stdout=1&stderr=1&follow=1&tail=2"
    for other in (None, "", "ls -l", "sh -c 'potluck-logs'", "echo 'unclosed"):
        assert reserved_command(other) is None


@pytest.mark.parametrize(
    "command",
    [
        "potluck-logs --bogus",
        "potluck-logs --tail -1",
        "potluck-archive",
        "potluck-archive put /x",
        "potluck-archive put -5 /x a",
        "potluck-archive put 5 /x a/b",
        "potluck-archive put 5 /x ..",
        # Digits str.isdigit() takes and int() does not ("²"), or reads as another number ("٣").
        "potluck-archive put \u00b2 /x a",
        "potluck-archive put \u0663 /x a",
    ],
)
def test_a_malformed_reserved_command_is_refused_with_its_usage(command: str) -> None:
    with pytest.raises(ExecRefused, match="usage"):
        reserved_command(command)
