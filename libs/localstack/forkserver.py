"""Python children forked from a process that has already imported what they need.

A pool's services are Python programs that spend most of their start importing (pydantic,
aiohttp, nats-py, the Docker SDK, OpenTelemetry: ~0.5-0.9 s of CPU each). The end-to-end
tests start a registry, an allocator and a hostd or two for every test, several hundred pools
a run on two cores, so that import work was a third of the suite's CPU. A fork server imports
a command's modules once and forks a child per start, as CPython's own `multiprocessing`
"forkserver" start method and Android's zygote do: the child runs the very same `python -m
MODULE ARGS` code (runpy), with its own session, environment, working directory and log, so
what it does is what an exec'd child does; only the import work is shared.

What an exec'd child has and a forked one must be given explicitly, done in `_become_child`:
default signal dispositions, no signal wakeup fd, the request's environment and working
directory (whatever a module read from them at import was read in the server: none of the
preloaded modules does), stdin from /dev/null, stdout and stderr to the log, a session of its
own, and at the end what the interpreter's own exit does (joining non-daemon threads, atexit
handlers such as OpenTelemetry's span flush) before `os._exit`.

Protocol, one SOCK_SEQPACKET connection per child (so a message is never split): the client
sends `{"argv", "env", "cwd"}` with the log's descriptor (SCM_RIGHTS); the server answers
`{"pid"}` (or `{"error"}`), then `{"exit"}` when the child ends, as `Popen.returncode` would
say it (a negative number for a signal). A client that reads EOF without an exit (the server
died) falls back to watching the PID.

The preloading must not start threads (forking a process with threads copies only one of
them): the server refuses to serve if it did.
"""

import atexit
import contextlib
import gc
import importlib
import json
import os
import runpy
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from potluck.kernel.private_files import append_private
from potluck.localstack.errors import LocalStackError
from potluck.localstack.reaper import start_time, still_runs

__all__ = ["ForkServer", "ForkServers", "ForkedChild"]

_SERVER_MAIN = (
    "import sys; from pathlib import Path; from potluck.localstack.forkserver import serve; "
    "serve(Path(sys.argv[1]), sys.argv[2:])"
)

#: A request (argv and the whole environment) is a few kilobytes; this bounds a runaway one.
_MAX_MESSAGE = 1 << 20


class ForkedChild:
    """A child a fork server started: what `ChildProcess` uses of a `subprocess.Popen`."""

    def __init__(self, argv: Sequence[str], conn: socket.socket, pid: int) -> None:
        self.args = list(argv)
        self.pid = pid
        self.returncode: int | None = None
        self._conn: socket.socket | None = conn
        self._started = start_time(pid)

    def poll(self) -> int | None:
        return self._check(0.0)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            code = self._check(0.05 if left is None else min(left, 0.05))
            if code is not None:
                return code
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)

    def _check(self, timeout: float) -> int | None:
        if self.returncode is not None:
            return self.returncode
        conn = self._conn
        if conn is None:
            # The server is gone: init reaps the child now, and only /proc says whether it runs.
            if still_runs(self.pid, self._started):
                time.sleep(timeout)
                return None
            self.returncode = -signal.SIGKILL
            return self.returncode
        conn.settimeout(timeout)
        try:
            data = conn.recv(_MAX_MESSAGE)
        except (TimeoutError, BlockingIOError):
            return None
        except OSError:
            data = b""
        if not data:
            conn.close()
            self._conn = None
            return self._check(timeout)
        self.returncode = int(json.loads(data)["exit"])
        conn.close()
        self._conn = None
        return self.returncode


