"""The operator commands as click commands, attached under `potluck ops` by `register(ops)`.

    potluck ops replay [--until POSITION|TIME] [--check] [--json]
    potluck ops events tail [--type T]... [--stream S] [--after POSITION] [--count N] [--json]
    potluck ops events show STREAM [--json]
    potluck ops status [--live] [--json]
    potluck ops trace ALLOC [--spans-file FILE] [--json]

Each reads the log at `--database-url` (POTLUCK_DATABASE_URL); `replay
--check` and `status --live` also ask the running registry and allocator
over NATS. Tables go to
stdout, progress and errors to stderr. An error is one line, `error: ...`,
and exit status 1 (2 for bad usage, or when a live service could not be asked).

`python -m potluck.ops.cli` runs the same commands without the rest of `potluck`.
"""

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import click
from rich.console import Console
from rich.table import Table

from potluck.cli_options import (
    OPS_LAZY_COMMANDS,
    FiniteRange,
    nats_options_for,
    operator_connect_timeout,
    operator_database_option,
    retention_option,
    unreachable_log,
)
from potluck.events import EventStore, RecordedEvent
from potluck.events.connection import is_authorization_refusal
from potluck.kernel.redacted_urls import redacted
from potluck.kernel.terminal_text import shown
from potluck.lazy_group import AttachingGroup
from potluck.ops import LiveUnavailable, OpsError
from potluck.ops.archive import archive_command
from potluck.ops.backup import backup_command, restore_command
from potluck.ops.hollow import hollow

