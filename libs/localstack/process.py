"""One child process we started, stopped by its own PID and nobody else's."""

import os
import pwd
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from potluck.kernel.private_files import append_private
from potluck.localstack import reaper
from potluck.localstack.errors import LocalStackError
from potluck.localstack.forkserver import ForkedChild, ForkServer
from potluck.localstack.ports import descends_from, describe_pids, listening_pids, port_accepts


def as_user(user: str | None) -> dict[str, Any]:
    """Popen arguments that drop to `user` with its own group only.

    Dropping only the uid would leave root's group, which the kernel checks
    before "other" bits and so denies access that plain "other" would grant.
    """
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


class ChildProcess:
    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_path: Path,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        forks_from: ForkServer | None = None,
    ) -> None:
        """`env`: variables set for the child on top of this process's environment. A secret goes
        there, never in `argv`: any local user reads a process's command line (`ps`,
        /proc/PID/cmdline), only its owner its environment. `forks_from`: a fork server that
        has imported what `argv` (`python -m MODULE ...`) needs forks the child instead of an
        exec (forkserver.py); the child runs the same code."""
        self.argv = list(argv)
        self.log_path = log_path
        self.user = user
        self.env = dict(env or {})
        if forks_from is not None and user is not None:
            raise ValueError("a fork server's children run as its own user")
        self.forks_from = forks_from
        self._proc: subprocess.Popen[bytes] | ForkedChild | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        if self.running():
            return
        # Owner-only: a service's log names users, allocations and addresses, and the state
        # directory holding it is one any local user may enter (private_files.py).
        log = append_private(self.log_path)
        try:
            if self.forks_from is not None:
                self._proc = self.forks_from.spawn(
                    self.argv, log_fd=log.fileno(), env={**os.environ, **self.env}
                )
            else:
                # A session of its own: Ctrl-C in the terminal reaches us, and we
                # decide how the child stops.
                self._proc = subprocess.Popen(
                    self.argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    env={**os.environ, **self.env} if self.env else None,
                    **as_user(self.user),
                )
        except OSError as exc:
            raise LocalStackError(f"cannot start {self.argv[0]}: {exc}") from exc
        finally:
            log.close()
        reaper.record(self._proc.pid)

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def exit_code(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, *, timeout: float = 15.0, sig: int = signal.SIGTERM) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
        reaper.forget(proc.pid)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.stop(sig=signal.SIGKILL)


def start_listening(proc: ChildProcess, port: int, *, what: str, timeout: float = 20) -> None:
    """Start `proc` and wait until it accepts on loopback `port`; its log's tail if it never does."""
    proc.start()
    try:
        wait_until_listening(proc, port, what=what, timeout=timeout)
    except LocalStackError as exc:
        raise LocalStackError(f"{exc}; its log says:\n{proc.log_tail()}") from exc


def wait_until_listening(proc: ChildProcess, port: int, *, what: str, timeout: float = 20) -> None:
    """Until `proc`, or a process it started, accepts on loopback `port`.

    That the port accepts is not enough: another program that took it first answers there while
    `proc` exits with "address already in use", and whoever goes on (a reload, a client) meets a
    server that is not ours or none at all. That program is named instead, with what to do.
    """
    deadline = time.monotonic() + timeout
    while True:
        if port_accepts(port):
            holders = listening_pids(port)
            ours = proc.pid
            if holders is None or (ours is not None and any(descends_from(h, ours) for h in holders)):
                return
            if not proc.running() or time.monotonic() > deadline:
                raise LocalStackError(
                    f"port {port} on 127.0.0.1 is taken by another program "
                    f"({describe_pids(holders)}), not {what}: stop that program or give "
                    f"{what} another port"
                )
        elif not proc.running():
            raise LocalStackError(
                f"{what} stopped (exit code {proc.exit_code()}) before it listened on 127.0.0.1:{port}"
            )
        elif time.monotonic() > deadline:
            raise LocalStackError(
                f"{what} did not accept connections on 127.0.0.1:{port} within {timeout:.0f}s"
            )
        time.sleep(0.05)
