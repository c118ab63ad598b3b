"""Stops servers that a test run started and left behind, by their recorded PIDs.

ChildProcess records each server it starts in $POTLUCK_RUN_DIR (PID and the
kernel's start time for it, so a recycled PID is never mistaken for ours).
`potluck.localstack.reaper.main(DIR)` ends whatever of those still runs.
"""

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from potluck.localstack.proc_stat import stat_fields


def start_time(pid: int) -> str | None:
    fields = stat_fields(pid)
    # Field 22 of /proc/PID/stat.
    return None if fields is None else fields[19]


def still_runs(pid: int, started: str | None) -> bool:
    """Whether the process that had `started` as its start time runs: not ended, not a zombie
    (one whose parent has not reaped it, or never will where PID 1 reaps nothing), not another
    process under a recycled PID."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z" and fields[19] == started


def record(pid: int) -> None:
    run_dir = os.environ.get("POTLUCK_RUN_DIR")
    if not run_dir:
        return
    started = start_time(pid)
    if started is not None:
        (Path(run_dir) / f"{pid}.pid").write_text(started)


def forget(pid: int) -> None:
    run_dir = os.environ.get("POTLUCK_RUN_DIR")
    if run_dir:
        with contextlib.suppress(FileNotFoundError):
            (Path(run_dir) / f"{pid}.pid").unlink()


def reap(run_dir: Path, grace: float = 10.0) -> list[int]:
    ours = []
    for entry in run_dir.glob("*.pid"):
        pid = int(entry.stem)
        if start_time(pid) == entry.read_text().strip():
            ours.append(pid)
    for pid in ours:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(start_time(p) for p in ours):
        time.sleep(0.1)
    for pid in ours:
        if start_time(pid) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return ours


def main(run_dir: str) -> None:
    left = reap(Path(run_dir))
    if left:
        print(f"stopped {len(left)} server(s) the test run left behind: {left}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
