"""One hostd to a state_dir: an exclusive lock, held for the process's life.

Two hostds on one hostd.toml are easy to start (`potluck join --start` in a terminal while the
systemd unit runs the same configuration), and nothing stopped the second: it registered again,
started containers the first never heard of (no quota, throttle or disk guard applied to them
by the first), and reset the first's throttled quotas to the full share. Everything a hostd
keeps of its machine lives under its state_dir (host key, pool images, policy state, the hosts
file), so the state_dir is what must have one owner.

`fcntl.flock` rather than a PID file alone: the kernel drops a flock when the last descriptor of
the open file closes, so a hostd killed with SIGKILL, or a machine that lost power, leaves no
stale lock to be cleaned by hand, and a PID reused by another program cannot pass for a
holder. The PID written into the file is for the message only (who holds it, what to stop),
never for the decision. The descriptor is close-on-exec (Python's default), so neither a
container's runtime nor any helper hostd starts inherits the lock and outlives it with it.
"""

import fcntl
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["HELD_EXIT_CODE", "LOCK_FILE", "Holder", "StateDirHeld", "StateLock", "hold_state_dir", "holder"]

#: The lock file in hostd's state_dir; it holds the PID of the hostd that holds it.
LOCK_FILE = "hostd.lock"

#: `potluck hostd`'s exit code when another hostd holds the state_dir: neither 2 (hostd.toml is
#: wrong: it is not) nor 3 (stopped for good: the machine is still in the pool, served by the
#: other hostd). A restart mends it only once the other hostd stops, which is the member's call.
HELD_EXIT_CODE = 4

#: How much of the lock file is read for the holder's PID (a PID and a newline).
_PID_BYTES = 32


class StateDirHeld(Exception):
    """Another process holds the state_dir's lock; the message names it and what to do."""

    def __init__(self, state_dir: Path, holder_pid: int | None) -> None:
        self.state_dir = state_dir
        self.holder_pid = holder_pid
        who = f"another hostd (PID {holder_pid})" if holder_pid is not None else "another hostd"
        stop = (
            f"stop it first (`kill {holder_pid}`, or `systemctl --user stop potluck-hostd` "
            "if its systemd unit runs it)"
            if holder_pid is not None
            else f"stop it first (`fuser {state_dir / LOCK_FILE}` names its process)"
        )
        super().__init__(
            f"{who} already runs with the state_dir {state_dir} (it holds {state_dir / LOCK_FILE}); "
            "two hostds on one machine's state would start, stop and throttle the same containers, "
            f"each blind to the other's. This one did nothing and exits: {stop}, or leave that one "
            "running (`potluck host status` shows what it serves)"
        )


@dataclass
class StateLock:
    """The held lock: released when `release` is called or the process ends, however it ends."""

    path: Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = -1


def hold_state_dir(state_dir: Path) -> StateLock:
    """Take `state_dir`'s lock (making the directory if need be), or raise StateDirHeld at once:
    a second hostd must not wait for the first, it must say so and end."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_FILE
    # Not O_TRUNC: opening must not wipe the PID of a hostd that holds the lock.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _pid_in(os.pread(fd, _PID_BYTES, 0))
        os.close(fd)
        raise StateDirHeld(state_dir, holder) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return StateLock(path, fd)


def _pid_in(content: bytes) -> int | None:
    """The PID a holder wrote; None for a file it has not written yet (it took the lock an
    instant ago) or one that holds something else."""
    text = content.decode("ascii", errors="replace").strip()
    return int(text) if text.isdigit() and 0 < len(text) <= 10 else None


#: The kernel's table of the locks held now (Linux).
_PROC_LOCKS = Path("/proc/locks")


@dataclass(frozen=True)
class Holder:
    """The hostd that holds a state_dir: its PID (None: not written yet) and since when it holds
    it (the lock file's change, as it writes its PID on taking the lock)."""

    pid: int | None
    since: datetime


def holder(state_dir: Path) -> Holder | None:
    """The hostd that holds `state_dir` now, or None. Read without taking the lock, even for a
    moment: a `potluck host status` must never make a hostd starting that moment find the
    state_dir held and exit. The kernel's table of locks says whether the file is locked; where
    there is none (not Linux), the PID the file holds, if that process lives."""
    path = state_dir / LOCK_FILE
    try:
        found = path.stat()
        content = path.read_bytes()[:_PID_BYTES]
    except OSError:
        return None
    pid = _pid_in(content)
    since = datetime.fromtimestamp(found.st_mtime, UTC)
    try:
        table = _PROC_LOCKS.read_text()
    except OSError:
        return Holder(pid, since) if pid is not None and _lives(pid) else None
    file_id = f"{os.major(found.st_dev):02x}:{os.minor(found.st_dev):02x}:{found.st_ino}"
    for line in table.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:4251930 0 EOF"; "1: -> FLOCK ..." waits for one.
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == file_id:
            return Holder(pid, since)
    return None


def _lives(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's: it lives
    return True
