"""A private Docker engine: our own `dockerd`, socket, data-root and exec-root.

Two engines on one machine do not collide when each has its own socket,
`--data-root`, `--exec-root` and `--pidfile`: dockerd then starts its own
containerd with the config, gRPC socket, state and pid file under that
exec-root (and its content under the data-root), and containerd names its
shims' sockets after a hash of its own address, so the shims are apart too.
`--config-file` points at an empty file of ours so that an
/etc/docker/daemon.json on the machine cannot add hosts or options.

Networking is off (`--bridge=none`, no iptables rules): test containers run
with `network_mode="none"` and nothing touches the machine's firewall.

What we stop: dockerd by its PID; then, in case it crashed or was killed,
the containerd it started (its PID file under our exec-root), the shims
that containerd started (their `-address` is our containerd socket) and the
containers those shims run (the shims' children). Nothing else. Then the socket
files they leave under our exec-root.
"""

import contextlib
import http.client
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from stat import S_ISSOCK
from typing import Any

from potluck.localstack.errors import LocalStackError
from potluck.localstack.proc_stat import children, stat_fields
from potluck.localstack.process import ChildProcess

APT_PACKAGES = ["docker.io", "tini", "busybox-static"]
# AF_UNIX paths are limited to 108 bytes; keep a margin for the longest name
# dockerd and containerd create under the exec-root.
_LONGEST_SOCKET_SUFFIX = "/exec/containerd/containerd-debug.sock"
_SOCKET_PATH_MAX = 100


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found is not None:
        return found
    for directory in ("/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"):
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _missing_tools() -> list[str]:
    missing = [name for name in ("dockerd", "containerd", "runc") if _binary(name) is None]
    if _binary("docker-init") is None and _binary("tini") is None:
        missing.append("docker-init (or tini)")
    if not Path("/bin/busybox").is_file():
        missing.append("/bin/busybox")
    return missing


