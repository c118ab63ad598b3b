"""The one `potluck` command: a subcommand for each service and role.

click was picked for the CLI: a well-kept library with nested groups,
environment-variable defaults and generated --help, which is what a command
serving users, members and operators needs.
"""

import asyncio
import faulthandler
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

# Before any command's module imports nats (nothing above does): see its docstring.
import potluck.events.nats_without_websockets  # noqa: F401
from potluck.cli_options import (
    OPS_LAZY_COMMANDS,
    FiniteRange,
    GraceSeconds,
    database_option,
    nats_options,
    nats_options_for,
    operator_connect_timeout,
    operator_database_option,
    relay_option,
    retention_option,
    stream_replicas_option,
    unreachable_log,
    up_state_dir_option,
)
from potluck.kernel.cancellation import task_whereabouts, then_end_the_rest
from potluck.kernel.digits import is_digits
from potluck.kernel.version import __version__
from potluck.lazy_group import AttachingGroup
from potluck.logs import configure_logging

if TYPE_CHECKING:
    from datetime import timedelta

    from potluck.allocator.users import UsersView
    from potluck.contracts.allocation_events import Quota
    from potluck.contracts.join_token import GatewayPin
    from potluck.events import Event, EventStore, RecordedEvent
    from potluck.kernel.rejections import Rejected
    from potluck.up_state import Running

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


#: How long the tasks a command leaves behind get to end once the command has.
LEFTOVER_GRACE_S = 10.0
#: The exit status when some did not (EX_SOFTWARE): the process stopped, but not cleanly.
STUCK_EXIT_STATUS = 70


def _end_without(tasks: list["asyncio.Future[Any]"]) -> None:
    """Ends the process, naming the tasks that ignored every cancellation: a supervisor would
    otherwise wait for a stopped service until it kills it, with nothing in its log."""
    import structlog

    structlog.get_logger("potluck.cli").error(
        "process.tasks_did_not_end",
        tasks=[task_whereabouts(task) for task in tasks],
        grace_s=LEFTOVER_GRACE_S,
        exit_status=STUCK_EXIT_STATUS,
        hint="a bug (a task that ignores its cancellation); the process ends without them",
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(STUCK_EXIT_STATUS)


def run(coro: Awaitable[T]) -> T:
    # `kill -USR1 PID` prints every thread's stack to stderr (the process's log): what an
    # operator needs from a service that hangs, without stopping it.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    return asyncio.run(then_end_the_rest(coro, grace_s=LEFTOVER_GRACE_S, on_stuck=_end_without))


async def with_store(database_url: str, work: Callable[["EventStore"], Awaitable[T]]) -> T:
    """Runs an operator command's `work` on the event store, closing it afterwards."""
    import asyncpg

    from potluck.events import EventStore

    try:
        store = await EventStore.open(database_url, max_size=2, connect_timeout=operator_connect_timeout())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        # A Postgres that is down or a URL with a typo came out as asyncpg's traceback.
        fail(unreachable_log(database_url, exc))
    try:
        return await work(store)
    finally:
        await store.close()


def fail(message: str, code: int = 1, *, escaped: bool = False) -> NoReturn:
    from potluck.kernel.terminal_text import shown

    # A refusal may quote what another party wrote (the registry's or hostd's words);
    # `escaped`: the caller has shown it already, line by line.
    click.echo(f"error: {message if escaped else shown(message)}", err=True)
    sys.exit(code)


#: The user's commands, each imported when it is asked for (potluck.lazy_group).
USER_COMMANDS = {
    "login": "potluck.user.cli:login",
    "alloc": "potluck.user.cli:alloc",
    "ssh": "potluck.user.cli:ssh",
    "run": "potluck.user.jobs:run",
    "job": "potluck.user.jobs:job",
    "cp": "potluck.user.copy:cp",
    "logs": "potluck.user.logs:logs",
    "image": "potluck.user.images:image",
}


#: A drain's grace on the command line: ControlHost.grace_s's bounds (up to a week, its
#: MAX_GRACE_S; tests/unit/test_cli_numbers.py holds them equal), checked here so that a grace
#: out of range gets click's usage error naming --grace, not a validation traceback from the
#: contract. Not imported from the contract: that would load pydantic into every command's
#: start.
GRACE_RANGE = GraceSeconds(shortest=1, maximum=7 * 86400)


#: What a newcomer types first that is no command (`docker ps`, `systemctl status` habits).
NEAR_MISSES = {
    "status": "the pool's: `potluck ops status`; this machine's, as a member: `potluck host status "
    "--config hostd.toml`; your allocations: `potluck alloc ls`",
    "ps": "your allocations: `potluck alloc ls`; your jobs: `potluck job ls`",
    "stop": "a pool from `potluck up`: `potluck down`; an allocation: `potluck alloc rm ID`",
}


@click.group(
    cls=AttachingGroup,
    lazy=USER_COMMANDS,
    hints=NEAR_MISSES,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="potluck")
@click.option(
    "--log-level",
    envvar="POTLUCK_LOG_LEVEL",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def main(log_level: str) -> None:
    """Pool members' machines; give users capped containers on them."""
    configure_logging(log_level)


@main.command()
@database_option
@nats_options
@stream_replicas_option
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 10_000))
def relay(
    database_url: str,
    nats_url: str,
    nats_seed_file: Path | None,
    stream_replicas: int | None,
    batch_size: int,
) -> None:
    """Publish the event log to JetStream, in order (one leader at a time)."""
    from potluck.bootstrap import Backends, serve

    async def idle(*_: object) -> None:
        await asyncio.Event().wait()

    run(
        serve(
            "relay", Backends(database_url, nats_url, nats_seed_file, True, batch_size, stream_replicas), idle
        )
    )


@main.command()
@database_option
@nats_options
@stream_replicas_option
@relay_option
@click.option(
    "--heartbeat-interval",
    default=5.0,
    show_default=True,
    type=FiniteRange(min=0.05),
    help="Seconds between a hostd's beats.",
)
@click.option(
    "--suspect-after-missed",
    default=3,
    show_default=True,
    type=click.IntRange(min=1),
    help="Missed beats before a host is unreachable (no new work; its allocations wait for it).",
)
@click.option(
    "--stranded-grace",
    "--lost-after",
    "stranded_grace",
    default=8 * 3600.0,
    show_default=True,
    type=FiniteRange(min=0.1),
    help="Seconds a host may stay asleep or unreachable before it is lost and its work given up "
    "(--lost-after is the old name).",
)
@click.option(
    "--nats-auth-file",
    envvar="POTLUCK_NATS_AUTH_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="NATS users file to re-render when a member joins with a token; without it joins are "
    "refused [env: POTLUCK_NATS_AUTH_FILE].",
)
@click.option(
    "--nats-pid-file",
    "nats_pid_files",
    envvar="POTLUCK_NATS_PID_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    multiple=True,
    help="nats-server's PID file, to make it reload the users; once per node of a cluster on this "
    "machine [env: POTLUCK_NATS_PID_FILE].",
)
@click.option(
    "--nats-monitor-url",
    "nats_monitor_urls",
    envvar="POTLUCK_NATS_MONITOR_URL",
    multiple=True,
    help="nats-server's monitoring endpoint (its `http` setting, e.g. http://127.0.0.1:8222), once per "
    "node of a cluster: the registry counts each host key's connections there and shuts out for a "
    "while a key holding more than --host-connection-limit (needs --nats-auth-file) "
    "[env: POTLUCK_NATS_MONITOR_URL, space-separated].",
)
@click.option(
    "--host-connection-limit",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="NATS connections one host's key may hold at once (hostd holds one).",
)
@click.option(
    "--connection-cap-cooldown",
    default=60.0,
    show_default=True,
    type=FiniteRange(min=0.1),
    help="Seconds a host past --host-connection-limit is first shut out of NATS (twice as long each "
    "time it does it again soon after, up to an hour).",
)
@click.option(
    "--consumer-grace",
    default=60.0,
    show_default=True,
    type=FiniteRange(min=0),
    help="Seconds the events consumer of a host that deregistered, left or was revoked is kept "
    "for a hostd that has not acknowledged it yet; then it is removed.",
)
def registry(
    database_url: str,
    nats_url: str,
    nats_seed_file: Path | None,
    stream_replicas: int | None,
    relay: bool,
    heartbeat_interval: float,
    suspect_after_missed: int,
    stranded_grace: float,
    nats_auth_file: Path | None,
    nats_pid_files: tuple[Path, ...],
    nats_monitor_urls: tuple[str, ...],
    host_connection_limit: int,
    connection_cap_cooldown: float,
    consumer_grace: float,
) -> None:
    """Run the registry: host registration, joins, liveness, sleep, member controls."""
    from datetime import timedelta

    from potluck.bootstrap import Backends, serve
    from potluck.registry.connection_caps import CapPolicy
    from potluck.registry.liveness import LivenessPolicy
    from potluck.registry.service import RegistryService
    from potluck.registry.users_file import NatsAuthFiles

    try:
        policy = LivenessPolicy(heartbeat_interval, suspect_after_missed, stranded_grace)
        caps = CapPolicy(
            limit=host_connection_limit,
            cooldown=timedelta(seconds=connection_cap_cooldown),
            longest=max(timedelta(hours=1), timedelta(seconds=connection_cap_cooldown)),
        )
    except ValueError as exc:
        fail(str(exc), 2)
    nats_auth = None
    if nats_auth_file is not None:
        if nats_seed_file is None:
            raise click.UsageError(
                "--nats-auth-file needs --nats-seed-file: the services' key must stay in the users file"
            )
        first, *more = nats_pid_files or (None,)
        nats_auth = NatsAuthFiles(
            nats_auth_file, first, nats_seed_file, more_pid_files=tuple(p for p in more if p)
        )
    monitor_urls = [url for given in nats_monitor_urls for url in given.split()]
    if monitor_urls and nats_auth is None:
        raise click.UsageError(
            "--nats-monitor-url needs --nats-auth-file: a host past its connections is shut out by "
            "taking its key out of the users file"
        )

    async def body(store: Any, nc: Any) -> None:
        from potluck.kernel.metrics import pool_metrics
        from potluck.registry.metrics import watch_registry

        service = RegistryService(
            store,
            nc,
            policy,
            nats_auth=nats_auth,
            consumer_grace_s=consumer_grace,
            nats_monitor_urls=monitor_urls,
            connection_caps=caps,
        )
        watch_registry(pool_metrics(), service)
        await service.run()

    run(
        serve(
            "registry",
            Backends(database_url, nats_url, nats_seed_file, relay, stream_replicas=stream_replicas),
            body,
        )
    )


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not is_digits(port) or not 0 <= int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not HOST:PORT, e.g. 127.0.0.1:8080")
    return host, int(port)


