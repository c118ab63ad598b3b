"""hostd's memory of a connection cap (services/hostd/shut_out.py): while the registry has this
machine's key shut out of NATS, refusals are no revocation, in this run and in one started
during the cap."""

import json
import time
from pathlib import Path

from potluck.hostd.shut_out import FILE_NAME, SHUT_OUT_MARGIN_S, ShutOut


def test_a_cap_noticed_holds_for_its_length_and_a_restart_keeps_to_it(tmp_path: Path) -> None:
    """Tried: a cap of 60 s noticed, then a new ShutOut on the same state directory (hostd
    restarted). Must hold: both give the reason; the saved window is the cap's length plus the
    margin, on the wall clock."""
    first = ShutOut(tmp_path)
    assert first.reason() is None
    before = time.time()
    first.noticed(60.0, "capped: 200 connections")
    assert first.reason() == "capped: 200 connections"
    saved = json.loads((tmp_path / FILE_NAME).read_text())
    assert before + 60.0 + SHUT_OUT_MARGIN_S <= saved["until_unix"] <= time.time() + 60.0 + SHUT_OUT_MARGIN_S
    restarted = ShutOut(tmp_path)
    restarted.load()
    assert restarted.reason() == "capped: 200 connections"


def test_a_window_that_ended_or_a_file_that_is_no_window_excuses_nothing(tmp_path: Path) -> None:
    """Tried: loading a window that ended a second ago, then a file that is not JSON, then one
    without the fields. Must hold: no reason in any case (a refused key counts as usual)."""
    file = tmp_path / FILE_NAME
    for text in (json.dumps({"until_unix": time.time() - 1, "why": "old"}), "not json", "{}"):
        file.write_text(text)
        shut_out = ShutOut(tmp_path)
        shut_out.load()
        assert shut_out.reason() is None, text
