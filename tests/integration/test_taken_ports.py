"""A server we start on a port another program took first is named as that program's failure,
not taken for ours (real nats-server, Postgres and sockets on loopback).

A full suite's run (2026-12-06): `potluck up` started nats-server on the port it was given, some
other test's server had taken it meanwhile, nats-server exited with "address already in use"
while the other server answered there, and `potluck up` went on until reloading NATS failed with
"nats-server is not running", naming nothing that said why.
"""

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from potluck.localstack import LocalStackError, NatsServer, PostgresServer, free_port
from potluck.localstack.ports import descends_from, listening_pids


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port this test process listens on, as another program would."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", free_port()))
        listener.listen()
        yield int(listener.getsockname()[1])


def test_nats_server_on_a_taken_port_names_the_program_that_holds_it(tmp_path: Path, taken_port: int) -> None:
    """Tried: NatsServer.start() on a port this test process listens on.
    Must hold: start() fails at once (before, it returned: the port accepted), naming this
    process by its PID as the one that holds the port and saying what to do, with nats-server's
    own line from its log; nats-server is not left running; the port is still this process's."""
    nats = NatsServer(tmp_path / "nats", port=taken_port)
    with pytest.raises(LocalStackError) as refused:
        nats.start()
    said = str(refused.value)
    assert f"port {taken_port} on 127.0.0.1 is taken by another program (pid {os.getpid()} " in said
    assert "stop that program or give nats-server another port" in said
    assert "address already in use" in said
    assert not nats.running()
    assert listening_pids(taken_port) == {os.getpid()}


def test_a_server_that_stops_before_listening_says_so_with_its_reload_naming_its_log(
    tmp_path: Path, taken_port: int
) -> None:
    """Tried: reload() of a NatsServer whose start failed on a taken port (what `potluck up` did
    next before).
    Must hold: the error gives nats-server's exit code and the end of its log, which says why."""
    nats = NatsServer(tmp_path / "nats", port=taken_port)
    with pytest.raises(LocalStackError):
        nats.start()
    with pytest.raises(LocalStackError) as refused:
        nats.reload()
    said = str(refused.value)
    assert "nats-server is not running (exit code 1)" in said
    assert "address already in use" in said


def test_postgres_on_a_taken_port_names_the_program_that_holds_it(tmp_path: Path, taken_port: int) -> None:
    """Tried: PostgresServer.start() on a port this test process listens on.
    Must hold: it fails naming this process as the holder, with Postgres's own log lines; the
    postmaster is gone (its PID no longer in /proc)."""
    postgres = PostgresServer(tmp_path / "pg", port=taken_port, durable=False)
    try:
        with pytest.raises(LocalStackError) as refused:
            postgres.start()
        said = str(refused.value)
        assert f"port {taken_port} on 127.0.0.1 is taken by another program (pid {os.getpid()} " in said
        assert "could not bind" in said
        assert postgres.pid is not None
        assert not Path(f"/proc/{postgres.pid}").exists()
    finally:
        postgres.stop()


def test_a_server_listening_on_its_own_port_is_found_as_ours(tmp_path: Path) -> None:
    """Tried: nats-server started on a free port; who listens there looked up through /proc.
    Must hold: exactly nats-server's PID, which descends from this test process (it started it);
    this process does not descend from nats-server."""
    nats = NatsServer(tmp_path / "nats")
    nats.start()
    try:
        assert nats.pid is not None
        assert listening_pids(nats.port) == {nats.pid}
        assert descends_from(nats.pid, os.getpid())
        assert not descends_from(os.getpid(), nats.pid)
    finally:
        nats.stop()
