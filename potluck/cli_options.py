"""Click options that more than one command group shares (services, operators)."""

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: Operator commands imported only when asked for (potluck.lazy_group), under `potluck ops` and
#: `python -m potluck.ops.cli` alike: `images` loads the Docker SDK and the allocator's image
#: tokens, half a second of every other operator command's start.
OPS_LAZY_COMMANDS = {"images": "potluck.ops.pool_images:images"}


class FiniteRange(click.FloatRange):
    """click.FloatRange that also refuses nan and infinities: nan compares false with both
    bounds, and inf passes a range with no maximum, so a plain FloatRange lets them through
    to whatever reads the number next (a contract's validation traceback, a JSON body the
    API cannot read, a sleep that never ends)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class GraceSeconds(FiniteRange):
    """A grace period in seconds: 0 (at once) or at least `shortest`. A grace of 1e-300 s is
    none that anybody meant, yet it would be recorded and shown as a grace ("drain: ends at"
    the same second): refused, saying what to give. -0 is read as 0."""

    def __init__(self, shortest: float, maximum: float) -> None:
        super().__init__(min=0, max=maximum)
        self.shortest = shortest

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = float(super().convert(value, param, ctx)) + 0.0  # -0.0 + 0.0 is 0.0
        if 0 < number < self.shortest:
            self.fail(
                f"{value!r} seconds is less than {self.shortest:g}: give 0 to stop the work at "
                f"once, or at least {self.shortest:g}",
                param,
                ctx,
            )
        return number


class ApiId(click.ParamType[str]):
    """The id of one of the user's rows (an allocation, a job) as a command's argument: a
    path segment of the API (client.segment encodes it), so neither empty nor `.` or `..`,
    which a URL resolves away (`potluck job rm ..` asked DELETE /v1/)."""

    name = "id"

    def __init__(self, example: str, listing: str) -> None:
        self.example = example
        self.listing = listing

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value in ("", ".", ".."):
            self.fail(
                f"{value!r} is not an id: ids look like {self.example} (`{self.listing}` lists yours)",
                param,
                ctx,
            )
        return value


ALLOC_ID = ApiId("a-9f8e7d6c5b4a", "potluck alloc ls")
JOB_ID = ApiId("j-1b2c3d4e5f6a", "potluck job ls")


def database_option(f: F) -> F:
    return click.option(
        "--database-url",
        envvar="POTLUCK_DATABASE_URL",
        required=True,
        help="Postgres URL of the event log [env: POTLUCK_DATABASE_URL].",
    )(f)


#: Seconds an operator's command waits for the event log's Postgres to let it in: one that
#: accepts and never answers (stopped, overloaded) otherwise held it for asyncpg's 60.
#: POTLUCK_OPERATOR_CONNECT_TIMEOUT_S changes it (`operator_connect_timeout`).
OPERATOR_CONNECT_TIMEOUT_S = 10.0
OPERATOR_CONNECT_TIMEOUT_VARIABLE = "POTLUCK_OPERATOR_CONNECT_TIMEOUT_S"


def seconds_from_env(variable: str, default: float) -> float:
    """Seconds from `variable`, `default` when it is unset or empty; ValueError naming it for a
    value that is no number above 0."""
    raw = os.environ.get(variable, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise ValueError(
            f"{variable}={raw!r} is not a number of seconds above 0; set it to e.g. {default:g}, or unset it"
        )
    return value


def operator_connect_timeout() -> float:
    """The wait for the event log's Postgres: POTLUCK_OPERATOR_CONNECT_TIMEOUT_S, else
    OPERATOR_CONNECT_TIMEOUT_S; a value that is no positive number is a usage error naming it."""
    try:
        return seconds_from_env(OPERATOR_CONNECT_TIMEOUT_VARIABLE, OPERATOR_CONNECT_TIMEOUT_S)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def unreachable_log(database_url: str, exc: BaseException) -> str:
    """What an operator reads when the event log's Postgres does not answer: the URL (its password
    hidden), why, and what to check."""
    from potluck.kernel.redacted_urls import redacted
    from potluck.up_state import default_state_dir, running

    reason = str(exc) or (
        f"no answer within {operator_connect_timeout():g} s"
        if isinstance(exc, TimeoutError)
        else type(exc).__name__
    )
    said = (
        f"cannot reach the event log at {redacted(database_url, 'the database URL')} ({reason}); "
        "check --database-url (or POTLUCK_DATABASE_URL) and that its Postgres runs"
    )
    # The operator's quick start exports a URL that, on the machine of a `potluck up` pool, names
    # no database: its commands take that pool's log when given none, which this says.
    state_dir = default_state_dir()
    up = running(state_dir)
    if up is not None and up.database != database_url:
        said += (
            f"; the `potluck up` pool with state in {state_dir} keeps its log at "
            f"{redacted(up.database, 'its URL')} (`potluck ops` commands take it when given no "
            "--database-url: unset POTLUCK_DATABASE_URL)"
        )
    return said


def _database_of_a_running_pool(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    """The given URL, or that of the `potluck up` pool running with state in POTLUCK_HOME (or
    ~/.potluck): on the machine of such a pool, operator commands need no option."""
    if value:
        return value
    from potluck.up_state import default_state_dir, no_pool_in, running

    state_dir = default_state_dir()
    up = running(state_dir)
    if up is None:
        raise click.UsageError(
            "give --database-url (or POTLUCK_DATABASE_URL): " + no_pool_in(state_dir),
            ctx,
        )
    return up.database


def operator_database_option(f: F) -> F:
    """--database-url of an operator's command: on the machine of a running `potluck up`, its log."""
    return click.option(
        "--database-url",
        envvar="POTLUCK_DATABASE_URL",
        default=None,
        callback=_database_of_a_running_pool,
        help="Postgres URL of the event log [env: POTLUCK_DATABASE_URL; default: the running "
        "`potluck up` pool's, whose state is in POTLUCK_HOME or ~/.potluck].",
    )(f)


