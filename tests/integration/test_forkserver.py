"""The fork server that starts the tests' Python services (libs/localstack/forkserver.py): a
forked child must be what `python -m MODULE` exec'd would be, to the service it runs and to
whoever stops it; otherwise every end-to-end test would run services unlike the real ones."""

import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from potluck.localstack.forkserver import ForkServer
from potluck.localstack.proc_stat import stat_fields
from potluck.localstack.process import ChildProcess

PROBE = "tests.fixtures.forked_probe"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ForkServer]:
    # The package, not the probe: runpy warns when the module it runs was imported before.
    forks = ForkServer(tmp_path / "forks", "probe", ["tests.fixtures"])
    forks.start()
    try:
        yield forks
    finally:
        forks.stop()


def probe(server: ForkServer, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> ChildProcess:
    return ChildProcess(
        [sys.executable, "-m", PROBE, *args], log_path=tmp_path / "probe.log", env=env, forks_from=server
    )


def seen(child: ChildProcess) -> dict[str, object]:
    return json.loads(child.log_path.read_text().splitlines()[0])  # type: ignore[no-any-return]


def test_a_forked_child_gets_its_own_arguments_environment_session_and_exit_code(
    server: ForkServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What is tried: a variable set and another removed in this process after the server
    started, a working directory changed since, then a child forked with arguments and one more
    variable of its own that exits 3. What must hold: the child sees this process's environment
    as it is now plus its own (not the server's), this working directory, its arguments, an empty
    stdin, SIGTERM's default action, its own session and no descriptor but 0-2; its atexit
    handler runs; its exit code is 3 as `Popen.returncode` says it."""
    monkeypatch.setenv("PROBE_GONE", "x")
    server.stop()
    server.start()
    monkeypatch.delenv("PROBE_GONE")
    monkeypatch.setenv("PROBE_VALUE", "from-the-test")
    monkeypatch.chdir(tmp_path)
    child = probe(server, tmp_path, "3", str(tmp_path / "atexit"), env={"OTHER": "1"})
    child.start()
    assert wait_exit(child) == 3
    view = seen(child)
    assert view["argv"] == ["3", str(tmp_path / "atexit")]
    assert view["env"] == "from-the-test"
    assert view["gone"] is None
    assert view["cwd"] == str(tmp_path)
    assert view["stdin"] == ""
    assert view["sigterm_default"] is True
    assert view["sid"] == view["pid"] == child.pid
    assert view["fds"] == [0, 1, 2, 3], view  # 3: the listing's own descriptor
    assert (tmp_path / "atexit").read_text() == "atexit ran\n"


def wait_exit(child: ChildProcess) -> int | None:
    proc = child._proc
    assert proc is not None
    return proc.wait(timeout=30)


def test_a_forked_child_killed_by_a_signal_says_so_and_the_server_serves_on(
    server: ForkServer, tmp_path: Path
) -> None:
    """What is tried: a child that runs until killed, killed with SIGKILL through `ChildProcess`,
    then another child. What must hold: the first is seen running, then ended by signal 9
    (-9, as Popen says); the second starts and exits 0: one child's death leaves the server as
    it was."""
    child = probe(server, tmp_path, "-1")
    child.start()
    assert child.running()
    child.kill()
    assert child.exit_code() == -signal.SIGKILL
    second = ChildProcess(
        [sys.executable, "-m", PROBE, "0"], log_path=tmp_path / "second.log", forks_from=server
    )
    second.start()
    assert wait_exit(second) == 0


def test_a_child_outlives_its_fork_server_and_is_still_stopped_by_its_pid(
    server: ForkServer, tmp_path: Path
) -> None:
    """What is tried: the fork server stopped while its child runs, then the child stopped.
    What must hold: the child runs on after the server is gone (a test's services do not die
    with the server), and `ChildProcess.stop` still ends it and reports it ended."""
    child = probe(server, tmp_path, "-1")
    child.start()
    server.stop()
    assert child.running()
    assert child.pid is not None
    os.kill(child.pid, 0)
    child.stop()
    assert not child.running()
    # Ended: gone, or a zombie where no init reaps it (a container's PID 1 may not).
    assert stat_fields(child.pid) is None or stat_fields(child.pid)[0] == "Z"  # type: ignore[index]


def test_a_fork_server_runs_python_modules_only(server: ForkServer, tmp_path: Path) -> None:
    """What is tried: a command that is no `python -m MODULE`. What must hold: it is refused
    with a clear error before anything is forked."""
    with pytest.raises(ValueError, match="python -m MODULE"):
        server.spawn(["/bin/true"], log_fd=1, env={})


@pytest.mark.parametrize("forked", [True, False], ids=["forked", "execd"])
def test_a_services_log_is_readable_by_its_owner_only(
    server: ForkServer, tmp_path: Path, forked: bool
) -> None:
    """What is tried: a service started (forked, and exec'd) with the usual umask 022, onto a log
    an earlier version left 0644, and the fork server's own log. What must hold: both logs are
    0600 (a service's log names users, allocations and addresses, in a state directory any
    local user may enter), and the earlier lines are kept."""
    log = tmp_path / "service.log"
    log.write_text("an earlier run\n")
    log.chmod(0o644)
    old_umask = os.umask(0o022)
    try:
        child = ChildProcess(
            [sys.executable, "-m", PROBE, "0"], log_path=log, forks_from=server if forked else None
        )
        child.start()
        assert wait_exit(child) == 0
    finally:
        os.umask(old_umask)
    assert log.stat().st_mode & 0o777 == 0o600
    assert log.read_text().startswith("an earlier run\n")
    assert server.log_path.stat().st_mode & 0o777 == 0o600
