"""Click options that more than one command group shares (services, operators)."""

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def database_option(f: F) -> F:
    return click.option(
        "--database-url",
        envvar="POTLUCK_DATABASE_URL",
        required=True,
        help="Postgres URL of the event log [env: POTLUCK_DATABASE_URL].",
    )(f)


def nats_options(f: F) -> F:
    f = click.option(
        "--nats-seed-file",
        envvar="POTLUCK_NATS_SEED_FILE",
        type=click.Path(exists=True, path_type=Path),
        default=None,
        help="This service's NATS nkey seed [env: POTLUCK_NATS_SEED_FILE].",
    )(f)
    return click.option(
        "--nats-url",
        envvar="POTLUCK_NATS_URL",
        default="nats://127.0.0.1:4222",
        show_default=True,
        help="NATS server [env: POTLUCK_NATS_URL].",
    )(f)


def relay_option(f: F) -> F:
    return click.option(
        "--relay/--no-relay",
        default=True,
        show_default=True,
        help="Also run an outbox relay (one leader among all of them).",
    )(f)
