"""`potluck ops hollow --hosts N`: N hollow hosts on a running pool, in one process, for scale tests.

The hosts are enrolled as `potluck ops hosts enroll --credentials-out` does (a key pair each,
HostEnrolled in the log, the NATS users file rendered once for all and nats-server
reloaded), then run as real hostd agents whose engine keeps containers in memory
(services/hostd/hollow_engine.py). They register with the label `hollow=true`; they run
nothing, so never point one at a pool whose users expect work done.

Credentials stay in `--workdir` (hollow-0.creds, ...): a second run with the same workdir and
as many or more hosts brings the same hosts back and enrolls only the missing ones. Ctrl-C or
SIGTERM stops the agents without deregistering anything (the hosts turn unreachable, as
machines switched off do) and exits 0.
"""

import asyncio
import contextlib
import signal
import socket
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import asyncpg
import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from potluck.cli_options import FiniteRange, database_option, unreachable_log
from potluck.ops import OpsError

if TYPE_CHECKING:
    from potluck.events import EventStore
    from potluck.hostd.hollow_hosts import HollowHost

__all__ = ["enroll_hollow", "hollow"]

#: Enrollments in flight at once (each is one append).
_ENROLL_CONCURRENCY = 8


def _nats_reachable(url: str) -> None:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 4222), timeout=3):
            return
    except OSError as exc:
        raise OpsError(
            f"no NATS server answers at {url} ({exc.strerror or exc}): start the pool first "
            "(`potluck up`, or the services) or give its --nats-url"
        ) from None


def _read_host(path: Path) -> str | None:
    with contextlib.suppress(OSError, tomllib.TOMLDecodeError):
        host_id = tomllib.loads(path.read_text()).get("host_id")
        return host_id if isinstance(host_id, str) else None
    return None


async def enroll_hollow(
    store: "EventStore",
    count: int,
    workdir: Path,
    *,
    prefix: str = "hollow",
    nats_auth_file: Path | None = None,
    nats_pid_file: Path | None = None,
    service_seeds: list[str] | None = None,
) -> list["HollowHost"]:
    """Hosts `prefix-0` .. `prefix-(count-1)`: those with credentials in `workdir` already are
    kept, the others enrolled; then the users file is rendered once and nats-server reloaded."""
    from potluck.hostd.hollow_hosts import HollowHost
    from potluck.registry.enrollment import enroll_host, refresh_nats_authorization, write_credentials

    workdir.mkdir(parents=True, exist_ok=True)
    slots = asyncio.Semaphore(_ENROLL_CONCURRENCY)

    async def one(i: int) -> "HollowHost":
        name = f"{prefix}-{i}"
        creds = workdir / f"{name}.creds"
        host_id = _read_host(creds)
        if host_id is None:
            async with slots:
                host_id, key = await enroll_host(store, name)
            write_credentials(creds, host_id, key)
        return HollowHost(host_id, name, creds)

    hosts = list(await asyncio.gather(*(one(i) for i in range(count))))
    if nats_auth_file is not None:
        await refresh_nats_authorization(store, nats_auth_file, service_seeds or [], nats_pid_file)
        await asyncio.sleep(0.5)  # nats-server reloads asynchronously
    return hosts


