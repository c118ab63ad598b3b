"""One hostd to a state_dir (services/hostd/state_lock.py): the lock, its file and its message.

The real processes (a second `potluck hostd`, kill -9 of the first) are in
tests/e2e/test_hostd_state_lock.py; these hold the module's own promises.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from potluck.hostd.state_lock import LOCK_FILE, StateDirHeld, hold_state_dir, holder


def test_the_lock_is_taken_once_and_names_its_holder_to_the_second(tmp_path: Path) -> None:
    """Tried: the lock taken on a state_dir that does not exist yet, then taken again through
    another open file (as a second process would: flock conflicts per open file), then released
    and taken again.
    Must hold: the directory is made, the file holds this PID and is owner-only; the second
    take raises StateDirHeld at once naming the PID, the state_dir and what to do; once released
    the lock is free again."""
    state_dir = tmp_path / "state"
    held = hold_state_dir(state_dir)
    try:
        lock_file = state_dir / LOCK_FILE
        assert lock_file.read_text() == f"{os.getpid()}\n"
        assert lock_file.stat().st_mode & 0o777 == 0o600
        with pytest.raises(StateDirHeld) as refused:
            hold_state_dir(state_dir)
        assert refused.value.holder_pid == os.getpid()
        message = str(refused.value)
        assert f"another hostd (PID {os.getpid()})" in message
        assert str(state_dir) in message
        assert f"kill {os.getpid()}" in message
        assert lock_file.read_text() == f"{os.getpid()}\n"  # the refused take wiped nothing
    finally:
        held.release()
    again = hold_state_dir(state_dir)
    again.release()


def test_a_lock_file_left_by_a_killed_hostd_is_taken_over(tmp_path: Path) -> None:
    """Tried: a process takes the lock and is killed with SIGKILL (no clean-up of its own), its
    PID left in the file.
    Must hold: the next take succeeds (the kernel dropped the flock) and writes its own PID over
    the dead one's."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from potluck.hostd.state_lock import hold_state_dir; "
            f"hold_state_dir(Path({str(tmp_path)!r})); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StateDirHeld) as refused:
            hold_state_dir(tmp_path)
        assert refused.value.holder_pid == holder.pid
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
    assert (tmp_path / LOCK_FILE).read_text() == f"{holder.pid}\n"
    taken = hold_state_dir(tmp_path)
    try:
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    finally:
        taken.release()


@pytest.mark.parametrize("content", ["", "not a pid\n", "12345678901234\n"])
def test_a_holder_whose_pid_cannot_be_read_is_still_refused_and_named_as_unknown(
    tmp_path: Path, content: str
) -> None:
    """Tried: the lock held while its file holds no PID (its holder took it an instant ago) or
    something that is none.
    Must hold: the second take is refused all the same, with no made-up PID, saying how to find
    the holder."""
    held = hold_state_dir(tmp_path)
    try:
        (tmp_path / LOCK_FILE).write_text(content)
        with pytest.raises(StateDirHeld) as refused:
            hold_state_dir(tmp_path)
        assert refused.value.holder_pid is None
        assert "another hostd already runs" in str(refused.value)
        assert f"fuser {tmp_path / LOCK_FILE}" in str(refused.value)
    finally:
        held.release()


def test_the_holder_is_read_without_taking_the_lock(tmp_path: Path) -> None:
    """Tried: `holder` asked of a state_dir with no lock file, of one whose lock this process
    holds (twice, a take by a "hostd starting" in between), and of one whose lock was released
    (its PID left in the file).
    Must hold: None, then this PID and the time of the take, the take in between succeeding
    (asking took no lock), then None: a PID left in the file is no hostd running."""
    state_dir = tmp_path / "state"
    assert holder(state_dir) is None
    held = hold_state_dir(state_dir)
    try:
        found = holder(state_dir)
        assert found is not None
        assert found.pid == os.getpid()
        assert abs(found.since.timestamp() - (state_dir / LOCK_FILE).stat().st_mtime) < 1e-3
    finally:
        held.release()
    assert holder(state_dir) is None
    again = hold_state_dir(state_dir)  # asking took nothing a starting hostd needs
    again.release()
    assert (state_dir / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    assert holder(state_dir) is None
