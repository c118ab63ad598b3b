"""A secret token read without the command line: typed at a prompt that does not echo it, or
the first line of standard input. A token given as an argument shows in every local user's
process list (/proc/PID/cmdline) and stays in the shell's history."""

import sys

import click

__all__ = ["token_from_stdin", "warn_token_on_command_line"]


def token_from_stdin(what: str, *, ask: bool) -> str:
    """`what` typed at a prompt without echo (`ask`, on a terminal), else the first line of
    standard input; empty when nothing was given (the caller refuses it, saying what to give)."""
    if ask and sys.stdin.isatty():
        typed: str = click.prompt(f"{what} (from the operator; not shown)", hide_input=True, err=True)
        return typed
    return sys.stdin.readline()


def warn_token_on_command_line(what: str, *, instead: str) -> None:
    """One line on standard error: `what` came from the command line, still accepted (scripts
    give it so), and where to give it next time (`instead`)."""
    click.echo(
        f"warning: {what} was given on the command line, where every local user of this machine "
        f"reads it in the process list, and your shell's history keeps it; {instead}",
        err=True,
    )
