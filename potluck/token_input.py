"""A secret token read without the command line: typed at a prompt that does not echo it, or
the first line of standard input. A token given as an argument shows in every local user's
process list (/proc/PID/cmdline) and stays in the shell's history."""

import sys

import click

__all__ = ["token_from_stdin"]


def token_from_stdin(what: str, *, ask: bool) -> str:
    """`what` typed at a prompt without echo (`ask`, on a terminal), else the first line of
    standard input; empty when nothing was given (the caller refuses it, saying what to give)."""
    if ask and sys.stdin.isatty():
        typed: str = click.prompt(f"{what} (from the operator; not shown)", hide_input=True, err=True)
        return typed
    return sys.stdin.readline()