class ForkServer:
    """One server process that imported `preload` and forks a child per `spawn`."""

    def __init__(self, workdir: Path, name: str, preload: Sequence[str]) -> None:
        self.workdir = workdir
        self.name = name
        self.preload = list(preload)
        self.socket_path = workdir / f"{name}.sock"
        self.log_path = workdir / f"{name}.log"
        self._pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it has imported its modules and listens."""
        from potluck.localstack import reaper

        self.workdir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        with append_private(self.log_path) as log:
            self._proc = subprocess.Popen(
                # Not `-m` this module: the package imports it first, and runpy warns of two copies.
                [sys.executable, "-c", _SERVER_MAIN, str(self.socket_path), *self.preload],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        reaper.record(self._proc.pid)
        deadline = time.monotonic() + timeout
        # The server binds its socket only once it has imported everything.
        while not self.socket_path.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise LocalStackError(f"fork server {self.name} did not start; its log says:\n{tail}")
            time.sleep(0.02)

    def stop(self) -> None:
        from potluck.localstack import reaper

        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        reaper.forget(proc.pid)

    def spawn(self, argv: Sequence[str], *, log_fd: int, env: Mapping[str, str]) -> ForkedChild:
        """Fork a child that runs `argv` (`[python, "-m", MODULE, *ARGS]`), its output to `log_fd`."""
        if len(argv) < 3 or argv[1] != "-m":
            raise ValueError(f"a fork server runs `python -m MODULE ...` only, not {list(argv)}")
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            conn.settimeout(30)
            conn.connect(str(self.socket_path))
            request = {"argv": list(argv), "env": dict(env), "cwd": os.getcwd()}
            socket.send_fds(conn, [json.dumps(request).encode()], [log_fd])
            answer = conn.recv(_MAX_MESSAGE)
            if not answer:
                raise OSError(f"fork server {self.name} closed the connection ({self.log_path})")
            reply = json.loads(answer)
            if "error" in reply:
                raise OSError(f"fork server {self.name}: {reply['error']}")
            return ForkedChild(argv, conn, int(reply["pid"]))
        except BaseException:
            conn.close()
            raise


class ForkServers:
    """A fork server per kind of child (its `preloads` key), each started when first asked for."""

    def __init__(self, workdir: Path, preloads: Mapping[str, Sequence[str]]) -> None:
        self.workdir = workdir
        self.preloads = dict(preloads)
        self._servers: dict[str, ForkServer] = {}

    def get(self, kind: str) -> ForkServer | None:
        """The server for `kind` (started now if it was not), None for a kind with no preload."""
        server = self._servers.get(kind)
        if server is None and kind in self.preloads:
            server = ForkServer(self.workdir, kind, self.preloads[kind])
            server.start()
            self._servers[kind] = server
        return server

    def stop(self) -> None:
        for server in self._servers.values():
            server.stop()
        self._servers.clear()


def serve(socket_path: Path, preload: Sequence[str]) -> None:
    for module in preload:
        importlib.import_module(module)
    if threading.active_count() != 1:
        names = [t.name for t in threading.enumerate()]
        raise SystemExit(f"forkserver: importing {preload} started threads {names}: forking would copy one")
    # Objects that survive to here live as long as every child: keep the collector off their
    # pages so that each child shares them instead of copying them on its first collection.
    gc.collect()
    gc.freeze()

    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    signal.signal(signal.SIGCHLD, lambda *_: None)

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    # Bound under another name and renamed: a client never meets a socket that does not accept.
    partial = socket_path.with_suffix(".binding")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    listener.bind(str(partial))
    listener.listen(64)
    os.rename(partial, socket_path)

    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    watchers: dict[int, socket.socket] = {}
    while True:
        for key, _ in selector.select():
            if key.fileobj is listener:
                conn, _ = listener.accept()
                _fork_one(conn, watchers, [listener, wake_r, wake_w, *watchers.values()], selector)
            else:
                with contextlib.suppress(BlockingIOError):
                    while wake_r.recv(4096):
                        pass
                _reap(watchers)


def _fork_one(
    conn: socket.socket,
    watchers: dict[int, socket.socket],
    inherited: list[socket.socket],
    selector: selectors.BaseSelector,
) -> None:
    try:
        conn.settimeout(10)
        message, fds, _, _ = socket.recv_fds(conn, _MAX_MESSAGE, 1)
        request: dict[str, Any] = json.loads(message)
        if len(fds) != 1:
            raise ValueError(f"a request carries one descriptor (the log), not {len(fds)}")
    except (OSError, ValueError) as exc:
        with contextlib.suppress(OSError):
            conn.send(json.dumps({"error": f"unreadable request: {exc}"}).encode())
        conn.close()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(fds[0])
        with contextlib.suppress(OSError):
            conn.send(json.dumps({"error": f"cannot fork: {exc}"}).encode())
        conn.close()
        return
    if pid == 0:
        selector.close()
        _become_child(request, fds[0], [conn, *inherited])
    os.close(fds[0])
    watchers[pid] = conn
    # A client gone by now leaves the child running; its exit is reaped all the same.
    with contextlib.suppress(OSError):
        conn.send(json.dumps({"pid": pid}).encode())


def _reap(watchers: dict[int, socket.socket]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = watchers.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode())
            conn.close()


def _become_child(request: dict[str, Any], log_fd: int, inherited: list[socket.socket]) -> None:
    """Turn the forked server into the requested child; never returns."""
    code = 1
    try:
        for sock in inherited:
            sock.close()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(null)
        os.close(log_fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        argv: list[str] = request["argv"]
        sys.argv = [argv[0], *argv[3:]]
        code = _run_module(argv[2])
        # What the interpreter does on its way out: wait for non-daemon threads, run atexit.
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _run_module(module: str) -> int:
    """`python -m module`'s exit code, as the interpreter would give it."""
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        traceback.print_exc()
        return 128 + signal.SIGINT
    except BaseException:
        traceback.print_exc()
        return 1
    return 0
