"""The registry's reload of nats-server (SIGHUP to the PID in its PID file) signals only a live
nats-server, and a stopped local nats-server leaves no PID file to mislead it."""

import shutil
import signal
import subprocess
import time
from pathlib import Path

from potluck.localstack.nats_server import NatsServer
from potluck.registry.nats_auth import reload_nats


def _pid_file(tmp_path: Path, pid: int) -> Path:
    path = tmp_path / "nats-server.pid"
    path.write_text(f"{pid}\n")
    return path


def _hangup_ends() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _wait_exec(pid: int, program: Path) -> None:
    """Until the child has exec'd `program` (before, its command line is this interpreter's)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    while not cmdline.read_bytes().startswith(str(program).encode()):
        time.sleep(0.01)


def test_a_pid_file_naming_another_program_or_none_signals_nothing(tmp_path: Path) -> None:
    """Tried: the PID file names a live `sleep` (nats-server stopped, its PID reused since), then
    a PID that has ended.
    Must hold: reload_nats sends nothing and says so (None): the sleep lives on (SIGHUP would
    have ended it), and the ended PID raises nothing (before, ProcessLookupError came out of
    `potluck ops hosts revoke` after the revocation was recorded)."""
    other = subprocess.Popen(["sleep", "60"])
    try:
        _wait_exec(other.pid, Path("sleep"))
        assert reload_nats(_pid_file(tmp_path, other.pid)) is None
        assert other.poll() is None, "SIGHUP reached a program that is not nats-server"
    finally:
        other.kill()
        other.wait()
    assert reload_nats(_pid_file(tmp_path, other.pid)) is None


def test_a_live_nats_server_is_signalled(tmp_path: Path) -> None:
    """Tried: the PID file names a live program called nats-server (here a copy of `sleep`,
    which SIGHUP ends).
    Must hold: reload_nats returns its PID and the program got SIGHUP."""
    program = tmp_path / "nats-server"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", program)
    # SIGHUP at its default: a suite started under `nohup` passes SIG_IGN on to its children.
    server = subprocess.Popen([str(program), "60"], preexec_fn=_hangup_ends)
    try:
        _wait_exec(server.pid, program)
        assert reload_nats(_pid_file(tmp_path, server.pid)) == server.pid
        assert server.wait(timeout=30) == -1  # ended by SIGHUP
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_a_stopped_nats_server_leaves_no_pid_file(tmp_path: Path) -> None:
    """Tried: a local nats-server with authorization (as `potluck up` runs it) starts, then stops.
    Must hold: its PID file named it while it ran, and is gone once it stopped (nats-server
    leaves it, and `potluck down` left one in the state directory)."""
    server = NatsServer(tmp_path / "nats", authorization=True)
    server.auth_file.write_text("authorization { users = [] }\n")
    server.start()
    try:
        assert server.pid_file.read_text().strip() == str(server.pid)
    finally:
        server.stop()
    assert not server.pid_file.exists()