def _user_rate_options(kind: str, *, rate: str, burst: str, defaults: tuple[float, int]) -> Callable[[F], F]:
    """--KIND-rate and --KIND-burst (and their POTLUCK_ALLOCATOR_* variables): each user's rate of
    a kind of request (services/allocator/user_rates.py), None when not given."""
    env = f"POTLUCK_ALLOCATOR_{kind.upper()}"

    def options(f: F) -> F:
        f = click.option(
            f"--{kind}-burst",
            envvar=f"{env}_BURST",
            type=click.IntRange(min=1),
            default=None,
            help=f"{burst}, before --{kind}-rate holds them back (default {defaults[1]}) [env: {env}_BURST].",
        )(f)
        return click.option(
            f"--{kind}-rate",
            envvar=f"{env}_RATE",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help=f"{rate}; past it the API answers 429 RATE_LIMITED with Retry-After "
            f"(default {defaults[0]:g}) [env: {env}_RATE].",
        )(f)

    return options


def _seconds_option(
    flag: str, dest: str, variable: str, what: str, *, zero: bool = False
) -> Callable[[F], F]:
    """An allocator option of seconds (and its POTLUCK_ALLOCATOR_ variable), None when not given:
    above 0, or from 0 with `zero`."""
    env = f"POTLUCK_ALLOCATOR_{variable}"
    return click.option(
        flag,
        dest,
        envvar=env,
        type=click.FloatRange(min=0, min_open=not zero),
        default=None,
        help=f"{what} [env: {env}].",
    )


