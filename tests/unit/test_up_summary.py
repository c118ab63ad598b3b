"""What `potluck up` prints when the pool is up: the next commands work as printed."""

import subprocess
import sys
from pathlib import Path

import pytest

from potluck.up import summary
from potluck.up_state import Running

READY = Running(1, "http://127.0.0.1:8080", "", "", "", "127.0.0.1:2222", "img", "pl_x", "", "")


def test_next_commands_say_how_to_reach_potluck_from_a_shell_that_lacks_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Tried: the summary as `ops/up` prints it to a newcomer's shell, whose PATH does not hold
    the checkout's `.venv/bin` (before, every `potluck ...` line it printed then said "command not
    found"), then to a shell whose PATH holds it.
    Must hold: the first's next commands start with an `export PATH=...` line that, run by a
    shell, makes `potluck` that very command; the second's have no such line."""
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "potluck").is_file(), "ops/setup makes .venv/bin/potluck"
    monkeypatch.setenv("PATH", str(tmp_path))
    lines = summary(READY)
    after = lines[lines.index("next:") + 1 :]
    assert after[0].lstrip().startswith("export PATH="), lines
    assert after[1].lstrip().startswith("potluck login --url http://127.0.0.1:8080 --token pl_x")
    found = subprocess.run(
        ["/bin/sh", "-c", f"PATH=/usr/bin:/bin\n{after[0].strip()}\ncommand -v potluck"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(found).resolve() == (venv_bin / "potluck").resolve()

    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/bin:/bin")
    assert not [line for line in summary(READY) if "export PATH" in line]