def ensure_docker_installed() -> None:
    """Install Debian's Docker engine and busybox-static when missing (as root only)."""
    missing = _missing_tools()
    if not missing:
        return
    if os.geteuid() != 0:
        raise LocalStackError(
            f"missing {', '.join(missing)}: install them as root with "
            f"`apt-get install --no-install-recommends {' '.join(APT_PACKAGES)}`, "
            "or set DOCKER_HOST to a running engine"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", *APT_PACKAGES],
    ):
        result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise LocalStackError(
                f"`{' '.join(argv)}` failed (exit {result.returncode}); install "
                f"{' '.join(APT_PACKAGES)} by hand:\n{result.stderr[-2000:]}"
            )
    still = _missing_tools()
    if still:
        raise LocalStackError(f"still missing after apt-get install: {', '.join(still)}")


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def engine_request(
    url: str,
    method: str,
    path: str,
    *,
    body: bytes | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """One HTTP request to a Docker engine at `unix://...`; (status, body). Raises OSError.

    A `body` given as pieces is sent as they come (with `headers` naming its Content-Length,
    as is; without, chunked), never held whole."""
    if not url.startswith("unix://"):
        raise LocalStackError(f"only unix:// engine URLs are supported here, not {url}")
    conn = _UnixHTTPConnection(url.removeprefix("unix://"), timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def engine_answers(url: str) -> bool:
    try:
        status, body = engine_request(url, "GET", "/_ping", timeout=2.0)
    except OSError:
        return False
    return status == 200 and body.strip() == b"OK"


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (dead, waiting for its parent)."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid in pids if _alive(pid)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


class DockerEngine:
    """dockerd with its own socket, data-root and exec-root; a second one is a second laptop."""

    def __init__(self, workdir: Path, *, start_timeout: float = 60.0) -> None:
        self.workdir = workdir
        self.data_root = workdir / "data"
        self.start_timeout = start_timeout
        runtime = workdir / "run"
        self._own_runtime_dir: Path | None = None
        if len(str(runtime) + _LONGEST_SOCKET_SUFFIX) > _SOCKET_PATH_MAX:
            runtime = Path(tempfile.mkdtemp(prefix="pl-dk-"))
            self._own_runtime_dir = runtime
        self.runtime_dir = runtime
        self.exec_root = runtime / "exec"
        self.socket_path = runtime / "docker.sock"
        self.pidfile = runtime / "docker.pid"
        self.config_file = workdir / "daemon.json"
        self.log_path = workdir / "dockerd.log"
        dockerd = _binary("dockerd")
        if dockerd is None:
            raise LocalStackError(
                "dockerd not found: call ensure_docker_installed() as root, or "
                f"`apt-get install --no-install-recommends {' '.join(APT_PACKAGES)}`"
            )
        argv = [
            dockerd,
            "--host", self.url,
            "--data-root", str(self.data_root),
            "--exec-root", str(self.exec_root),
            "--pidfile", str(self.pidfile),
            "--config-file", str(self.config_file),
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--ip6tables=false",
            "--shutdown-timeout=10",
        ]  # fmt: skip
        self._proc = ChildProcess(argv, log_path=self.log_path)

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def running(self) -> bool:
        return self._proc.running()

    def start(self) -> None:
        """Start dockerd and wait until its API answers `/_ping`."""
        if self._proc.running():
            return
        # dockerd finds these through PATH, not through the directories _binary() tries.
        missing = [n for n in ("containerd", "runc", "docker-init") if shutil.which(n) is None]
        if missing:
            raise LocalStackError(
                f"dockerd needs {', '.join(missing)} on PATH ({os.environ.get('PATH', '')}): "
                "call ensure_docker_installed() as root, or add /usr/sbin and /usr/bin to PATH"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        if not self.config_file.exists():
            self.config_file.write_text("{}\n")
        self._forget_dead_containerd()
        self._proc.start()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if engine_answers(self.url):
                return
            if not self._proc.running():
                raise LocalStackError(
                    f"dockerd exited with {self._proc.exit_code()} before answering on "
                    f"{self.url}; its log {self.log_path} ends with:\n{self._proc.log_tail(30)}"
                )
            time.sleep(0.1)
        tail = self._proc.log_tail(30)
        self.stop()
        raise LocalStackError(
            f"dockerd did not answer /_ping on {self.url} within {self.start_timeout:.0f}s; "
            f"its log {self.log_path} ends with:\n{tail}"
        )

    def stop(self) -> None:
        """SIGTERM (dockerd stops its containers and containerd), then clean up what is left."""
        self._proc.stop(timeout=40.0)
        self._reap_leftovers()
        self._remove_dead_sockets()
        if self._own_runtime_dir is not None:
            shutil.rmtree(self._own_runtime_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL dockerd, as a crash would: containerd, shims and containers may live on."""
        self._proc.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def info(self) -> dict[str, Any]:
        status, body = engine_request(self.url, "GET", "/info")
        if status != 200:
            raise LocalStackError(f"GET /info on {self.url} answered {status}: {body[:200]!r}")
        result: dict[str, Any] = json.loads(body)
        return result

    # What our dockerd started and may have left behind after a crash.

    def _containerd_socket(self) -> str:
        return str(self.exec_root / "containerd" / "containerd.sock")

    def _leftover_containerd(self) -> int | None:
        try:
            pid = int((self.exec_root / "containerd" / "containerd.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        config = str(self.exec_root / "containerd" / "containerd.toml")
        if _alive(pid) and config in _cmdline(pid):
            return pid
        return None

    def _forget_dead_containerd(self) -> None:
        """After a crash, containerd's PID file may name a zombie: dockerd would take it for
        a live containerd and wait for its socket until it gives up. Remove the stale file."""
        pidfile = self.exec_root / "containerd" / "containerd.pid"
        if pidfile.exists() and self._leftover_containerd() is None:
            pidfile.unlink(missing_ok=True)

    def _leftover_shims(self) -> list[int]:
        address = self._containerd_socket()
        shims = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            argv = _cmdline(int(entry.name))
            if not argv or "containerd-shim" not in Path(argv[0]).name:
                continue
            if any(a == address and b == "-address" for b, a in itertools.pairwise(argv)):
                shims.append(int(entry.name))
        return [pid for pid in shims if _alive(pid)]

    def _reap_leftovers(self) -> None:
        shims = self._leftover_shims()
        # A container's init is a child of its shim; SIGKILL to a PID namespace's
        # init ends every process in that namespace.
        inits = [child for shim in shims for child in children(shim)]
        for pid in inits:
            _signal(pid, signal.SIGKILL)
        _wait_gone(inits, 10.0)
        containerd = self._leftover_containerd()
        if containerd is not None:
            _signal(containerd, signal.SIGTERM)
            if _wait_gone([containerd], 10.0):
                _signal(containerd, signal.SIGKILL)
                _wait_gone([containerd], 5.0)
        for pid in shims:
            _signal(pid, signal.SIGKILL)
        _wait_gone(shims, 5.0)
        self._unmount_leftovers()

    def _remove_dead_sockets(self) -> None:
        """containerd leaves its sockets' files behind when it exits (dockerd too, when it
        crashed): once nothing of ours runs, remove them, so that a stopped pool leaves no
        socket in its state directory that looks like a live engine."""
        if self._proc.running() or self._leftover_containerd() is not None:
            return
        for directory, _subdirs, files in os.walk(self.runtime_dir):
            for name in files:
                path = Path(directory) / name
                with contextlib.suppress(OSError):
                    if S_ISSOCK(path.lstat().st_mode):
                        path.unlink()

    def _unmount_leftovers(self) -> None:
        """Lazily unmount what a crash left mounted: container root filesystems, netns files,
        and the bind mount of the data-root on itself that dockerd makes for propagation."""
        roots = (str(self.data_root), str(self.exec_root))
        try:
            lines = Path("/proc/self/mountinfo").read_text().splitlines()
        except OSError:
            return
        points = [line.split()[4] for line in lines if len(line.split()) > 4]
        ours = [p for p in points if p in roots or p.startswith(tuple(r + "/" for r in roots))]
        for point in sorted(ours, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