async def _main(
    database_url: str,
    nats_url: str,
    count: int,
    workdir: Path,
    images: list[str],
    heartbeat_s: float,
    join_timeout_s: float,
    auth: tuple[Path | None, Path | None, Path | None],
) -> None:
    # Here, not at the top: every `potluck` command imports this module, and hostd weighs.
    from potluck.events import EventStore
    from potluck.hostd.hollow_hosts import HollowFleet, hollow_config
    from potluck.registry.enrollment import read_seed

    _nats_reachable(nats_url)
    try:
        store = await EventStore.open(database_url, min_size=1, max_size=_ENROLL_CONCURRENCY, migrate=False)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise OpsError(unreachable_log(database_url, exc)) from None
    auth_file, pid_file, seed_file = auth
    err = Console(stderr=True)
    try:
        err.print(f"enrolling {count} hollow host(s) in {workdir}")
        hosts = await enroll_hollow(
            store,
            count,
            workdir,
            nats_auth_file=auth_file,
            nats_pid_file=pid_file,
            service_seeds=[read_seed(seed_file)] if seed_file else [],
        )
    except asyncpg.UndefinedTableError:
        raise OpsError("the database has no event log yet: start the pool's services first") from None
    finally:
        await store.close()
    if auth_file is None:
        err.print("warning: no --nats-auth-file: hosts enrolled now are refused by NATS until it is rendered")
    configs = [
        hollow_config(h, nats_url=nats_url, workdir=workdir, images=images, heartbeat_s=heartbeat_s)
        for h in hosts
    ]
    fleet = HollowFleet(configs, images)
    progress = Progress(
        TextColumn("hosts joined"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    )
    bar = progress.add_task("join", total=count)
    waited = 0.0

    def on_progress(ready: int, total: int) -> None:
        nonlocal waited
        progress.update(bar, completed=ready)
        waited += 0.5
        if ready == 0 and waited > join_timeout_s:
            raise OpsError(
                f"no hollow host registered in {join_timeout_s:.0f} s: are the registry and allocator "
                f"running on {nats_url}, and does NATS know the hosts' keys (--nats-auth-file)?"
            )
        if ready + len(fleet.stopped) >= total:
            progress.stop()
            err.print(f"{ready} hollow host(s) running ({len(fleet.stopped)} stopped); Ctrl-C to stop")
            sys.stderr.flush()

    progress.start()
    try:
        await fleet.run(on_progress)
    finally:
        progress.stop()


def _run_until_signal(main: "asyncio.Future[None] | asyncio.Task[None]") -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)


@click.command()
@click.option(
    "--hosts", "count", type=click.IntRange(1, 100_000), required=True, help="How many hollow hosts."
)
@database_option
@click.option(
    "--nats-url",
    envvar="POTLUCK_NATS_URL",
    default="nats://127.0.0.1:4222",
    show_default=True,
    help="The pool's NATS, as hosts reach it [env: POTLUCK_NATS_URL].",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("hollow-hosts"),
    show_default=True,
    help="Where the hosts' credentials and state are kept (reused by the next run).",
)
@click.option(
    "--image",
    "images",
    multiple=True,
    default=("*",),
    show_default=True,
    help="Images the hollow engine has and hosts allow (repeatable; patterns as allowed_images).",
)
@click.option(
    "--heartbeat",
    "heartbeat_s",
    type=FiniteRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Heartbeat interval, seconds (the registry's --heartbeat-interval).",
)
@click.option(
    "--join-timeout",
    "join_timeout_s",
    type=FiniteRange(min=1),
    default=60.0,
    show_default=True,
    help="Give up when no host has registered after this many seconds.",
)
@click.option(
    "--nats-auth-file",
    envvar="POTLUCK_NATS_AUTH_FILE",
    type=click.Path(path_type=Path),
    default=None,
    help="NATS users file to re-render with the hosts' keys [env: POTLUCK_NATS_AUTH_FILE].",
)
@click.option(
    "--nats-pid-file",
    envvar="POTLUCK_NATS_PID_FILE",
    type=click.Path(path_type=Path),
    default=None,
    help="nats-server's PID file, to reload it [env: POTLUCK_NATS_PID_FILE].",
)
@click.option(
    "--service-seed-file",
    envvar="POTLUCK_NATS_SEED_FILE",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="The services' seed, kept in the users file [env: POTLUCK_NATS_SEED_FILE].",
)
def hollow(
    count: int,
    database_url: str,
    nats_url: str,
    workdir: Path,
    images: tuple[str, ...],
    heartbeat_s: float,
    join_timeout_s: float,
    nats_auth_file: Path | None,
    nats_pid_file: Path | None,
    service_seed_file: Path | None,
) -> None:
    """Run N hollow hosts on a running pool, in this process, until Ctrl-C: FOR SCALE TESTS ONLY.

    Real hostd agents (own NATS keys, registration, heartbeats, reports) whose container engine
    is in memory: they accept work and run none of it. They register labelled hollow=true."""
    if nats_auth_file is not None and service_seed_file is None:
        raise click.UsageError("--nats-auth-file needs --service-seed-file: the services' key stays in it")

    async def go() -> None:
        task = asyncio.ensure_future(
            _main(
                database_url,
                nats_url,
                count,
                workdir.resolve(),
                list(images),
                heartbeat_s,
                join_timeout_s,
                (nats_auth_file, nats_pid_file, service_seed_file),
            )
        )
        _run_until_signal(task)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(go())
    except OpsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    click.echo("hollow hosts stopped (nothing deregistered)", err=True)
