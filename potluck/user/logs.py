"""`potluck logs ALLOC [-f] [--tail N]`: an allocation's stdout and stderr, through the gateway.

hostd reads them from the engine's log of the container (the reserved session
command `potluck-logs`, potluck.hostd.reserved_commands) and streams them
through its outbound link; the user's own `ssh` carries them here (remote.py),
so the laptop opens no port and the session is audited like any other. It
works while the allocation runs and after it ended when its container is kept
(`--keep-for`). With `-f` it follows what the container prints and ends when
the container stops.

Exit codes: 0 all shown, 1 no logs to show (not started yet, or its container
was removed; the reason is printed), 2 wrong usage, 3 the allocator cannot be
reached, 255 ssh could not reach the allocation (ssh's own code; when the gateway refused the
key, what to do is said after ssh's words: potluck.user.refused_key), 130 interrupted.
"""

import subprocess
import sys

import click
from rich.console import Console

from potluck.cli_options import ALLOC_ID
from potluck.contracts.session_commands import LOGS
from potluck.terminal import foreign
from potluck.user.client import ClientError
from potluck.user.refused_key import exit_as, explain_refusal, run_ssh
from potluck.user.remote import IDENTITY, readable, ssh_command

__all__ = ["logs"]

err = Console(stderr=True)


@click.command()
@click.argument("alloc_id", type=ALLOC_ID)
@click.option("-f", "--follow", is_flag=True, help="Follow what it prints; end when it stops.")
@click.option("--tail", type=click.IntRange(min=0), default=None, help="Only the last N lines.")
@IDENTITY
def logs(alloc_id: str, follow: bool, tail: int | None, identity: str | None) -> None:
    """Show an allocation's output (stdout and stderr), while it runs or once it ended and was kept.

    \b
    potluck logs ALLOC              everything so far
    potluck logs -f ALLOC           and what follows, until it ends
    potluck logs --tail 20 ALLOC    the last 20 lines
    """
    command = [LOGS]
    if follow:
        command.append("--follow")
    if tail is not None:
        command += ["--tail", str(tail)]
    try:
        found = readable(alloc_id)
        argv = ssh_command(alloc_id, identity, command)
    except ClientError as exc:
        err.print(f"[red]error:[/red] {foreign(exc)}", highlight=False, soft_wrap=True)
        sys.exit(int(exc.code))
    ran = run_ssh(argv, stdin=subprocess.DEVNULL)
    if ran.refused_key:
        why = explain_refusal(alloc_id, identity, found.get("ssh_keys"), ran.stderr_tail)
        err.print(f"[red]error:[/red] {foreign(why)}", highlight=False, soft_wrap=True)
    if ran.interrupted and ran.status != 0:
        sys.exit(130)  # Ctrl-C ends a `-f` that follows: as an interrupted command does
    exit_as(ran)
