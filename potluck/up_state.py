"""What a `potluck up` running on this machine left in its state directory: whether it runs, its
addresses and token (up.json), and where its pool keeps NATS's and the gateway's files.

The pool's commands read it (`potluck up`, `down`, `status`), and so do the operator and user
commands that default to the running pool's database, NATS files or image registry: those read
it here, without importing what starts a pool.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from potluck.localpool import PoolFiles
from potluck.localstack.reaper import start_time

__all__ = [
    "PID_FILE",
    "READY_FILE",
    "NatsFiles",
    "Running",
    "default_state_dir",
    "nats_files",
    "no_pool_in",
    "pid_alive",
    "pool_engine",
    "pool_files",
    "running",
]

#: In the state directory, while `potluck up` runs: its PID and the process's start time (a PID
#: reused by another process after a crash is not taken for the pool).
PID_FILE = "up.pid"
#: In the state directory, once the pool is ready: `Running` as JSON.
READY_FILE = "up.json"


def default_state_dir() -> Path:
    return Path(os.environ.get("POTLUCK_HOME") or Path.home() / ".potluck")


@dataclass(frozen=True)
class Running:
    pid: int
    api: str
    nats: str
    database: str
    docker: str
    ssh: str
    image: str
    token: str
    host_id: str
    logs: str
    registry: str = ""
    #: Where hostds dial the SSH gateway (what a joining member's [[gateways]] address is).
    tunnel: str = ""
    #: The gateway's host key line, which users pin at `potluck login --gateway-key`.
    gateway_key: str = ""
    #: What this run did that its starter must hear of (a revoked earlier `local`): `--detach`
    #: shows only up.log's lines, so these are printed with the summary.
    notices: list[str] = field(default_factory=list)


def pool_files(state_dir: Path) -> PoolFiles:
    """Where the pool of `potluck up` with this state directory keeps its NATS and gateway files."""
    return PoolFiles.in_workdir(state_dir / "pool")


def no_pool_in(state_dir: Path, *, state_dir_option: bool = False) -> str:
    """Why a command found no pool to take its defaults from, and how to name the right one: a
    pool started with `ops/up --state-dir DIR` is not found without it."""
    other = "--state-dir or POTLUCK_HOME" if state_dir_option else "POTLUCK_HOME"
    return (
        f"no `potluck up` pool runs with state in {state_dir} "
        f"(`potluck up` starts one; {other} names another pool's state directory)"
    )


def pid_alive(state_dir: Path) -> int | None:
    pid_file = state_dir / PID_FILE
    try:
        pid_text, started = pid_file.read_text().split()
        pid = int(pid_text)
    except (FileNotFoundError, ValueError):
        return None
    return pid if start_time(pid) == started else None


@dataclass(frozen=True)
class NatsFiles:
    """Where a running `potluck up` keeps NATS's users file, its PID file and the services' seed:
    operator commands (`ops hosts revoke`) re-render and reload with them by default."""

    auth_file: Path
    pid_file: Path
    seed_file: Path


def nats_files(state_dir: Path, database_url: str) -> NatsFiles | None:
    """The NATS files of the `potluck up` running in `state_dir` on the log at `database_url`
    (None: none runs there, or it keeps another log, whose hosts its users file must not get)."""
    ready = running(state_dir)
    if ready is None or ready.database != database_url:
        return None
    pool = state_dir / "pool"
    # LocalPool.create's layout: NatsServer(pool / "nats") and the services' seed beside it.
    return NatsFiles(pool / "nats" / "auth.json", pool / "nats" / "nats-server.pid", pool / "services.seed")


def running(state_dir: Path) -> Running | None:
    if pid_alive(state_dir) is None:
        return None
    try:
        return Running(**json.loads((state_dir / READY_FILE).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def pool_engine(state_dir: Path) -> str | None:
    """The Docker engine of the `potluck up` running with state in `state_dir` (None: none runs
    there, or it names none): on a machine where no Docker answered, the private one it started,
    where its operator and users build images and push them from (`ops images publish`,
    `image push`)."""
    ready = running(state_dir)
    return ready.docker if ready is not None and ready.docker else None
