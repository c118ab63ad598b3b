"""The one `potluck` command: a subcommand for each service and role.

click was picked for the CLI: a well-kept library with nested groups,
environment-variable defaults and generated --help, which is what a command
serving users, members and operators needs.
"""

import asyncio
import sys

import click

from potluck import __version__
from potluck.logs import configure_logging

DATABASE_URL = click.option(
    "--database-url",
    envvar="POTLUCK_DATABASE_URL",
    required=True,
    help="Postgres URL of the event log [env: POTLUCK_DATABASE_URL].",
)
NATS_URL = click.option(
    "--nats-url",
    envvar="POTLUCK_NATS_URL",
    default="nats://127.0.0.1:4222",
    show_default=True,
    help="NATS server [env: POTLUCK_NATS_URL].",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="potluck")
@click.option("--log-level", envvar="POTLUCK_LOG_LEVEL", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def main(log_level: str) -> None:
    """Pool members' machines; give users capped containers on them."""
    configure_logging(log_level)


@main.command()
@DATABASE_URL
@NATS_URL
@click.option("--name", default="main", show_default=True, help="Relay name (one leader per name).")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 10_000))
def relay(database_url: str, nats_url: str, name: str, batch_size: int) -> None:
    """Publish the event log to JetStream, in order (one leader at a time)."""
    from potluck.relay_service import run_relay

    asyncio.run(run_relay(database_url, nats_url, name=name, batch_size=batch_size))


@main.command()
def up() -> None:
    """Bring the whole pool up on this machine (not yet: see issue 'The newcomer's path')."""
    click.echo("potluck up: not yet. The services it starts are still being built; see README.md.")
    sys.exit(3)


if __name__ == "__main__":
    main()
