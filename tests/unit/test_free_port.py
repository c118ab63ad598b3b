"""free_port never hands out a port twice in one process, nor one another process on this
machine handed out a moment ago (real sockets on loopback, real processes).

A NATS cluster picks its nodes' client, route and monitoring ports before it starts any of
them; a random pick that came up twice gave two nodes one port, and the second node failed
with "address already in use" (a full suite's run on 2026-12-02).
"""

import json
import os
import random
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from potluck.localstack import ports
from potluck.localstack.ports import BROWSERS_REFUSE, free_port
from potluck.up import summary
from potluck.up_state import Running


def test_ports_picked_before_any_is_bound_are_all_different_and_free() -> None:
    """Tried: 3,000 picks with none of them bound, as a caller that starts servers later would.
    Must hold: no port comes twice, and the last one given can still be bound."""
    picked = [free_port() for _ in range(3000)]
    assert len(set(picked)) == len(picked)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", picked[-1]))


def test_a_port_another_process_picked_is_not_handed_out_before_its_server_binds_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tried: another Python process picks 200 ports and binds none (as a test picks `potluck
    up`'s ports before that pool starts); here, the random pick comes up each of them in turn.
    Must hold: none of them is handed out here, though each can still be bound (a full suite's
    run, 2026-12-06: another test's server took a pool's NATS port between its pick and its
    start, and nats-server exited)."""
    picked_elsewhere = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import json; from potluck.localstack import free_port;"
                "print(json.dumps([free_port() for _ in range(200)]))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    forced, real = iter(picked_elsewhere), random.randint
    monkeypatch.setattr(random, "randint", lambda low, high: next(forced, None) or real(low, high))
    mine = {free_port() for _ in range(50)}
    assert not mine & set(picked_elsewhere)
    assert next(forced, None) is None, "every port the other process picked was tried here"


def test_a_link_in_place_of_the_shared_directory_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tried: the directory where processes record their picks is a link another user made to a
    directory of theirs (here one with mode 0700).
    Must hold: free_port does not write there nor chmod it (a root process would have made it
    world-writable), and still hands out ports (this process's own record)."""
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    link = tmp_path / "potluck-ports"
    link.symlink_to(target)
    monkeypatch.setattr(ports, "_RESERVATIONS", link)
    ports._reservations.cache_clear()
    try:
        picked = {free_port() for _ in range(20)}
    finally:
        ports._reservations.cache_clear()
    assert len(picked) == 20
    assert os.listdir(target) == []
    assert target.stat().st_mode & 0o7777 == 0o700


def test_a_port_browsers_refuse_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tried: the random pick comes up 10080 (Chromium refuses it: ERR_UNSAFE_PORT; a full suite's
    web tests all failed on a pool given it, 2026-12-03) twice, then as it would. Must hold: a
    later pick is handed out, and no port browsers refuse is ever among thousands of picks."""
    forced, real = iter([10080, 10080]), random.randint
    # Then real picks: a fixed other port could be one another test's server holds.
    monkeypatch.setattr(random, "randint", lambda low, high: next(forced, None) or real(low, high))
    assert free_port() not in BROWSERS_REFUSE
    monkeypatch.undo()
    assert not {free_port() for _ in range(3000)} & BROWSERS_REFUSE


def test_potluck_up_says_when_its_web_page_is_on_a_port_browsers_refuse() -> None:
    """Tried: `potluck up --api-port 10080` (the API answers there; no browser opens the page),
    and the default 8080. Must hold: the summary's web page line says what to do for the first
    and nothing more for the second."""
    ready = Running(1, "http://127.0.0.1:10080", "", "", "", "", "", "", "", "")
    [line] = [x for x in summary(ready) if x.startswith("web page")]
    assert "browsers refuse port 10080" in line
    assert "--api-port" in line
    [line] = [x for x in summary(replace(ready, api="http://127.0.0.1:8080")) if x.startswith("web page")]
    assert line == "web page        http://127.0.0.1:8080/"
