"""The engine's HTTP, the parts that need no engine: requests written, answers read, URLs understood."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.hostd import docker_http
from potluck.hostd.docker_http import dechunk, message, parse_head, request_bytes
from potluck.hostd.exec_errors import ExecError


def test_a_request_with_a_body_says_its_length_and_type() -> None:
    raw = request_bytes("POST", "/containers/c1/exec", {"Cmd": ["sh"]}, {"Connection": "close"})
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /containers/c1/exec HTTP/1.1"
    assert "Content-Type: application/json" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert "Connection: close" in lines
    assert json.loads(body) == {"Cmd": ["sh"]}


def test_a_request_without_a_body_has_no_type_and_length_0() -> None:
    raw = request_bytes("GET", "/version", None, {})
    assert raw == b"GET /version HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n"


def test_a_head_gives_the_status_and_the_headers_by_lower_case_name() -> None:
    status, headers = parse_head(
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nApi-Version:1.43\r\nnonsense"
    )
    assert status == 201
    assert headers == {"content-type": "application/json", "api-version": "1.43"}


@pytest.mark.parametrize("head", [b"", b"HTTP/1.1", b"HTTP/1.1 OK fine", b"SSH-2.0-OpenSSH_9.6"])
def test_a_head_that_is_not_http_is_an_exec_error(head: bytes) -> None:
    with pytest.raises(ExecError, match="not HTTP"):
        parse_head(head)


@given(st.lists(st.binary(min_size=1, max_size=50), max_size=8))
def test_a_chunked_body_is_put_back_together(chunks: list[bytes]) -> None:
    wire = (
        b"".join(b"%x;ext=1\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
        + b"0\r\nX-Trailer: 1\r\n\r\n"
    )
    assert dechunk(wire) == b"".join(chunks)


def test_a_chunked_body_cut_short_is_an_exec_error() -> None:
    with pytest.raises(ExecError, match="truncated"):
        dechunk(b"5\r\nhello\r\n")


def test_the_engines_message_is_read_from_a_json_error_or_taken_as_it_is() -> None:
    assert message({"message": "No such container: x"}) == "No such container: x"
    assert message("plain") == "plain"
    assert message(None) == "None"


async def test_a_url_that_is_neither_unix_nor_tcp_is_refused_before_any_connection() -> None:
    with pytest.raises(ExecError, match="unix:// or tcp://"):
        await docker_http.call("http://localhost:2375", "GET", "/version")


async def test_an_engine_that_does_not_answer_is_an_exec_error_naming_the_call() -> None:
    with pytest.raises(ExecError, match=r"GET /version on unix:///nonexistent/docker\.sock failed"):
        await docker_http.call("unix:///nonexistent/docker.sock", "GET", "/version", timeout=2)
