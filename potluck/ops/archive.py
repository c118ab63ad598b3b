"""`potluck ops archive`: move old events from the hot table to `events_archive`.

    potluck ops archive --older-than 30d [--before POSITION] [--batch-size N] [--rest R] [--dry-run] [--json]

Replay, services' start and followers read both tables (potluck.events.archive says what
may move and why the log's guarantees still hold). Events below the boundary move in
batches of one transaction each: Ctrl-C, a crash or a lost connection leaves the log whole,
and running the command again carries on.
"""

import asyncio
import json
import sys

import asyncpg
import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from potluck.cli_options import (
    FiniteRange,
    operator_connect_timeout,
    operator_database_option,
    unreachable_log,
)
from potluck.events.archive import (
    KEEP_RECENT_S,
    ArchiveError,
    ArchivePlan,
    ArchiveResult,
    archive,
    plan_archive,
)
from potluck.kernel.durations import parse_duration
from potluck.ops import OpsError

__all__ = ["archive_command", "parse_age"]


def parse_age(text: str, option: str = "--older-than") -> float:
    """`30d`, `12h`, `90m`: seconds. OpsError for a negative or malformed age."""
    if text.strip().startswith("-"):
        raise OpsError(f"{option} {text}: an age cannot be negative; write e.g. 30d")
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise OpsError(f"{option} {text}: {exc}") from None


def _describe(plan: ArchivePlan) -> str:
    return (
        f"{plan.movable} events of {plan.streams} streams at positions up to {plan.boundary} "
        f"(bounded by {plan.bound_by}); {plan.hot} events hot, {plan.archived} archived, head {plan.head}. "
        "Each stream's latest event stays hot."
    )


async def _main(
    database_url: str,
    before: int | None,
    older_than: float | None,
    batch_size: int,
    rest: float,
    *,
    keep_recent: float,
    dry_run: bool,
    quiet: bool,
) -> tuple[ArchivePlan, ArchiveResult | None]:
    from potluck.events import EventStore

    try:
        store = await EventStore.open(
            database_url, min_size=1, max_size=2, migrate=False, connect_timeout=operator_connect_timeout()
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise OpsError(unreachable_log(database_url, exc)) from None
    err = Console(stderr=True)
    try:
        plan = await plan_archive(store, before=before, older_than=older_than, keep_recent=keep_recent)
        if dry_run or not plan.movable:
            return plan, None
        if not quiet:
            err.print(f"archiving {_describe(plan)}")
        bar = Progress(
            TextColumn("events archived"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("position {task.fields[position]}"),
            TimeElapsedColumn(),
            console=err,
            disable=quiet,
        )
        task = bar.add_task("archive", total=plan.movable, position=0)

        def on_batch(moved: int, position: int, boundary: int) -> None:
            bar.update(task, completed=moved, position=position)

        with bar:
            result = await archive(store, plan, batch_size=batch_size, rest=rest, progress=on_batch)
        return plan, result
    except ArchiveError as exc:
        raise OpsError(str(exc)) from None
    except asyncpg.UndefinedTableError:
        raise OpsError(
            "this database has no event log, or one without events_archive: start the services of this "
            "version once (they migrate it)"
        ) from None
    finally:
        await store.close()


@click.command("archive")
@operator_database_option
@click.option(
    "--older-than",
    "older_than_text",
    metavar="AGE",
    default=None,
    help="Archive events recorded longer ago than this (e.g. 30d, 12h).",
)
@click.option(
    "--before",
    type=int,
    default=None,
    metavar="POSITION",
    help="Archive only events at positions below this one.",
)
@click.option(
    "--batch-size",
    default=500,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Events moved per transaction (an append waits for the batch in progress).",
)
@click.option(
    "--rest",
    default=1.0,
    show_default=True,
    type=FiniteRange(0, 100),
    help="After each batch, wait this many times as long as it took (appends run meanwhile).",
)
@click.option(
    "--keep-recent",
    "keep_recent_text",
    metavar="AGE",
    default=f"{int(KEEP_RECENT_S // 86400)}d",
    show_default=True,
    help="Events younger than this never move, whatever else is asked: a message JetStream still "
    "keeps may be redelivered, and its event's id is checked against the hot table only. Lower "
    "it only on a log no service appends to from the bus.",
)
@click.option("--dry-run", is_flag=True, help="Say what would move, move nothing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def archive_command(
    database_url: str,
    older_than_text: str | None,
    before: int | None,
    batch_size: int,
    rest: float,
    keep_recent_text: str,
    dry_run: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Move old events out of the hot table; replay and the services still read them.

    Never moves a stream's latest event, nor past what the relay has published.
    """
    try:
        older_than = parse_age(older_than_text) if older_than_text is not None else None
        keep_recent = parse_age(keep_recent_text, "--keep-recent")
        job = _main(
            database_url,
            before,
            older_than,
            batch_size,
            rest,
            keep_recent=keep_recent,
            dry_run=dry_run,
            quiet=quiet,
        )
        plan, result = asyncio.run(job)
    except OpsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted: the batches done so far are archived; run again to go on", err=True)
        sys.exit(130)
    if as_json:
        out = result.as_dict() if result else {**plan.as_dict(), "moved": 0, "batches": 0, "dry_run": dry_run}
        click.echo(json.dumps(out, indent=2))
    elif result is None:
        click.echo(("Would archive " if dry_run else "Nothing to archive: ") + _describe(plan))
    else:
        click.echo(
            f"Archived {result.moved} events in {result.batches} batch(es), up to position {plan.boundary} "
            f"(bounded by {plan.bound_by})."
        )
