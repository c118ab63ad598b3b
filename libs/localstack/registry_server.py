"""The pool's image registry: CNCF Distribution (Debian's docker-registry) on loopback.

It stores in the pool's state and trusts only tokens signed by the allocator
(token authentication: anonymous requests get 401 with the allocator's token
endpoint as realm, which Docker clients follow by themselves).
"""

import json
import secrets
import shutil
from pathlib import Path

from potluck.localstack.errors import LocalStackError
from potluck.localstack.ports import free_port
from potluck.localstack.process import ChildProcess, start_listening


def registry_binary() -> str:
    found = shutil.which("docker-registry") or shutil.which("registry")
    if found is None:
        raise LocalStackError(
            "docker-registry not found: `ops/setup` installs it (Debian: apt-get install docker-registry)"
        )
    return found


def registry_config(
    *, storage: Path, port: int, realm: str, cert: Path, service: str, issuer: str
) -> dict[str, object]:
    return {
        "version": 0.1,
        "log": {"level": "info", "formatter": "json", "fields": {"service": "potluck-registry"}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {
            "addr": f"127.0.0.1:{port}",
            # Signs upload state between requests; a fresh one per start is enough on one node.
            "secret": secrets.token_hex(32),
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
        "auth": {
            "token": {"realm": realm, "service": service, "issuer": issuer, "rootcertbundle": str(cert)}
        },
    }


class RegistryServer:
    """docker-registry serving `workdir/data`; it trusts tokens that `issuer` signs for `service`."""

    def __init__(
        self,
        workdir: Path,
        *,
        realm: str,
        cert: Path,
        service: str,
        issuer: str,
        port: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        # Distribution reads YAML; JSON is YAML, and needs no YAML writer here.
        self.config_path = workdir / "config.yml"
        self.config_path.write_text(
            json.dumps(
                registry_config(
                    storage=workdir / "data",
                    port=self.port,
                    realm=realm,
                    cert=cert,
                    service=service,
                    issuer=issuer,
                ),
                indent=2,
            )
        )
        self._proc = ChildProcess(
            [registry_binary(), "serve", str(self.config_path)], log_path=workdir / "registry.log"
        )

    @property
    def address(self) -> str:
        """How Docker names this registry in image references: `127.0.0.1:PORT`."""
        return f"127.0.0.1:{self.port}"

    @property
    def process(self) -> ChildProcess:
        return self._proc

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def start(self) -> None:
        start_listening(self._proc, self.port, what="docker-registry")

    def stop(self) -> None:
        self._proc.stop()

    def running(self) -> bool:
        return self._proc.running()

    def log_tail(self, lines: int = 20) -> str:
        return self._proc.log_tail(lines)
