"""The bridge's parts that need no engine: a session's environment and signals, the ledger of sessions.

Everything that talks to an engine is in tests/e2e/test_ssh_through_hostd.py;
here an engine that is not there shows what is refused before any call and
what is kept for later when a call fails.
"""

import signal
from pathlib import Path

import pytest

from potluck.hostd.exec_bridge import ExecBridge, exec_env, signal_number
from potluck.hostd.exec_errors import ExecError, ExecRefused
from potluck.hostd.session_ledger import SessionLedger

NO_ENGINE = "unix:///nonexistent/docker.sock"


@pytest.mark.parametrize(
    ("name", "number"),
    [("INT", signal.SIGINT), ("SIGTERM", signal.SIGTERM), ("hup", signal.SIGHUP), ("USR2", signal.SIGUSR2)],
)
def test_ssh_signal_names_map_to_signals(name: str, number: int) -> None:
    assert signal_number(name) == number


@pytest.mark.parametrize("name", ["STOP", "CONT", "WINCH", "CHLD", "", "NOPE"])
def test_signals_a_session_may_not_send_have_no_number(name: str) -> None:
    assert signal_number(name) is None


def test_the_exec_gets_the_locale_the_user_sent_and_our_markers_only() -> None:
    forwarded = {
        "LANG": "fr_FR.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TRACEPARENT": "00-abc-def-01",
        "POTLUCK_ALLOC": "someone-else",
        "PATH": "/evil",
    }
    assert exec_env("a1", "s1", "xterm-256color", forwarded) == {
        "LANG": "fr_FR.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "xterm-256color",
        "POTLUCK_ALLOC": "a1",
        "POTLUCK_SESSION": "s1",
    }


def test_without_a_pty_or_a_session_id_there_is_no_term_and_no_session_marker() -> None:
    assert exec_env("a1", "", None, {}) == {"POTLUCK_ALLOC": "a1"}


# The ledger of running sessions.


def test_the_ledger_remembers_a_session_until_it_is_forgotten(tmp_path: Path) -> None:
    ledger = SessionLedger(tmp_path / "sessions")
    assert ledger.exec_ids() == []
    ledger.remember("e2", "c2")
    ledger.remember("e1", "c1")
    assert ledger.exec_ids() == ["e1", "e2"]
    assert ledger.container_of("e2") == "c2"
    ledger.forget("e2")
    ledger.forget("e2")  # twice is fine: the session ended two ways at once
    assert ledger.exec_ids() == ["e1"]
    assert SessionLedger(tmp_path / "sessions").exec_ids() == ["e1"], "not kept across runs"


def test_a_ledger_without_a_directory_keeps_nothing() -> None:
    ledger = SessionLedger(None)
    ledger.remember("e1", "c1")
    ledger.forget("e1")
    assert ledger.exec_ids() == []


async def test_an_orphan_whose_record_cannot_be_read_is_kept_for_the_next_start(tmp_path: Path) -> None:
    bridge = ExecBridge(NO_ENGINE, "host-1", state_dir=tmp_path)
    (tmp_path / "sessions" / "e1").mkdir(parents=True)  # not a file: reading it fails
    assert await bridge.reap_orphans() == 0
    assert bridge.sessions.exec_ids() == ["e1"]


async def test_nothing_left_behind_is_nothing_to_reap(tmp_path: Path) -> None:
    assert await ExecBridge(NO_ENGINE, "host-1", state_dir=tmp_path).reap_orphans() == 0
    assert await ExecBridge(NO_ENGINE, "host-1").reap_orphans() == 0


@pytest.mark.parametrize("alloc_id", ["", "../x", "a/b", "-rf", "a b", "x" * 200])
async def test_what_is_not_an_allocation_id_is_refused_before_any_call(alloc_id: str) -> None:
    with pytest.raises(ExecRefused, match="is not an allocation id"):
        await ExecBridge(NO_ENGINE, "host-1").container_for(alloc_id)


async def test_an_engine_that_is_not_there_is_an_error_for_the_log_not_a_refusal() -> None:
    with pytest.raises(ExecError) as caught:
        await ExecBridge(NO_ENGINE, "host-1", timeout=2).container_for("a1")
    assert not isinstance(caught.value, ExecRefused)
