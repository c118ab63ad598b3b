"""hostd's signals for one session (session_controls.py): what it logs of a name it cannot deliver."""

import asyncio
from typing import Any

import pytest

from potluck.hostd import session_controls
from potluck.hostd.session_controls import MAX_SIGNAL_NAME, SessionControls
from tests.helpers import capture_module_log


class _EndedProcess:
    """A session's process that has ended: no signal reaches it."""

    exec_id = "0123456789abcdef"

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def signal(self, name: str) -> bool:
        self.asked.append(name)
        return False


async def test_an_undeliverable_signal_is_logged_with_its_name_cut_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tried: a signal named by 100,000 letters, then INT, to a process that has ended (the
    name is the user's: the gateway relays only short ones, and an older gateway relayed any).
    Before the fix hostd logged the name whole: a 100 KB line in the member's log.
    Must hold: both are asked for in order; one line is logged, naming at most
    MAX_SIGNAL_NAME characters of the first."""
    capture = capture_module_log(session_controls, monkeypatch)
    process = _EndedProcess()
    tasks: list[asyncio.Task[Any]] = []
    controls = SessionControls(process, lambda coro: tasks.append(asyncio.ensure_future(coro)))  # type: ignore[arg-type]
    controls.signal("Q" * 100_000)
    controls.signal("INT")
    await asyncio.gather(*tasks)
    assert [len(name) for name in process.asked] == [100_000, 3]
    logged = [e for e in capture.entries if e["event"] == "link.signal_not_delivered"]
    assert [e["signal"] for e in logged] == ["Q" * MAX_SIGNAL_NAME]