__all__ = ["COMMANDS", "events", "main", "register", "replay", "status", "trace"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")(f)


def _console() -> Console:
    # Not a terminal (a pipe, a file): wide enough that tables are not folded.
    return Console(markup=False, highlight=False, emoji=False, width=None if sys.stdout.isatty() else 200)


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {shown(message)}", err=True)  # it may quote the log's or a service's text
    sys.exit(code)


@contextlib.asynccontextmanager
async def _store(database_url: str) -> Any:
    shown = redacted(database_url, "the database URL")
    try:
        store = await EventStore.open(
            database_url, min_size=1, max_size=2, migrate=False, connect_timeout=operator_connect_timeout()
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise OpsError(unreachable_log(database_url, exc)) from None
    try:
        yield store
    except asyncpg.UndefinedTableError:
        raise OpsError(f"{shown} has no event log yet: start a service (or `potluck relay`) once") from None
    finally:
        await store.close()


def _run(job: Callable[[EventStore], Awaitable[T]], database_url: str) -> T:
    async def go() -> T:
        async with _store(database_url) as store:
            return await job(store)

    try:
        return asyncio.run(go())
    except OpsError as exc:
        _fail(str(exc), exc.exit_code)
        raise  # unreachable: _fail exits
    except KeyboardInterrupt:
        sys.exit(130)


class _Progress:
    """Replay progress on stderr: a line rewritten in place on a terminal, a line a second otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.last = 0.0
        self.done: tuple[int, int, int] | None = None
        self.printed: tuple[int, int, int] | None = None

    def __call__(self, folded: int, position: int, head: int) -> None:
        self.done = (folded, position, head)
        now = time.monotonic()
        if self.quiet or now - self.last < 1.0:
            return
        self.last = now
        self._print(self.done)

    def _print(self, done: tuple[int, int, int]) -> None:
        folded, position, head = done
        self.printed = done
        percent = 100.0 if head == 0 else min(100.0, 100.0 * position / head)
        line = f"replaying: {folded} events, position {position} of {head} ({percent:.0f}%)"
        if sys.stderr.isatty():
            click.echo(f"\r{line}", err=True, nl=False)
        else:
            click.echo(line, err=True)

    def finish(self) -> None:
        if self.quiet or self.done is None:
            return
        if self.done != self.printed:
            self._print(self.done)
        if sys.stderr.isatty():
            click.echo("", err=True)


def _nats_options(when: str) -> Callable[[F], F]:
    """--nats-url, --nats-seed-file and --timeout, for a command that asks the running services."""

    def decorate(f: F) -> F:
        f = click.option(
            "--timeout",
            default=5.0,
            show_default=True,
            type=FiniteRange(min=0.1),
            help=f"{when}: seconds to wait for each service.",
        )(f)
        return nats_options_for(when, pool_default=True)(f)

    return decorate


def _with_pool_defaults(nats_url: str, seed_file: Path | None) -> tuple[str, Path | None]:
    """Where the services are, as given; else, on the machine of a running `potluck up`, its
    NATS and its services' seed (used only for that pool's NATS)."""
    from click.core import ParameterSource

    from potluck.up_state import default_state_dir, pool_files, running

    state_dir = default_state_dir()
    up = running(state_dir)
    if up is None:
        return nats_url, seed_file
    if click.get_current_context().get_parameter_source("nats_url") == ParameterSource.DEFAULT:
        nats_url = up.nats
    if seed_file is None and nats_url == up.nats:
        seed_file = pool_files(state_dir).services_seed_file
    return nats_url, seed_file


def _read_seed(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError as exc:
        _fail(f"cannot read the NATS seed file {path}: {exc.strerror}", 2)
        raise  # unreachable: _fail exits


# --- replay -----------------------------------------------------------------------------------


@click.command()
@operator_database_option
@click.option(
    "--until",
    "until_text",
    metavar="POSITION|TIME",
    default=None,
    help="Show the pool as it was at this log position (inclusive), or time (ISO 8601, UTC if no zone; "
    "or e.g. '15m ago').",
)
@click.option(
    "--check", is_flag=True, help="Compare the rebuilt models with the running registry and allocator."
)
@_nats_options("With --check")
@click.option("--batch-size", default=5000, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
@retention_option
@_json_option
def replay(
    database_url: str,
    until_text: str | None,
    check: bool,
    nats_url: str,
    nats_seed_file: Path | None,
    timeout: float,
    batch_size: int,
    quiet: bool,
    retention_s: float,
    as_json: bool,
) -> None:
    """Rebuild every read model (hosts, capacity, allocations, users, sessions) from the log."""
    from potluck.ops.replay import Until, parse_until, replay_until
    from potluck.ops.replay import check as check_models
    from potluck.ops.status import pool_view, render_pool, skipped_entries

    if check and until_text is not None:
        raise click.UsageError("--check compares the whole log with the running services; drop --until")
    until: Until | None = None
    if until_text is not None:
        try:
            until = parse_until(until_text)
        except OpsError as exc:
            _fail(str(exc))
    nats_url, nats_seed_file = _with_pool_defaults(nats_url, nats_seed_file)
    seed = _read_seed(nats_seed_file) if check else None
    progress = _Progress(quiet)
    console = _console()

    if check:

        async def checked(store: EventStore) -> Any:
            from potluck.ops.live import allocator_source, registry_source

            # The services answer digests and pages while the replay runs: the connection stays open.
            async with _nats(nats_url, seed, timeout) as nc:
                live = [registry_source(nc, timeout), allocator_source(nc, timeout)]
                return await check_models(store, live, progress=progress, batch_size=batch_size)

        result = _run(checked, database_url)
        progress.finish()
        if as_json:
            click.echo(json.dumps(result.as_dict(), indent=2))
        else:
            _print_check(console, result)
        sys.exit(0 if result.ok else 1)

    async def rebuilt(store: EventStore) -> Any:
        return await replay_until(
            store, until, progress=progress, batch_size=batch_size, retention_s=retention_s
        )

    models = _run(rebuilt, database_url)
    progress.finish()
    for skipped in skipped_entries(models.skipped)[1]:
        click.echo(
            shown(
                f"warning: skipped {skipped.type} at position {skipped.position} "
                f"({skipped.stream}): {skipped.error}"
            ),
            err=True,
        )
    if until is not None:
        view = pool_view(models)
        view["until"] = until.text
        if as_json:
            click.echo(json.dumps(view, indent=2))
        else:
            when = (
                f" (last event recorded {view['recorded_at']})"
                if view["recorded_at"]
                else " (before any event)"
            )
            render_pool(
                console, view, title=f"The pool as of {until.text}: log position {models.position}{when}"
            )
        return
    if as_json:
        click.echo(
            json.dumps({"position": models.position, "events": models.folded, **models.to_dict()}, indent=2)
        )
        return
    view = pool_view(models)
    by_state = ", ".join(f"{s} {n}" for s, n in view["allocations_by_state"].items()) or "none"
    console.print(
        f"Replayed {models.folded} events through position {models.position}: "
        f"{len(view['hosts'])} hosts, {len(view['allocations'])} allocations ({by_state}), "
        f"{view['users']} users, {view['sessions']['total']} sessions."
    )


@contextlib.asynccontextmanager
async def _nats(nats_url: str, seed: str | None, timeout: float) -> Any:
    """A NATS connection as the services' identity; LiveUnavailable when NATS cannot be reached."""
    import nats
    import nats.errors

    said: list[str] = []

    async def quiet(exc: Exception) -> None:
        said.append(str(exc))

    options: dict[str, Any] = {
        "connect_timeout": min(timeout, 5.0),
        "max_reconnect_attempts": 1,  # the first connect: one retry, then NoServersError
        "reconnect_time_wait": 0.2,
        "error_cb": quiet,
    }
    if seed:
        options["nkeys_seed_str"] = seed
    try:
        async with asyncio.timeout(timeout + 5):
            nc = await nats.connect(nats_url.split(","), **options)
    except (OSError, nats.errors.Error, TimeoutError) as exc:
        # nats-py ends a refused key with "no servers available": what the server said is the cause.
        refused = next((text for text in said if is_authorization_refusal(Exception(text))), None)
        if refused is not None:
            raise LiveUnavailable(
                f"NATS at {nats_url} refuses this client ({refused}); give --nats-seed-file, "
                "the services' seed (POTLUCK_NATS_SEED_FILE)"
            ) from None
        raise LiveUnavailable(f"cannot reach NATS at {nats_url}: {exc or type(exc).__name__}") from None
    try:
        yield nc
    finally:
        await nc.close()


async def _service_answers(nats_url: str, seed: str | None, timeout: float) -> dict[str, Any]:
    """Each running service's live model, or the one line saying why it could not be had."""
    from potluck.ops.live import fetch_allocator, fetch_registry

    fetchers = {"registry": fetch_registry, "allocator": fetch_allocator}
    try:
        async with _nats(nats_url, seed, timeout) as nc:
            answers: dict[str, Any] = {}
            for name, fetch in fetchers.items():
                try:
                    answers[name] = await fetch(nc, timeout, models=False)
                except LiveUnavailable as exc:
                    answers[name] = str(exc)
            return answers
    except LiveUnavailable as exc:
        return dict.fromkeys(fetchers, str(exc))


def _print_check(console: Console, result: Any) -> None:
    for comparison in result.comparisons:
        counts = ", ".join(f"{n} {part}" for part, n in comparison.compared.items())
        if comparison.differences:
            console.print(
                f"{comparison.service} at position {comparison.position} ({counts}): "
                f"{len(comparison.differences)} differences"
            )
            for line in comparison.differences:
                console.print(f"  {shown(line)}")  # the models' values: users' and members' text
        else:
            console.print(f"{comparison.service} at position {comparison.position} ({counts}): no difference")
    console.print(
        f"sessions: {len(result.models.sessions.sessions)} rebuilt (no running service keeps them to compare)"
    )
    console.print("OK: the live read models equal the replay" if result.ok else "DIFFERENT: see above")


# --- events -----------------------------------------------------------------------------------


@click.group()
def events() -> None:
    """Follow the log, or show one stream's history."""


def _emitter(as_json: bool) -> Callable[[RecordedEvent], None]:
    from potluck.ops.events import event_line, event_row

    def emit(record: RecordedEvent) -> None:
        line = json.dumps(event_row(record)) if as_json else event_line(record)
        click.echo(line)
        sys.stdout.flush()

    return emit


@events.command(name="tail")
@operator_database_option
@click.option("--type", "types", multiple=True, metavar="TYPE", help="Only events of this type (repeatable).")
@click.option(
    "--stream", default=None, metavar="STREAM", help="Only events of this stream, e.g. alloc-a-91bc03d2e4f5."
)
@click.option(
    "--after",
    type=int,
    default=None,
    metavar="POSITION",
    help="Start after this position (0: from the beginning) [default: the head, only new events].",
)
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after this many events.")
@_json_option
def events_tail(
    database_url: str,
    types: tuple[str, ...],
    stream: str | None,
    after: int | None,
    count: int | None,
    as_json: bool,
) -> None:
    """Print events as they are logged, until interrupted."""
    from potluck.ops.events import tail

    emit = _emitter(as_json)

    async def follow(store: EventStore) -> int:
        return await tail(store, emit, types=types, stream=stream, after=after, count=count)

    _run(follow, database_url)


@events.command(name="show")
@click.argument("stream")
@operator_database_option
@_json_option
def events_show(stream: str, database_url: str, as_json: bool) -> None:
    """The history of one STREAM (an aggregate), e.g. host-h-3f2a9c1e7b40 or alloc-a-91bc03d2e4f5."""
    from potluck.ops.events import event_row, show, summary

    records = _run(lambda store: show(store, stream), database_url)
    if as_json:
        for record in records:
            click.echo(json.dumps(event_row(record)))
        return
    table = Table(title=f"{stream}: {len(records)} events", title_justify="left")
    for column in ("version", "position", "recorded", "type", "data", "actor"):
        table.add_column(column, overflow="fold")
    for record in records:
        table.add_row(
            str(record.version),
            str(record.position),
            record.recorded_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            shown(record.type),
            shown(summary(record, width=200)),
            shown(str(record.metadata.get("actor", ""))),
        )
    _console().print(table)


# --- status and trace -------------------------------------------------------------------------


@click.command()
@operator_database_option
@click.option("--relay", "relay_name", default="main", show_default=True, help="The relay whose lag to show.")
@click.option(
    "--live",
    is_flag=True,
    help="Also ask the running registry and allocator (over NATS) how many events they skipped.",
)
@_nats_options("With --live")
@_json_option
def status(
    database_url: str,
    relay_name: str,
    live: bool,
    nats_url: str,
    nats_seed_file: Path | None,
    timeout: float,
    as_json: bool,
) -> None:
    """The pool on one screen: hosts, capacity, allocations by state, the relay's lag, unreadable events."""
    from potluck.ops.status import gather_status, render_status

    nats_url, nats_seed_file = _with_pool_defaults(nats_url, nats_seed_file)
    seed = _read_seed(nats_seed_file) if live else None

    async def gather(store: EventStore) -> dict[str, Any]:
        services = await _service_answers(nats_url, seed, timeout) if live else None
        return await gather_status(store, relay_name, services=services)

    view = _run(gather, database_url)
    if as_json:
        click.echo(json.dumps(view, indent=2))
    else:
        render_status(_console(), view)


@click.command()
@click.argument("alloc")
@operator_database_option
@click.option(
    "--viewer-url",
    envvar="POTLUCK_TRACE_VIEWER_URL",
    default=None,
    help="Also print this URL with {trace_id} filled in, e.g. http://localhost:16686/trace/{trace_id} "
    "[env: POTLUCK_TRACE_VIEWER_URL].",
)
@click.option(
    "--spans-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="POTLUCK_TRACES_FILE",
    default=None,
    help="The JSON-lines file the pool's processes write their spans to; the trace is printed as a "
    "tree from it (and from FILE.1, the older part) [default: the local pool's, "
    "$POTLUCK_HOME/pool/traces.jsonl; env: POTLUCK_TRACES_FILE].",
)
@_json_option
def trace(
    alloc: str, database_url: str, viewer_url: str | None, spans_file: Path | None, as_json: bool
) -> None:
    """Print the trace ALLOC (an allocation id) was requested under: its id, and its spans as a tree
    where the pool keeps them locally."""
    from potluck.ops.trace import find_trace, trace_spans, tree_lines, waterfall_dicts

    if viewer_url is not None and "{trace_id}" not in viewer_url:
        raise click.BadParameter("the URL must contain {trace_id}", param_hint="--viewer-url")
    found = _run(lambda store: find_trace(store, alloc), database_url)
    given = spans_file is not None
    if spans_file is None:
        from potluck.up_state import default_state_dir, pool_files

        spans_file = pool_files(default_state_dir()).traces_file
    spans = trace_spans(spans_file, found.trace_id)
    if not spans and (given or spans_file.exists()):
        click.echo(
            f"no spans of trace {found.trace_id} in {spans_file} (or its .1): the pool's processes "
            "write them there when POTLUCK_TRACES_FILE names it and no OTEL_* collector is set",
            err=True,
        )
    if as_json:
        out = found.as_dict(viewer_url)
        if spans:
            out["spans"] = waterfall_dicts(spans)
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(found.trace_id)
    if viewer_url:
        click.echo(viewer_url.format(trace_id=found.trace_id))
    for line in tree_lines(spans):
        click.echo(shown(line))  # span names may quote what a request carried


#: What `register` attaches under a group (the integrator's `potluck ops`).
COMMANDS: tuple[click.Command, ...] = (
    replay,
    events,
    status,
    trace,
    hollow,
    archive_command,
    backup_command,
    restore_command,
)


def register(group: click.Group) -> None:
    """Attach replay, events (tail, show), status, trace, hollow, archive, backup, restore;
    `images` is the group's `lazy` (OPS_LAZY_COMMANDS)."""
    for command in COMMANDS:
        group.add_command(command)


@click.group(
    cls=AttachingGroup, lazy=OPS_LAZY_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option(
    "--log-level",
    envvar="POTLUCK_LOG_LEVEL",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def main(log_level: str) -> None:
    """Operator tools for a Potluck pool (also `potluck ops ...`)."""
    from potluck.logs import configure_logging

    configure_logging(log_level)


register(main)


if __name__ == "__main__":
    main()