def _public_urls(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[Any, ...]:
    from potluck.allocator.web.origins import parse_public_url

    try:
        return tuple(parse_public_url(v) for v in values)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@database_option
@nats_options
@stream_replicas_option
@relay_option
@click.option(
    "--listen",
    envvar="POTLUCK_ALLOCATOR_LISTEN",
    default="127.0.0.1:8080",
    show_default=True,
    help="HOST:PORT of the HTTP API [env: POTLUCK_ALLOCATOR_LISTEN].",
)
@click.option(
    "--strategy",
    type=click.Choice(["best_fit", "spread"]),
    default="best_fit",
    show_default=True,
    help="Placement: pack hosts tightly, or spread work across them.",
)
@click.option(
    "--registry-token-key",
    envvar="POTLUCK_REGISTRY_TOKEN_KEY",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="EC private key (PEM) that signs the pool registry's access tokens "
    "[env: POTLUCK_REGISTRY_TOKEN_KEY].",
)
@click.option(
    "--registry-address",
    envvar="POTLUCK_REGISTRY_ADDRESS",
    default=None,
    help="The pool's image registry as image references name it, e.g. 127.0.0.1:5000; "
    "without it (and --registry-token-key) the pool has no registry [env: POTLUCK_REGISTRY_ADDRESS].",
)
@click.option(
    "--public-url",
    "public_urls",
    envvar="POTLUCK_ALLOCATOR_PUBLIC_URL",
    multiple=True,
    callback=_public_urls,
    help="A URL browsers open the pool's page at, e.g. https://pool.example.org behind a TLS proxy: "
    "the pages answer under its name (only IP addresses and localhost otherwise), take forms "
    "from its origin, and set the https cookie when it is https; repeat for more "
    "[env: POTLUCK_ALLOCATOR_PUBLIC_URL, separated by spaces].",
)
@_user_rate_options(
    "change",
    rate="Changes (allocations and jobs created, extended, released or cancelled) each user may "
    "make a second once their burst is spent",
    burst="Changes each user may make at once",
    defaults=(5, 50),
)
@_user_rate_options(
    "fetch",
    rate="Reads the allocator must fetch from Postgres or the pool registry (allocations that "
    "ended before the retention window or never existed, histories, the allocation page, "
    "the images list) each user may make a second once their burst is spent",
    burst="Such reads each user may make at once",
    defaults=(20, 100),
)
@_seconds_option(
    "--body-read-timeout",
    "body_read_s",
    "BODY_READ_TIMEOUT",
    "Seconds a request's body may take to arrive; past it the API answers 408 BODY_TOO_SLOW (default 30)",
)
@_seconds_option(
    "--idle-connection-timeout",
    "idle_s",
    "IDLE_CONNECTION_TIMEOUT",
    "Seconds the API keeps a connection with no request under way, silent or sending a "
    "request's head slowly (default 30)",
)
@_seconds_option(
    "--lingering-time",
    "lingering_s",
    "LINGERING_TIME",
    "Seconds a connection answered before its request's body arrived (a 408, a 413) keeps "
    "reading what the client still sends before it is closed (default 10)",
    zero=True,
)
@retention_option
def allocator(
    database_url: str,
    nats_url: str,
    nats_seed_file: Path | None,
    stream_replicas: int | None,
    relay: bool,
    listen: str,
    strategy: str,
    registry_token_key: Path | None,
    registry_address: str | None,
    public_urls: tuple[Any, ...],
    change_rate: float | None,
    change_burst: int | None,
    fetch_rate: float | None,
    fetch_burst: int | None,
    body_read_s: float | None,
    idle_s: float | None,
    lingering_s: float | None,
    retention_s: float,
) -> None:
    """Run the allocator: the HTTP API, placement, the allocation lifecycle."""
    from potluck.allocator.engine import AllocatorEngine
    from potluck.allocator.pool_registry import PoolRegistry
    from potluck.allocator.registry_tokens import TokenIssuer
    from potluck.allocator.request_bodies import BODY_READ_S
    from potluck.allocator.service import IDLE_CONNECTION_S, LINGERING_S, AllocatorService, serve_http
    from potluck.allocator.user_rates import DEFAULT_CHANGE_RATE, DEFAULT_FETCH_RATE
    from potluck.bootstrap import Backends, serve
    from potluck.kernel.key_rates import RatePolicy
    from potluck.kernel.signing_keys import SigningKeyError, load_signing_key

    host, port = parse_listen(listen)
    changes = RatePolicy(
        per_s=DEFAULT_CHANGE_RATE.per_s if change_rate is None else change_rate,
        burst=DEFAULT_CHANGE_RATE.burst if change_burst is None else change_burst,
    )
    fetches = RatePolicy(
        per_s=DEFAULT_FETCH_RATE.per_s if fetch_rate is None else fetch_rate,
        burst=DEFAULT_FETCH_RATE.burst if fetch_burst is None else fetch_burst,
    )
    registry = None
    if (registry_token_key is None) != (registry_address is None):
        raise click.UsageError("give both --registry-address and --registry-token-key, or neither")
    if registry_token_key is not None and registry_address is not None:
        try:
            registry = PoolRegistry(registry_address, TokenIssuer(load_signing_key(registry_token_key)))
        except SigningKeyError as exc:
            raise click.UsageError(str(exc)) from None

    async def body(store: Any, nc: Any) -> None:
        from potluck.allocator.metrics import watch_allocator
        from potluck.kernel.metrics import pool_metrics

        engine = AllocatorEngine(
            store,
            strategy=strategy,  # type: ignore[arg-type]
            freeze_loaded=True,
            pool_registry=registry.address if registry is not None else None,
            retention_s=retention_s,
            fetch_rate=fetches,
        )
        watch_allocator(pool_metrics(), engine)
        await AllocatorService(store, nc, engine, registry=registry).run(
            lambda: serve_http(
                engine,
                host,
                port,
                registry=registry,
                nc=nc,
                public_urls=public_urls,
                change_rate=changes,
                body_read_s=BODY_READ_S if body_read_s is None else body_read_s,
                idle_s=IDLE_CONNECTION_S if idle_s is None else idle_s,
                lingering_s=LINGERING_S if lingering_s is None else lingering_s,
            )
        )

    run(
        serve(
            "allocator",
            Backends(database_url, nats_url, nats_seed_file, relay, stream_replicas=stream_replicas),
            body,
        )
    )


@main.command()
@click.option(
    "--database-url",
    envvar="POTLUCK_DATABASE_URL",
    default=None,
    help="Postgres URL of the event log; not needed with --print-client-key or --print-host-key "
    "[env: POTLUCK_DATABASE_URL].",
)
@nats_options_for("to serve")
@stream_replicas_option
@relay_option
@click.option(
    "--listen",
    envvar="POTLUCK_SSHGATEWAY_LISTEN",
    default=None,
    help="HOST:PORT for users (default 127.0.0.1:2222) [env: POTLUCK_SSHGATEWAY_LISTEN].",
)
@click.option(
    "--tunnel-listen",
    envvar="POTLUCK_SSHGATEWAY_TUNNEL_LISTEN",
    default=None,
    help="HOST:PORT hostds dial (default 127.0.0.1:2223) [env: POTLUCK_SSHGATEWAY_TUNNEL_LISTEN].",
)
@click.option(
    "--state-dir",
    envvar="POTLUCK_SSHGATEWAY_STATE_DIR",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the gateway keeps its keys [env: POTLUCK_SSHGATEWAY_STATE_DIR].",
)
@click.option(
    "--print-client-key",
    is_flag=True,
    help="Print the public key members pin as client_key in hostd's [[gateways]], and exit.",
)
@click.option(
    "--print-host-key",
    is_flag=True,
    help="Print the host key users pin (`potluck login --gateway-key`), and exit.",
)
def sshgateway(
    database_url: str | None,
    nats_url: str,
    nats_seed_file: Path | None,
    stream_replicas: int | None,
    relay: bool,
    listen: str | None,
    tunnel_listen: str | None,
    state_dir: Path | None,
    print_client_key: bool,
    print_host_key: bool,
) -> None:
    """Run the SSH gateway: users' sessions to their containers, through each host's hostd.

    Other settings come from POTLUCK_SSHGATEWAY_* variables (services/sshgateway/settings.py);
    --print-client-key and --print-host-key need only the state directory."""
    from potluck.sshgateway.service import client_public_key, host_public_key, run_gateway
    from potluck.sshgateway.settings import GatewaySettings, SettingsError

    if print_client_key or print_host_key:
        from potluck.kernel.ssh_identity import SSHIdentityError

        try:
            keys = GatewaySettings.for_keys(state_dir)
            key = client_public_key(keys) if print_client_key else host_public_key(keys)
        except SettingsError as exc:
            fail(str(exc), 2)
        except SSHIdentityError as exc:
            fail(f"no {'client' if print_client_key else 'host'} key printed: {exc}{_up_gateway(state_dir)}")
        click.echo(key)
        return
    try:
        settings = GatewaySettings.from_env(listen=listen, tunnel_listen=tunnel_listen, state_dir=state_dir)
    except SettingsError as exc:
        fail(str(exc), 2)
    if database_url is None:
        raise click.UsageError("--database-url (or POTLUCK_DATABASE_URL) is needed to serve")
    if nats_seed_file is not None and not nats_seed_file.exists():
        raise click.UsageError(f"--nats-seed-file {nats_seed_file} does not exist")
    from potluck.kernel.ssh_identity import SSHIdentityError
    from potluck.sshgateway.service import load_tunnel_key

    try:
        # Before the log and the bus are reached: a tunnel key no link takes is the operator's to fix.
        load_tunnel_key(settings)
    except SSHIdentityError as exc:
        fail(str(exc), 2)
    from potluck.bootstrap import Backends, serve

    async def body(store: Any, nc: Any) -> None:
        await run_gateway(store, settings, bus=nc, stream_replicas=stream_replicas)

    run(
        serve(
            "sshgateway",
            Backends(database_url, nats_url, nats_seed_file, relay, stream_replicas=stream_replicas),
            body,
        )
    )


CONFIG = click.option(
    "--config",
    "config_path",
    # Where `potluck join` writes it unless told otherwise: a member who joined in this folder
    # heard "Missing option '--config'" from every command that followed.
    default=Path("hostd.toml"),
    show_default=True,
    envvar="POTLUCK_HOSTD_CONFIG",
    type=click.Path(path_type=Path),
    help="hostd configuration file (TOML), as `potluck join` writes it [env: POTLUCK_HOSTD_CONFIG].",
)


@main.command()
@CONFIG
def hostd(config_path: Path) -> None:
    """Donate this machine: run the member's agent (see services/hostd/config.py for the file)."""
    from potluck.hostd.agent import Agent, BusGivenUp, HostdStopped
    from potluck.hostd.config import ConfigError, load_config
    from potluck.runner import exit_crashed, run_tasks_until, run_until_signalled

    try:
        config = load_config(config_path)
        config.nats_seed()
    except ConfigError as exc:
        fail(str(exc), 2)
    from potluck.hostd.state_lock import HELD_EXIT_CODE, StateDirHeld, hold_state_dir

    # Before anything touches the engine, the pool or the state_dir: a second hostd on the same
    # machine's state would register again and drive the same containers (state_lock.py). Held
    # until the process ends; the kernel drops it however it ends.
    try:
        state_lock = hold_state_dir(config.state_dir)
    except StateDirHeld as exc:
        fail(str(exc), HELD_EXIT_CODE)
    except OSError as exc:
        fail(f"hostd cannot lock its state_dir {config.state_dir} (hostd.toml's `state_dir`): {exc}", 2)

    from potluck.telemetry import TelemetryConfigError, configure_telemetry

    async def main(stop: asyncio.Event) -> None:
        await run_tasks_until(stop, Agent(config).run())

    try:
        shutdown_telemetry = configure_telemetry(
            "potluck-hostd", resource_attributes={"potluck.host_id": config.host_id}
        )
    except TelemetryConfigError as exc:
        fail(str(exc), 2)
    from potluck.kernel.ssh_identity import SSHIdentityError

    try:
        run(run_until_signalled(main))
    except HostdStopped as exc:
        if exc.asked:  # the member's own `potluck host leave`: no failure, though for good
            click.echo(str(exc), err=True)
            sys.exit(3)
        fail(str(exc), 3)
    except BusGivenUp as exc:
        fail(str(exc), 1)  # not FINAL_EXIT_CODES: a new connection mends it
    except SSHIdentityError as exc:
        # Its host key file cannot be used (a replaced file of another type): the message names it.
        fail(str(exc), 2)
    except Exception as exc:
        import structlog

        exit_crashed(
            structlog.get_logger("potluck.hostd"),
            "hostd",
            exc,
            hint="hostd exits with code 1 and its supervisor (systemd, `potluck up`) starts it "
            "again, adopting its containers; if it keeps crashing, this line's exception says where",
        )
    finally:
        shutdown_telemetry()
        state_lock.release()


@main.command()
@click.argument("token", required=False)
@click.option(
    "--cpus",
    type=FiniteRange(min=0.1, max=1024),
    default=None,
    help="CPUs to donate [default: half of this machine's].",
)
@click.option("--memory", default="2G", show_default=True, help="Memory to donate (e.g. 4G).")
@click.option("--disk", default="10G", show_default=True, help="Disk to donate (e.g. 20G).")
@click.option(
    "--docker-url",
    envvar="DOCKER_HOST",
    default="unix:///var/run/docker.sock",
    show_default=True,
    help="The Docker engine whose containers the pool gets [env: DOCKER_HOST].",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("hostd.toml"),
    show_default=True,
    help="Where to write hostd's configuration (the credentials file goes beside it).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="hostd's state directory [default: hostd-state beside the configuration].",
)
@click.option(
    "--start/--no-start",
    default=False,
    show_default=True,
    help="Run hostd now, in the foreground; otherwise print the command and a systemd unit.",
)
def join(
    token: str | None,
    cpus: float | None,
    memory: str,
    disk: str,
    docker_url: str,
    config_path: Path,
    state_dir: Path | None,
    start: bool,
) -> None:
    """Join a pool with the one-line TOKEN `potluck ops hosts enroll` printed: donate this machine.

    Left out, or `-`, the token is asked for without echo on a terminal, else read from
    standard input (`potluck join < token`): a token on the command line shows in every local
    user's process list until it is redeemed, and stays in your shell's history."""
    import os

    from potluck.member.join import UNIT_NAME, JoinError, JoinSettings, hostd_argv, systemd_unit
    from potluck.member.join import join as join_pool
    from potluck.token_input import token_from_stdin, warn_token_on_command_line

    if token and token != "-":
        warn_token_on_command_line(
            "the join token", instead="next time give it on standard input (`potluck join ... < token`)"
        )
    if token is None or token == "-":
        token = token_from_stdin("Join token", ask=token is None).strip()
        if not token:
            fail(
                "no join token was typed or read from standard input: give the one line "
                "`potluck ops hosts enroll` printed for this machine (ask your operator)",
                2,
            )

    settings = JoinSettings(
        cpus=cpus if cpus is not None else max(1.0, (os.cpu_count() or 2) / 2),
        memory=memory,
        disk=disk,
        docker_url=docker_url,
        config_path=config_path,
        state_dir=state_dir,
    )
    try:
        joined = join_pool(token, settings)
    except JoinError as exc:
        fail(str(exc))
    click.echo(joined.donation())
    click.echo(f"wrote {joined.config_path} and {joined.config.credentials_file} (keep them private)")
    argv = hostd_argv(joined.config_path)
    if start:
        click.echo("starting hostd")
        sys.stdout.flush()
        os.execv(argv[0], argv)
    unit = joined.config_path.parent / UNIT_NAME
    unit.write_text(systemd_unit(joined.config_path))
    click.echo("start donating with:")
    click.echo(f"  potluck hostd --config {joined.config_path}")
    click.echo(f"or as a service, with the unit written to {unit}:")
    # The folder is not there until a first user unit: `cp` alone failed, or made a file `user`.
    click.echo(
        f"  mkdir -p ~/.config/systemd/user && cp {unit} ~/.config/systemd/user/ && "
        f"systemctl --user enable --now {UNIT_NAME}"
    )
    click.echo("")
    click.echo(systemd_unit(joined.config_path).rstrip())


@main.group()
def host() -> None:
    """Member controls for this machine: pause, resume, drain, leave; its status and policy."""


def _control(config_path: Path, action: str, grace_s: float = 300.0) -> None:
    from potluck.hostd.config import ConfigError, load_config
    from potluck.hostd.member import control

    try:
        config = load_config(config_path)
        reply = run(control(config, action, grace_s))
    except (ConfigError, ConnectionError) as exc:
        fail(str(exc), 2)
    if not reply.ok:
        fail(f"{(reply.error or {}).get('message')} ({(reply.error or {}).get('code')})")
    click.echo(_control_sentence(action, config.host_id, bool(reply.data.get("recorded"))))


def _control_sentence(action: str, host_id: str, recorded: bool, unchanged: str = "") -> str:
    """What a pause, resume, drain or deregister did, as the member and the operator read it."""
    if recorded:
        return f"{action}: done for host {host_id}"
    if action == "drain":
        return f"drain: already so for host {host_id} (the drain under way ends no later)"
    return f"{action}: already so for host {host_id}{unchanged}"


@host.command(name="status")
@CONFIG
def host_status(config_path: Path) -> None:
    """This machine as the registry sees it, and under `hostd` what hostd reads here: donated
    caps, the pool's use, the owner's load, battery, temperature, the owner policy's state and
    its last transitions (JSON)."""
    from potluck.hostd.config import ConfigError, load_config
    from potluck.hostd.member import local_status, status

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        fail(str(exc), 2)
    local = local_status(config)
    try:
        reply = run(status(config))
    except (ConfigError, ConnectionError) as exc:
        click.echo(json.dumps({"hostd": local}, indent=2))
        fail(str(exc), 2)
    if not reply.ok:
        fail(f"{(reply.error or {}).get('message')} ({(reply.error or {}).get('code')})")
    click.echo(json.dumps({**reply.data, "hostd": local}, indent=2))
    if reply.data.get("status") == "left":
        click.echo("this machine left the pool; ask an operator to enroll it again", err=True)


@host.command(name="policy")
@CONFIG
@click.option("--json", "as_json", is_flag=True, help="JSON instead of TOML.")
def host_policy(config_path: Path, as_json: bool) -> None:
    """The owner policy in effect: the config's [policy] with every default filled in."""
    import tomli_w

    from potluck.hostd.config import ConfigError, load_config

    try:
        policy = load_config(config_path).policy
    except ConfigError as exc:
        fail(str(exc), 2)
    data = policy.as_toml()
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(tomli_w.dumps({"policy": data}), nl=False)


@host.command()
@CONFIG
def deregister(config_path: Path) -> None:
    """Take this machine out now: its work is stopped at once (no grace; `drain` gives one) and
    nothing new is placed here until hostd is next started, which registers it again. `leave`
    takes it out for good."""
    _control(config_path, "deregister")


@host.command()
@CONFIG
@click.option(
    "--grace",
    default=300.0,
    show_default=True,
    type=GRACE_RANGE,
    help="Seconds running work gets to finish before it is stopped.",
)
def leave(config_path: Path, grace: float) -> None:
    """Take this machine back for good: drain, then leave the pool.

    Unlike deregister, it stays out across restarts of hostd: coming back needs
    a new enrollment by an operator.
    """
    from potluck.hostd.config import ConfigError, load_config
    from potluck.hostd.member import leave as leave_pool

    try:
        config = load_config(config_path)
        left = run(leave_pool(config, grace, lambda line: click.echo(line, err=True)))
    except (ConfigError, ConnectionError) as exc:
        fail(str(exc), 2)
    error = left.reply.error or {}
    if error.get("code") == "HOST_LEFT":
        click.echo(
            f"left: host {config.host_id} had left the pool already; coming back needs a new enrollment"
        )
        return
    if not left.reply.ok:
        fail(f"{error.get('message')} ({error.get('code')})")
    if left.still_here:
        click.echo(f"{left.still_here} allocation(s) had not ended; they are lost with the host", err=True)
    recorded = left.reply.data.get("recorded") or []
    click.echo(
        f"left: host {config.host_id} {'left the pool' if recorded else 'had left the pool already'}; "
        "its hostd stops, and coming back needs a new enrollment by an operator"
    )


@host.command()
@CONFIG
def pause(config_path: Path) -> None:
    """Freeze running containers and take no new work."""
    _control(config_path, "pause")


@host.command()
@CONFIG
def resume(config_path: Path) -> None:
    """Unfreeze containers and take new work again."""
    _control(config_path, "resume")


@host.command()
@CONFIG
@click.option(
    "--grace",
    default=300.0,
    show_default=True,
    type=GRACE_RANGE,
    help="Seconds running work gets before it is stopped.",
)
def drain(config_path: Path, grace: float) -> None:
    """Take no new work; stop what runs after a grace period."""
    _control(config_path, "drain", grace)


def _attach_ops_tools(group: click.Group) -> None:
    from potluck.ops.cli import register

    register(group)


@main.group(cls=AttachingGroup, attach=_attach_ops_tools, lazy=OPS_LAZY_COMMANDS)
@click.pass_context
def ops(ctx: click.Context) -> None:
    """Operator tools."""
    _own_output_only(ctx)


def _own_output_only(ctx: click.Context) -> None:
    """An operator's command says what it did in its own output; the info lines of the service
    code some of them run in process (each event a host enrollment appends) belong in services'
    logs, and came out as JSON among the command's output. As `potluck-ops` does, they show with
    --log-level INFO (or POTLUCK_LOG_LEVEL) only."""
    from click.core import ParameterSource

    if ctx.find_root().get_parameter_source("log_level") == ParameterSource.DEFAULT:
        configure_logging("WARNING")


@ops.group(name="hosts")
def ops_hosts() -> None:
    """Enroll, list, control and revoke donated machines."""


def parse_duration(value: str) -> "timedelta":
    """`90s`, `30m`, `24h` or `7d` (a bare number is seconds)."""
    from datetime import timedelta

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = value.strip().lower()
    scale = units.get(text[-1:])
    number = text[:-1] if scale else text
    try:
        seconds = float(number) * (scale or 1)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a duration like 30m, 24h or 7d") from None
    if not 60 <= seconds <= 30 * 86400:
        raise click.BadParameter(f"{value!r}: a join token lives between 1 minute and 30 days")
    return timedelta(seconds=seconds)


def _up_gateway(state_dir: Path | None) -> str:
    """Where the gateway's keys are, when `state_dir` (given for a gateway's) is a `potluck up`
    pool's: its gateway keeps them in a folder of its own, which a newcomer cannot guess."""
    from potluck.up_state import pool_files

    if state_dir is None:
        return ""
    gateway = pool_files(state_dir).gateway_state_dir
    if not gateway.is_dir():
        return ""
    return f" ({state_dir} is a `potluck up` pool's state directory: its gateway's is {gateway})"


def _gateway_pin(value: str) -> "GatewayPin":
    """ADDRESS=KEY: KEY is the client key line, a file holding it, or the gateway's state directory."""
    from potluck.contracts.join_token import GatewayPin
    from potluck.sshgateway.service import client_public_key
    from potluck.sshgateway.settings import GatewaySettings

    address, sep, key = value.partition("=")
    if not sep or not address or not key:
        raise click.BadParameter(
            f"{value!r} is not ADDRESS=KEY, e.g. pool.example.org:2223=/var/lib/potluck-sshgateway"
        )
    from potluck.kernel.ssh_identity import SSHIdentityError

    path = Path(key)
    if key.startswith("ssh-"):
        line = key
    elif path.is_dir():
        try:
            line = client_public_key(GatewaySettings.for_keys(path))
        except SSHIdentityError as exc:
            raise click.BadParameter(f"{value!r}: {exc}{_up_gateway(path)}") from None
    elif path.is_file():
        line = path.read_text().strip()
    else:
        raise click.BadParameter(f"{key!r} is neither a key line, a key file nor a gateway state directory")
    return GatewayPin(address=address, client_key=line)


def nats_users_options(
    auth_help: str = "NATS users file to render again without the host's key [env: "
    "POTLUCK_NATS_AUTH_FILE; default: that of a `potluck up` running on the same log].",
) -> Callable[[F], F]:
    """--nats-auth-file, --nats-pid-file, --service-seed-file: the users file a command that
    changes who may connect renders again (default: that of a `potluck up` running on the same
    log)."""

    def options(f: F) -> F:
        return _nats_users_options(f, auth_help)

    return options


def _a_file_to_write(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """A file the command writes after it has recorded something in the log (the NATS users
    file, a credentials file): a folder that is not there or not writable is refused before,
    as it failed after the host was enrolled (its name held, no token printed) as a traceback."""
    if value is None:
        return None
    folder = value.absolute().parent
    if value.is_dir():
        raise click.BadParameter(f"{value} is a directory; give the file's path", ctx, param)
    if not folder.is_dir():
        raise click.BadParameter(
            f"{value}: its folder {folder} does not exist; give a file in an existing folder", ctx, param
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise click.BadParameter(f"{value}: its folder {folder} is not writable by this user", ctx, param)
    return value


def _nats_users_options(f: F, auth_help: str) -> F:
    f = click.option(
        "--service-seed-file",
        envvar="POTLUCK_NATS_SEED_FILE",
        type=click.Path(path_type=Path),
        default=None,
        help="The central services' seed, whose public key stays in the users file.",
    )(f)
    f = click.option(
        "--nats-pid-file",
        envvar="POTLUCK_NATS_PID_FILE",
        type=click.Path(path_type=Path),
        default=None,
        help="nats-server's PID file, to make it reload the users [env: POTLUCK_NATS_PID_FILE].",
    )(f)
    return click.option(
        "--nats-auth-file",
        envvar="POTLUCK_NATS_AUTH_FILE",
        type=click.Path(path_type=Path),
        default=None,
        callback=_a_file_to_write,
        help=auth_help,
    )(f)


@ops_hosts.command(name="enroll")
@click.argument("name")
@click.option(
    "--database-url",
    envvar="POTLUCK_DATABASE_URL",
    default=None,
    help="Postgres URL of the event log [env: POTLUCK_DATABASE_URL; default: the `potluck up` pool's].",
)
@click.option(
    "--credentials-out",
    type=click.Path(path_type=Path),
    default=None,
    callback=_a_file_to_write,
    help="Make the host's key pair here and write its credentials file instead of printing a "
    "join token (the member then writes hostd.toml by hand).",
)
@click.option(
    "--expires",
    default="24h",
    show_default=True,
    help="How long the join token may be redeemed: 30m, 24h, 7d...",
)
@click.option(
    "--nats-url",
    "join_nats_url",
    envvar="POTLUCK_JOIN_NATS_URL",
    default=None,
    help="The NATS URL members' machines reach [env: POTLUCK_JOIN_NATS_URL; default: the "
    "`potluck up` pool's].",
)
@click.option(
    "--gateway",
    "gateways",
    multiple=True,
    help="ADDRESS=KEY of an SSH gateway hostd dials (KEY: its client key line, a file holding it, or "
    "the gateway's state directory); repeat for more [default: the `potluck up` pool's].",
)
@up_state_dir_option
@nats_users_options(
    "NATS users file to re-render [env: POTLUCK_NATS_AUTH_FILE; default: the `potluck up` pool's]."
)
def ops_hosts_enroll(
    name: str,
    database_url: str | None,
    credentials_out: Path | None,
    expires: str,
    join_nats_url: str | None,
    gateways: tuple[str, ...],
    state_dir: Path | None,
    nats_auth_file: Path | None,
    nats_pid_file: Path | None,
    service_seed_file: Path | None,
) -> None:
    """Admit a machine NAME: record it and print its one-line join token (`potluck join`).

    On the machine of a `potluck up` pool no option is needed: the pool's database, NATS,
    users file and gateway are the defaults. With --credentials-out, the key pair is made
    here and written to that file instead (no token). Either way the member's token for the
    web page ("my machine") is printed too: on stderr beside a join token, as `member_token`
    in the JSON beside credentials."""
    from potluck.allocator.members import new_member_token
    from potluck.allocator.users import token_hash
    from potluck.contracts.join_token import encode
    from potluck.contracts.member_events import MemberTokenIssued, member_stream
    from potluck.events import EventStore
    from potluck.kernel.rejections import Rejected
    from potluck.registry.enrollment import (
        enroll_host,
        enroll_with_token,
        read_seed,
        refresh_nats_authorization,
        refuse_taken_name,
        write_credentials,
    )
    from potluck.sshgateway.service import client_public_key
    from potluck.sshgateway.settings import GatewaySettings
    from potluck.up_state import default_state_dir, no_pool_in, pool_files, running

    lifetime = parse_duration(expires)
    pins = [_gateway_pin(g) for g in gateways]
    up_dir = state_dir or default_state_dir()
    up = running(up_dir)
    if up is not None:
        files = pool_files(up_dir)
        database_url = database_url or up.database
        join_nats_url = join_nats_url or up.nats
        nats_auth_file = nats_auth_file or files.nats_auth_file
        nats_pid_file = nats_pid_file or files.nats_pid_file
        service_seed_file = service_seed_file or files.services_seed_file
        if not gateways and up.tunnel:
            from potluck.kernel.ssh_identity import SSHIdentityError

            try:
                key = client_public_key(GatewaySettings.for_keys(files.gateway_state_dir))
            except SSHIdentityError as exc:
                fail(f"the running pool's gateway key: {exc}")
            pins = [_gateway_pin(f"{up.tunnel}={key}")]
    if database_url is None:
        raise click.UsageError(
            "give --database-url (or POTLUCK_DATABASE_URL): " + no_pool_in(up_dir, state_dir_option=True)
        )
    if credentials_out is None and join_nats_url is None:
        raise click.UsageError(
            "give --nats-url (or POTLUCK_JOIN_NATS_URL), the NATS URL members reach: "
            + no_pool_in(up_dir, state_dir_option=True)
        )
    if nats_auth_file is not None and service_seed_file is None:
        raise click.UsageError("--nats-auth-file needs --service-seed-file: the services' key stays in it")
    db = database_url

    async def refresh(store: EventStore) -> None:
        if nats_auth_file is not None and service_seed_file is not None:
            await refresh_nats_authorization(
                store, nats_auth_file, [read_seed(service_seed_file)], nats_pid_file
            )

    member_token = new_member_token()

    async def issue_member_token(store: EventStore, host_id: str) -> None:
        # Only the digest is logged; the member signs in to the web page's "my machine" with it.
        issued = MemberTokenIssued(token_sha256=token_hash(member_token), host_ids=[host_id])
        await store.append(member_stream(host_id), [issued], metadata={"actor": "operator"})

    async def with_credentials(store: EventStore) -> str:
        await refuse_taken_name(store, name)
        host_id, key = await enroll_host(store, name)
        write_credentials(credentials_out or Path(f"{name}.creds"), host_id, key)
        await issue_member_token(store, host_id)
        await refresh(store)
        return host_id

    async def with_token(store: EventStore) -> str:
        await refuse_taken_name(store, name)
        token = await enroll_with_token(
            store, name, nats_url=str(join_nats_url), gateways=pins, expires_in=lifetime
        )
        await issue_member_token(store, token.host_id)
        await refresh(store)
        return encode(token)

    try:
        if credentials_out is not None:
            host_id = run(with_store(db, with_credentials))
        else:
            printed = run(with_store(db, with_token))
    except Rejected as exc:
        fail(exc.message)
    if credentials_out is None:
        if nats_auth_file is None:
            click.echo(
                "warning: no --nats-auth-file: the token's identity is not in the NATS users file yet; "
                "re-render it before the member joins",
                err=True,
            )
        # stdout holds the join token alone (`... > token`, then `potluck join < token`): the web
        # token goes to stderr.
        click.echo(f"member's web page token (sign in to see this machine): {member_token}", err=True)
        click.echo(printed)
        return
    # stdout stays the JSON scripts read (docker-compose.yml's trial host); what the operator
    # hands the member next, and the hostd.toml it goes with, on stderr.
    click.echo(
        f"enrolled {name} as {host_id}: its credentials are in {credentials_out} (hand the file to "
        "the member privately, with member_token, their web page token, below); a hostd.toml to put "
        "beside it (the member sets state_dir and [donate]; README, Quick start: member):\n"
        + _hostd_toml(host_id, credentials_out.name, join_nats_url, pins),
        err=True,
    )
    click.echo(
        json.dumps(
            {
                "host_id": host_id,
                "name": name,
                "credentials_file": str(credentials_out),
                "member_token": member_token,
            }
        )
    )


def _hostd_toml(host_id: str, credentials: str, nats_url: str | None, pins: "list[GatewayPin]") -> str:
    """The hostd.toml of a machine enrolled with --credentials-out, as far as the operator knows
    it (the README's example by hand: the NATS URL and the gateways' keys were the operator's to
    find); TOML's basic strings take JSON's escapes."""
    lines = [f"host_id = {json.dumps(host_id)}", f"credentials_file = {json.dumps(credentials)}"]
    if nats_url:
        lines.append(f"nats_url = {json.dumps(nats_url)}")
    else:
        lines.append('nats_url = "nats://POOL:4222"   # the NATS URL members reach (--nats-url puts it here)')
    lines += [
        'state_dir = "/var/lib/potluck-hostd"',
        "",
        "[donate]",
        "cpus = 2",
        'memory = "4G"',
        'disk = "20G"',
    ]
    for pin in pins:
        lines += ["", "[[gateways]]", f"address = {json.dumps(pin.address)}"]
        lines.append(f"client_key = {json.dumps(pin.client_key)}")
    return "\n".join(lines)


def _nats_users(
    database_url: str, auth_file: Path | None, pid_file: Path | None, seed_file: Path | None
) -> tuple[Path | None, Path | None, Path | None]:
    """The users file, nats-server's PID file and the services' seed: as given, else those of the
    `potluck up` running in POTLUCK_HOME (or ~/.potluck) on the same log, else none."""
    from potluck.up_state import default_state_dir, nats_files

    if auth_file is None:
        local = nats_files(default_state_dir(), database_url)
        if local is not None:
            return local.auth_file, pid_file or local.pid_file, seed_file or local.seed_file
    return auth_file, pid_file, seed_file


async def _render_nats_users(
    store: "EventStore", auth_file: Path | None, pid_file: Path | None, seed_file: Path | None
) -> bool:
    """Render the users file from the log and reload nats-server; False: no file to render."""
    from potluck.registry.enrollment import read_seed, refresh_nats_authorization

    if auth_file is None:
        return False
    seeds = [read_seed(seed_file)] if seed_file else []
    await refresh_nats_authorization(store, auth_file, seeds, pid_file)
    return True


def _warn_not_rendered() -> None:
    click.echo(
        "warning: no NATS users file given (--nats-auth-file): the host's key is still accepted "
        "until the file is rendered again (e.g. by the next `ops hosts enroll` with it)",
        err=True,
    )


async def _operator_refusal(store: "EventStore", exc: "Rejected", host_id: str, what: str) -> str:
    """A refusal of an operator's command on HOST_ID, in the operator's terms: the registry's own
    words speak to the member of the machine ("ask an operator to enroll it", "start its hostd")."""
    from potluck.registry.enrollment import current_hosts

    if exc.code == "NOT_ENROLLED":
        named = sorted(h.host_id for h in (await current_hosts(store)).hosts.values() if h.name == host_id)
        if named:
            return (
                f"{host_id!r} is the name of host {', '.join(named)}; {what} takes the host's id: "
                f"give {named[-1]}"
            )
        return (
            f"no host {host_id!r} in the pool's log: check the id (`potluck ops hosts list` lists "
            "every host with its id, h-...)"
        )
    if exc.code == "NOT_REGISTERED":
        return (
            f"host {host_id} has not registered (enrolled, and its hostd has not started since, or "
            f"it was deregistered): there is nothing to {what} until it does; `potluck ops hosts "
            f"revoke {host_id}` or `control {host_id} leave` take it out of the pool now"
        )
    if exc.code in ("HOST_LEFT", "HOST_REVOKED"):
        gone = "left the pool" if exc.code == "HOST_LEFT" else "was revoked"
        return (
            f"host {host_id} {gone} for good: there is nothing to {what}; only a new enrollment "
            "(`potluck ops hosts enroll NAME`) brings the machine back"
        )
    return f"{exc.message} ({exc.code})"


#: Controls that take the host's key out of the NATS users file. A deregistered host keeps it:
#: its member brings it back by starting hostd again (potluck.registry.admitted_keys).
_KEY_TAKING_ACTIONS = frozenset({"leave"})


#: What the operator's host commands print: a sentence for whoever reads the terminal, the
#: JSON they printed before for a script that asks for it.
SENTENCE_OR_JSON = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a sentence."
)


@ops_hosts.command(name="control")
@click.argument("host_id")
@click.argument("action", type=click.Choice(["pause", "resume", "drain", "deregister", "leave"]))
@operator_database_option
@click.option(
    "--grace",
    default=300.0,
    show_default=True,
    type=GRACE_RANGE,
    help="With drain: seconds running work gets before it is stopped.",
)
@nats_users_options()
@SENTENCE_OR_JSON
def ops_hosts_control(
    host_id: str,
    action: str,
    database_url: str,
    grace: float,
    nats_auth_file: Path | None,
    nats_pid_file: Path | None,
    service_seed_file: Path | None,
    as_json: bool,
) -> None:
    """Pause, resume, drain, deregister or leave (for good) HOST_ID as the operator.

    Leave also renders the NATS users file again without the host's key (it stays out for
    good); a deregistered host keeps its key and comes back when its hostd starts again.
    """
    from datetime import UTC, datetime

    from potluck.contracts.messages import ControlHost
    from potluck.events import EventStore
    from potluck.kernel.rejections import Rejected
    from potluck.registry import host as aggregate
    from potluck.registry.repository import decide_on_host

    command = ControlHost.model_validate({"action": action, "grace_s": grace})
    files = _nats_users(database_url, nats_auth_file, nats_pid_file, service_seed_file)

    async def go(store: EventStore) -> tuple[list[str], bool] | str:
        try:
            outcome = await decide_on_host(
                store,
                host_id,
                lambda s: aggregate.control(s, host_id, command, "operator", now=datetime.now(UTC)),
                {"actor": "operator"},
            )
        except Rejected as exc:
            return await _operator_refusal(store, exc, host_id, action)
        rendered = action in _KEY_TAKING_ACTIONS and await _render_nats_users(store, *files)
        return [type(e).type_name for e in outcome.events], rendered

    done = run(with_store(database_url, go))
    if isinstance(done, str):
        fail(done)
        return
    recorded, rendered = done
    if action in _KEY_TAKING_ACTIONS and not rendered:
        _warn_not_rendered()
    if as_json:
        click.echo(json.dumps({"host_id": host_id, "action": action, "recorded": recorded}))
    else:
        click.echo(_control_sentence(action, host_id, bool(recorded), unchanged="; nothing recorded"))


@ops_hosts.command(name="list")
@operator_database_option
@click.option(
    "--json/--table",
    "as_json",
    default=None,
    help="One JSON object per host per line [default: a table on a terminal, JSON when piped].",
)
def ops_hosts_list(database_url: str, as_json: bool | None) -> None:
    """Hosts as the log has them, each with its state: active, paused, draining, asleep,
    unreachable, lost, deregistered, left or revoked (and enrolled: never registered); a host
    whose hostd runs but whose Docker engine stopped answering says so in NOTE (`engine_away`)."""
    from potluck.events import EventStore
    from potluck.readmodels.hosts import engine_away
    from potluck.registry.enrollment import current_hosts

    async def go(store: EventStore) -> list[dict[str, Any]]:
        view = await current_hosts(store)
        now = await store.log_clock()
        return [
            {
                "host_id": h.host_id,
                "name": h.name,
                "status": h.status,
                "admin": h.admin,
                "liveness": h.liveness,
                "donated": h.donated.model_dump() if h.donated else None,
                "labels": h.labels,
                "revoked": {"by": h.revoked_by, "reason": h.revoked_reason} if h.admin == "revoked" else None,
                # Null until its hostd first registers: an enrolled host has spoken none yet.
                "hostd_version": h.hostd_version or None,
                "contract": h.contract,
                # Whether root in its containers is root on the member's machine (EngineFacts).
                "user_namespaces": h.engine.user_namespaces if h.engine else None,
                # Its hostd runs but its Docker engine stopped answering (HostEngineLost).
                "engine_away": engine_away(h),
                # Shut out of NATS now for holding too many connections (HostConnectionsCapped).
                "connections_capped": {
                    "until": h.capped_until.isoformat(),
                    "connections": h.capped_connections,
                    "limit": h.capped_limit,
                }
                if h.capped_until is not None and h.capped(now)
                else None,
            }
            for h in sorted(view.hosts.values(), key=lambda h: h.host_id)
        ]

    rows = run(with_store(database_url, go))
    if as_json is None:
        as_json = not sys.stdout.isatty()
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    click.echo(_hosts_table(rows))


def _hosts_table(rows: list[dict[str, Any]]) -> str:
    from potluck.contracts.compatibility import CONTRACT_VERSION
    from potluck.kernel.terminal_text import shown

    header = ("HOST", "NAME", "STATUS", "CPUS", "MEMORY", "DISK", "CONTRACT", "USERNS", "NOTE")
    lines = [header]
    for row in rows:
        donated = row["donated"] or {}
        revoked = row["revoked"]
        note = (
            f"by {revoked['by']}" + (f": {revoked['reason']}" if revoked["reason"] else "") if revoked else ""
        )
        if donated and not revoked and row["contract"] != CONTRACT_VERSION:
            contract = row["contract"]
            note = f"hostd speaks contract {contract}, the pool {CONTRACT_VERSION}: nothing is placed here"
        if away := row.get("engine_away"):
            note = (
                f"Docker engine away since {away['since']}: hostd runs, nothing is placed here "
                "until its member starts Docker there"
            )
        if capped := row.get("connections_capped"):
            note = (
                f"shut out of NATS until {capped['until']}: its key held {capped['connections']} "
                f"connections (a host may hold {capped['limit']})"
            )
        lines.append(
            (
                shown(row["host_id"]),
                shown(row["name"]),  # a member's machine's name: not the operator's own text
                shown(row["status"]),
                f"{donated['cpus']:g}" if donated else "-",
                _size(donated.get("memory_bytes")),
                _size(donated.get("disk_bytes")),
                "-" if row["contract"] is None else str(row["contract"]),  # never registered: none yet
                shown(row["user_namespaces"] or "-"),
                shown(note),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, factor in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= factor:
            return f"{n / factor:.3g}{unit}"
    return str(n)


@ops_hosts.command(name="revoke")
@click.argument("host_id")
@click.option("--reason", default="", help="Why (stolen, compromised...): recorded and shown to its users.")
@operator_database_option
@nats_users_options()
@SENTENCE_OR_JSON
def ops_hosts_revoke(
    host_id: str,
    reason: str,
    database_url: str,
    nats_auth_file: Path | None,
    nats_pid_file: Path | None,
    service_seed_file: Path | None,
    as_json: bool,
) -> None:
    """Evict HOST_ID (a stolen or compromised machine) for good.

    Records who revoked it ($USER) and why, takes its key out of the NATS users file and
    reloads nats-server (its connections close, its key is refused from then on); its
    allocations are lost with the reason, its gateway links closed.
    """
    import os

    from potluck.events import EventStore
    from potluck.kernel.rejections import Rejected
    from potluck.registry.enrollment import revoke_host

    by = os.environ.get("USER") or "operator"
    files = _nats_users(database_url, nats_auth_file, nats_pid_file, service_seed_file)

    async def go(store: EventStore) -> tuple[list[str], bool] | str:
        try:
            recorded = await revoke_host(store, host_id, by=by, reason=reason)
        except Rejected as exc:
            return await _operator_refusal(store, exc, host_id, "revoke")
        return recorded, await _render_nats_users(store, *files)

    done = run(with_store(database_url, go))
    if isinstance(done, str):
        fail(done)
        return
    recorded, rendered = done
    if not rendered:
        _warn_not_rendered()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "host_id": host_id,
                    "revoked_by": by,
                    "reason": reason,
                    "recorded": recorded,
                    "nats_users_file": str(files[0]) if rendered else None,
                }
            )
        )
    elif not recorded:
        click.echo(f"host {host_id} was already revoked; nothing recorded")
    else:
        why = f" ({reason})" if reason else ""
        # Where its key went out only when it did: else the warning above says what to do.
        key = f"; its key is out of {files[0]}" if rendered else ""
        click.echo(f"revoked host {host_id} as {by}{why}{key}")


_TOKEN_JSON_HELP = 'Print {"user": NAME, "token": TOKEN} for scripts instead of the token alone.'


@ops.group(name="users")
def ops_users() -> None:
    """Add, list and remove users of the HTTP API, change their quotas and give them new tokens;
    the operator's web token."""


@ops_users.command(name="add")
@click.argument("name")
@operator_database_option
@click.option(
    "--cpus",
    type=FiniteRange(min=0.01),
    default=8.0,
    show_default=True,
    help="Quota: CPUs held at once.",
)
@click.option("--memory", default="16G", show_default=True, help="Quota: memory held at once (e.g. 16G).")
@click.option("--disk", default="64G", show_default=True, help="Quota: writable disk held at once.")
@click.option(
    "--allocations",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Quota: allocations held at once.",
)
@click.option("--json", "as_json", is_flag=True, help=_TOKEN_JSON_HELP)
def ops_users_add(
    name: str, database_url: str, cpus: float, memory: str, disk: str, allocations: int, as_json: bool
) -> None:
    """Add user NAME and print their bearer token (shown once; only its hash is kept).

    The name of a removed user is refused: their allocations, jobs and images stay theirs
    (`ops users restore NAME` lets the same person back in)."""
    from potluck.allocator.users import add_user, check_quota_bounds
    from potluck.contracts.allocation_events import Quota
    from potluck.kernel.rejections import Rejected
    from potluck.kernel.sizes import parse_size

    try:
        quota = Quota(
            cpus=cpus,
            memory_bytes=parse_size(memory),
            disk_bytes=parse_size(disk),
            allocations=allocations,
        )
        check_quota_bounds(quota.model_dump())
    except ValueError as exc:
        fail(str(exc), 2)
    except Rejected as exc:
        fail(exc.message, 2)

    said = (
        f"added user {name} (quota: {cpus:g} CPUs, {memory} memory, {disk} disk, {allocations} "
        "allocations held at once)"
    )
    _decide_for_user(
        database_url,
        name,
        lambda view: add_user(view.users.get(name), name, quota, removed=view.removed.get(name)),
        said,
        as_json,
    )


@ops_users.command(name="rotate-token")
@click.argument("name")
@operator_database_option
@click.option("--json", "as_json", is_flag=True, help=_TOKEN_JSON_HELP)
def ops_users_rotate_token(name: str, database_url: str, as_json: bool) -> None:
    """Give user NAME a new bearer token and print it; the old token stops working."""
    from potluck.allocator.users import rotate_token

    said = (
        f"gave user {name} a new token; the old one no longer works (web pages signed in with it "
        "are signed out)"
    )
    _decide_for_user(
        database_url,
        name,
        lambda view: rotate_token(view.users.get(name), name, removed=name in view.removed),
        said,
        as_json,
    )


@ops_users.command(name="remove")
@click.argument("name")
@click.option(
    "--reason", default="", help="Why (left the group, token leaked...): recorded and shown to them."
)
@operator_database_option
@SENTENCE_OR_JSON
def ops_users_remove(name: str, reason: str, database_url: str, as_json: bool) -> None:
    """Remove user NAME: their token is refused from then on (web pages signed in with it are
    signed out), the SSH gateway refuses their logins, the allocator releases their allocations,
    cancels their jobs and removes the containers they keep, each with the reason. Their history
    stays in the log, and the name stays theirs: `ops users add NAME` refuses it, `ops users
    restore NAME` lets them back in."""
    import os

    from potluck.allocator.users import remove_user

    by = os.environ.get("USER") or ""
    recorded = _user_decision(
        database_url, name, lambda view: (remove_user(view, name, by=by, reason=reason), None)
    )[0]
    if as_json:
        click.echo(json.dumps({"user": name, "removed_by": by, "reason": reason, "recorded": recorded}))
    elif not recorded:
        click.echo(f"user {name} was already removed; nothing recorded")
    else:
        why = f" ({reason})" if reason else ""
        click.echo(
            f"removed user {name}{why}: their token no longer works, and the allocator releases "
            "their allocations and cancels their jobs (`potluck ops status` shows them go)"
        )


def _quota_change_options(f: F) -> F:
    """--cpus, --memory, --disk, --allocations, each None unless given (`_quota_changes`)."""
    for option in reversed(
        [
            click.option(
                "--cpus", type=FiniteRange(min=0.01), default=None, help="Quota: CPUs held at once."
            ),
            click.option("--memory", default=None, help="Quota: memory held at once (e.g. 16G)."),
            click.option("--disk", default=None, help="Quota: writable disk held at once."),
            click.option(
                "--allocations",
                type=click.IntRange(min=1),
                default=None,
                help="Quota: allocations held at once.",
            ),
        ]
    ):
        f = option(f)
    return f


def _quota_changes(
    cpus: float | None, memory: str | None, disk: str | None, allocations: int | None
) -> dict[str, float | int]:
    """The options given, as Quota's fields; a size that is none fails the command (exit 2)."""
    from potluck.kernel.sizes import parse_size

    changes: dict[str, float | int] = {}
    try:
        if cpus is not None:
            changes["cpus"] = cpus
        if memory is not None:
            changes["memory_bytes"] = parse_size(memory)
        if disk is not None:
            changes["disk_bytes"] = parse_size(disk)
    except ValueError as exc:
        fail(str(exc), 2)
    if allocations is not None:
        changes["allocations"] = allocations
    return changes


@ops_users.command(name="restore")
@click.argument("name")
@operator_database_option
@_quota_change_options
@click.option("--json", "as_json", is_flag=True, help=_TOKEN_JSON_HELP)
def ops_users_restore(
    name: str,
    database_url: str,
    cpus: float | None,
    memory: str | None,
    disk: str | None,
    allocations: int | None,
    as_json: bool,
) -> None:
    """Let removed user NAME, the same person, back in and print their new bearer token (shown
    once; the token they held when removed stays dead). They see their own allocations and jobs
    again. Their quota is the one they had, but for the options given."""
    import os

    from potluck.allocator.users import restore_user

    by = os.environ.get("USER") or ""
    changes = _quota_changes(cpus, memory, disk, allocations)
    _, (token, quota) = _user_decision(
        database_url, name, lambda view: restore_user(view, name, changes, by=by)
    )
    _show_token(
        name,
        token,
        f"restored user {name}, who sees their own allocations and jobs again (quota: {_quota_said(quota)})",
        as_json,
    )


@ops_users.command(name="set-quota")
@click.argument("name")
@operator_database_option
@_quota_change_options
@SENTENCE_OR_JSON
def ops_users_set_quota(
    name: str,
    database_url: str,
    cpus: float | None,
    memory: str | None,
    disk: str | None,
    allocations: int | None,
    as_json: bool,
) -> None:
    """Change user NAME's quota: only the options given change. New requests are judged against
    it; what they hold over a lowered quota is kept, but nothing new is placed for them until they
    are under it, and their requests still waiting that it no longer admits are refused."""
    from potluck.allocator.users import change_quota

    changes = _quota_changes(cpus, memory, disk, allocations)
    recorded, quota = _user_decision(
        database_url,
        name,
        lambda view: change_quota(view.users.get(name), name, changes, removed=name in view.removed),
    )
    if as_json:
        click.echo(json.dumps({"user": name, "quota": quota.model_dump(mode="json"), "recorded": recorded}))
        return
    said = _quota_said(quota)
    if not recorded:
        click.echo(f"user {name}'s quota is {said} already; nothing recorded")
    else:
        click.echo(f"user {name}'s quota is now {said}")


def _quota_said(quota: "Quota") -> str:
    from potluck.kernel.sizes import format_size

    return (
        f"{quota.cpus:g} CPUs, {format_size(quota.memory_bytes)} memory, {format_size(quota.disk_bytes)} "
        f"disk, {quota.allocations} allocations held at once"
    )


@ops_users.command(name="list")
@operator_database_option
@SENTENCE_OR_JSON
def ops_users_list(database_url: str, as_json: bool) -> None:
    """List the users, each with their quota, and those removed (who and why)."""
    from potluck.events import EventStore

    async def go(store: EventStore) -> "UsersView":
        return _users_folded(await store.read_category("user"), reader="potluck ops users list")

    view = run(with_store(database_url, go))
    if as_json:
        for name in sorted(view.users):
            quota = view.users[name].quota.model_dump(mode="json")
            click.echo(json.dumps({"user": name, "status": "active", "quota": quota}))
        for name in sorted(view.removed):
            gone = view.removed[name]
            click.echo(json.dumps({"user": name, "status": "removed", "by": gone.by, "reason": gone.reason}))
        return
    if not view.users and not view.removed:
        click.echo("no users yet; `potluck ops users add NAME` adds one")
        return
    from potluck.kernel.terminal_text import shown

    for name in sorted(view.users):
        click.echo(f"{name}  {_quota_said(view.users[name].quota)}")
    for name in sorted(view.removed):
        gone = view.removed[name]
        click.echo(
            shown(
                f"{name}  removed"
                + (f" by {gone.by}" if gone.by else "")
                + (f": {gone.reason}" if gone.reason else "")
            )
        )


@ops_users.command(name="web-token")
@operator_database_option
@click.option(
    "--json", "as_json", is_flag=True, help='Print {"token": TOKEN} for scripts instead of the token alone.'
)
def ops_users_web_token(database_url: str, as_json: bool) -> None:
    """Print a new operator token for the web page, which shows every user's allocations to it;
    the previous one stops working. Only its hash is kept.

    Like `ops users add`: the token alone on stdout, what was done on stderr."""
    from potluck.allocator.members import new_member_token
    from potluck.allocator.users import token_hash
    from potluck.contracts.member_events import OPERATORS_STREAM, OperatorWebTokenIssued
    from potluck.events import EventStore

    token = new_member_token()

    async def go(store: EventStore) -> None:
        issued = OperatorWebTokenIssued(token_sha256=token_hash(token))
        await store.append(OPERATORS_STREAM, [issued], metadata={"actor": "operator"})

    run(with_store(database_url, go))
    if as_json:
        click.echo(json.dumps({"token": token}))
        return
    click.echo(
        "made a new operator token for the web page; the previous one no longer works (pages "
        "signed in with it are signed out). It is shown this once (only its hash is kept) and is "
        "below: sign in with it on the allocator's web page (/web/signin) to see every user's "
        "allocations",
        err=True,
    )
    click.echo(token)


def _decide_for_user(
    database_url: str,
    name: str,
    decide: "Callable[[UsersView], tuple[list[Event], str]]",
    said: str,
    as_json: bool,
) -> None:
    """`_user_decision`, which makes a token; print it.

    stdout holds the token alone (`TOKEN=$(potluck ops users add bob)`, as `ops hosts enroll`
    and `ops users web-token` print theirs); what was done goes to stderr. `as_json`: the
    object scripts read instead."""
    _, token = _user_decision(database_url, name, decide)
    _show_token(name, token, said, as_json)


def _show_token(name: str, token: str, said: str, as_json: bool) -> None:
    """The token alone on stdout, `said` (what was done) on stderr; `as_json`: the object."""
    if as_json:
        click.echo(json.dumps({"user": name, "token": token}))
        return
    click.echo(
        f"{said}; their token, shown this once (only its hash is kept), is below: hand it to them "
        "privately, for `potluck login` (which asks for it, unechoed) and the web page",
        err=True,
    )
    click.echo(token)


def _users_folded(records: "Sequence[RecordedEvent]", *, reader: str) -> "UsersView":
    """The users `records` (of user streams, in log order) make; one unreadable is skipped, logged."""
    from potluck.allocator.users import UsersView
    from potluck.events import SkippedEvents, decode_or_skip

    view = UsersView()
    skipped = SkippedEvents()
    for record in records:
        event = decode_or_skip(record, skipped, reader=reader)
        if event is not None:
            view.apply(event)
    return view


def _user_decision(
    database_url: str, name: str, decide: "Callable[[UsersView], tuple[list[Event], T]]"
) -> "tuple[list[str], T]":
    """Fold user NAME's stream, let `decide` choose, append at the version read; the types of the
    events recorded (none: nothing to do) and what `decide` answered beside them. A refusal fails
    the command: exit 2 for what was asked wrong, 1 otherwise."""
    from potluck.contracts.allocation_events import user_stream
    from potluck.events import EventStore
    from potluck.kernel.rejections import Rejected

    async def go(store: EventStore) -> "tuple[list[str], T]":
        records = await store.read_stream(user_stream(name))
        view = _users_folded(records, reader="potluck ops users")
        events, answer = decide(view)
        if events:
            await store.append(
                user_stream(name), events, expected_version=len(records), metadata={"actor": "operator"}
            )
        return [type(e).__name__ for e in events], answer

    try:
        return run(with_store(database_url, go))
    except Rejected as exc:
        fail(exc.message, 2 if exc.status == 400 else 1)


def _a_size(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """`value` if it is a size (checked before anything starts: hostd would refuse it only once
    the whole pool was up)."""
    from potluck.kernel.sizes import parse_size

    try:
        parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    return value


def _ports_asked_otherwise(ctx: click.Context, pool: "Running") -> list[str]:
    """The port options given on the command line that the running `pool` does not listen on,
    each as `--option ASKED (the pool's: PORT)`."""
    listening = {
        "api_port": pool.api,
        "nats_port": pool.nats,
        "postgres_port": pool.database.split("@", 1)[-1].split("/", 1)[0],
        "ssh_port": pool.ssh,
        "tunnel_port": pool.tunnel,
        "registry_port": pool.registry,
    }
    differ = []
    for name, address in listening.items():
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.COMMANDLINE or not address:
            continue
        port = address.rstrip("/").rsplit(":", 1)[-1]
        if port != str(ctx.params[name]):
            differ.append(f"--{name.replace('_', '-')} {ctx.params[name]} (the pool's: {port})")
    return differ


STATE_DIR = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="POTLUCK_HOME",
    help="Where the pool keeps its state [env: POTLUCK_HOME; default: ~/.potluck].",
)


@main.command()
@STATE_DIR
@click.option("--detach", is_flag=True, help="Run in the background; `potluck down` stops it.")
@click.option("--api-port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--nats-port", type=click.IntRange(1, 65535), default=4222, show_default=True)
@click.option("--postgres-port", type=click.IntRange(1, 65535), default=55432, show_default=True)
@click.option(
    "--ssh-port",
    type=click.IntRange(1, 65535),
    default=2222,
    show_default=True,
    help="Users' ssh connects here.",
)
@click.option(
    "--tunnel-port",
    type=click.IntRange(1, 65535),
    default=2223,
    show_default=True,
    help="hostds dial the gateway here.",
)
@click.option(
    "--registry-port",
    type=click.IntRange(1, 65535),
    default=5050,
    show_default=True,
    help="The pool's image registry; part of every pool image's name, so keep it.",
)
@click.option("--cpus", type=FiniteRange(min=0.1), default=None, help="CPUs this machine donates.")
@click.option(
    "--memory", default="2G", show_default=True, callback=_a_size, help="Memory this machine donates."
)
@click.option("--disk", default="10G", show_default=True, callback=_a_size, help="Disk this machine donates.")
@click.pass_context
def up(
    ctx: click.Context,
    state_dir: Path | None,
    detach: bool,
    api_port: int,
    nats_port: int,
    postgres_port: int,
    ssh_port: int,
    tunnel_port: int,
    registry_port: int,
    cpus: float | None,
    memory: str,
    disk: str,
) -> None:
    """Bring a whole pool up on this machine (Ctrl-C stops it; the event log is kept).

    A port option not given is the port the state directory's last pool came up on (pushed
    images' names and members' hostd.toml hold them), else its default."""
    from rich.console import Console

    _own_output_only(ctx)

    from potluck import up as local
    from potluck import up_state
    from potluck.localstack import LocalStackError

    last = local.last_ports(state_dir or up_state.default_state_dir())

    def kept(name: str, given: int) -> int:
        if ctx.get_parameter_source(name) is click.core.ParameterSource.DEFAULT:
            return last.get(name, given)
        return given

    api_port, nats_port = kept("api_port", api_port), kept("nats_port", nats_port)
    postgres_port, ssh_port = kept("postgres_port", postgres_port), kept("ssh_port", ssh_port)
    tunnel_port, registry_port = kept("tunnel_port", tunnel_port), kept("registry_port", registry_port)

    # log_path off: each step's line ended in "cli.py:1614", the line of this module that said it.
    console = Console(stderr=True, log_path=False)
    settings = local.UpSettings(
        state_dir or up_state.default_state_dir(),
        api_port,
        nats_port,
        postgres_port,
        ssh_port,
        tunnel_port,
        cpus or local.UpSettings.cpus,
        memory,
        disk,
        registry_port,
    )
    shared = local.shared_ports(settings, postgres=not os.environ.get("POTLUCK_DATABASE_URL"))
    if shared is not None:
        raise click.UsageError(shared, ctx)
    already = up_state.running(settings.state_dir)
    if already is not None:
        differ = _ports_asked_otherwise(ctx, already)
        if differ:
            # The running pool keeps its ports: saying "already up" alone would let the user
            # believe the ports they asked for are the pool's.
            fail(
                f"a pool is already up with state in {settings.state_dir} (pid {already.pid}), on "
                f"other ports than asked ({', '.join(differ)}); `potluck down` stops it, or give "
                "--state-dir (or POTLUCK_HOME) another directory for a second pool"
            )
        click.echo(f"already up (pid {already.pid}); `potluck down` stops it.")
        click.echo("\n".join(local.summary(already)))
        return
    if detach:
        argv = [
            "up",
            "--state-dir",
            str(settings.state_dir),
            "--api-port",
            str(api_port),
            "--nats-port",
            str(nats_port),
            "--postgres-port",
            str(postgres_port),
            "--ssh-port",
            str(ssh_port),
            "--tunnel-port",
            str(tunnel_port),
            "--registry-port",
            str(registry_port),
            "--cpus",
            str(settings.cpus),
            "--memory",
            memory,
            "--disk",
            disk,
        ]
        try:
            with console.status("starting the pool in the background"):
                ready = local.start_detached(settings, argv)
        except LocalStackError as exc:
            from potluck.kernel.terminal_text import shown

            # Several lines (the end of up.log): each shown escaped, the line breaks kept.
            fail("\n".join(shown(line) for line in str(exc).splitlines()), escaped=True)
        click.echo("\n".join(local.summary(ready)))
        for notice in ready.notices:
            # In the foreground `say` showed it as it happened; here only up.log held it.
            click.echo(f"\nnote: {notice}", err=True)
        return

    status = console.status("starting")

    def say(message: str) -> None:
        status.update(message)
        console.log(message)

    def on_ready(ready: "up_state.Running") -> None:
        status.stop()
        click.echo("\n".join(local.summary(ready)))
        click.echo("\nCtrl-C stops the pool (the event log is kept).")

    status.start()
    try:
        run(local.serve(settings, say, on_ready))
    except local.AlreadyUp:
        status.stop()
        click.echo("already up; `potluck down` stops it.")
    except LocalStackError as exc:
        status.stop()
        from potluck.kernel.terminal_text import shown

        # Several lines (a server's log tail): each shown escaped, the line breaks kept, as
        # --detach does; fail() alone printed them as `\x0a` in one long line.
        fail("\n".join(shown(line) for line in str(exc).splitlines()), escaped=True)
    finally:
        status.stop()


@main.command()
@STATE_DIR
def down(state_dir: Path | None) -> None:
    """Stop a pool started with `potluck up` (the event log is kept)."""
    from potluck import up as local
    from potluck.localstack import LocalStackError
    from potluck.up_state import default_state_dir

    state = state_dir or default_state_dir()
    try:
        pid = local.stop(state)
    except LocalStackError as exc:
        fail(str(exc))
    if pid is None:
        fail(
            f"not running: no `potluck up` pool runs with state in {state}, so nothing was stopped "
            "(give --state-dir, or POTLUCK_HOME, the directory of the pool to stop)"
        )
    click.echo("stopped.")


if __name__ == "__main__":
    main()
