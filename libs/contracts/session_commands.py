"""The session commands hostd serves itself, and how every side reads a command's name.

A session's command is one string (SSH's `exec` request); hostd splits it as a shell
would (`shlex`) to tell a reserved command (hostd's reserved_commands.py) from one that runs
in the container. The gateway, which treats a `potluck-logs` session apart (it is left to
end at its host once the output is all sent), and the CLI must read the same name from the
same string: had they split it differently, `'potluck-logs'` (quoted) would be a logs
session to hostd and an ordinary one to the gateway.
"""

import shlex

__all__ = ["ARCHIVE", "LOGS", "command_argv", "command_name"]

LOGS = "potluck-logs"
ARCHIVE = "potluck-archive"


def command_argv(command: str | None) -> list[str] | None:
    """The command's words as a shell would split them; None when there are none, or when it
    does not split (an unclosed quote: the container's shell will say so)."""
    if not command:
        return None
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    return argv or None


def command_name(command: str | None) -> str | None:
    """The command's first word, as hostd reads it to choose what serves the session."""
    argv = command_argv(command)
    return None if argv is None else argv[0]