def nats_options_for(when: str | None = None, *, pool_default: bool = False) -> Callable[[F], F]:
    """--nats-url and --nats-seed-file; `when` says when an operator's command uses them.

    A service needs its seed file at start (click checks it exists); an operator's
    command reads the services' seed only when asked to reach them, and says then
    what is wrong with it. `pool_default`: the command takes a running `potluck up`
    pool's NATS and seed when neither is given, and its help says so (it showed
    nats://127.0.0.1:4222 as the default while the pool's was used).
    """
    prefix = f"{when}: " if when else ""
    seed = "the services' NATS nkey seed" if when else "This service's NATS nkey seed"
    pool = "; default: the running `potluck up` pool's" if pool_default else ""

    def decorate(f: F) -> F:
        f = click.option(
            "--nats-seed-file",
            envvar="POTLUCK_NATS_SEED_FILE",
            type=click.Path(exists=when is None, path_type=Path),
            default=None,
            help=f"{prefix}{seed} [env: POTLUCK_NATS_SEED_FILE{pool}].",
        )(f)
        return click.option(
            "--nats-url",
            envvar="POTLUCK_NATS_URL",
            default="nats://127.0.0.1:4222",
            show_default=not pool_default,
            help=f"{prefix}NATS server, or a cluster's nodes separated by commas [env: POTLUCK_NATS_URL"
            + (f"{pool}, else nats://127.0.0.1:4222]." if pool_default else "]."),
        )(f)

    return decorate


#: A service's --nats-url and --nats-seed-file.
nats_options = nats_options_for()


def relay_option(f: F) -> F:
    return click.option(
        "--relay/--no-relay",
        default=True,
        show_default=True,
        help="Also run an outbox relay (one leader among all of them).",
    )(f)


def stream_replicas_option(f: F) -> F:
    return click.option(
        "--stream-replicas",
        envvar="POTLUCK_STREAM_REPLICAS",
        type=click.IntRange(1, 5),
        default=None,
        help="Nodes that keep a copy of each JetStream stream: 3 on a three-node NATS cluster, "
        "1 on a single server; existing streams are scaled to it. Unset: streams keep the "
        "copies they have (1 for new ones) [env: POTLUCK_STREAM_REPLICAS].",
    )(f)


def _retention(ctx: click.Context, param: click.Parameter, value: str) -> float:
    from potluck.kernel.durations import parse_duration

    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if not seconds > 0:
        raise click.BadParameter(f"{value!r}: the retention window is more than 0 seconds, e.g. 24h")
    return seconds


#: The allocator's default retention window (potluck.readmodels.retention.DEFAULT_RETENTION_S,
#: held equal by tests/unit/test_retention.py): not imported, so `potluck --help` stays light.
RETENTION_DEFAULT = "24h"


def retention_option(f: F) -> F:
    """--retention: how long an ended allocation or job stays in the allocator's model."""
    return click.option(
        "--retention",
        "retention_s",
        envvar="POTLUCK_ALLOCATOR_RETENTION",
        default=RETENTION_DEFAULT,
        show_default=True,
        callback=_retention,
        metavar="DURATION",
        help="How long an allocation or job that ended stays in the allocator's memory, on the "
        "log's clock (90s, 15m, 2h, 1d); then only its own stream in the log answers for it. "
        "Every allocator replica and `potluck ops replay` must fold with the same one (replay --check "
        "takes the running allocator's) "
        "[env: POTLUCK_ALLOCATOR_RETENTION].",
    )(f)


def up_state_dir_option(f: F) -> F:
    """--state-dir of an operator's command whose defaults come from a running `potluck up`."""
    return click.option(
        "--state-dir",
        envvar="POTLUCK_HOME",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="State directory of the `potluck up` pool whose settings are the defaults [env: POTLUCK_HOME; "
        "default: ~/.potluck].",
    )(f)
