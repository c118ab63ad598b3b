"""What `potluck cp` and `potluck logs` share: the user's own `ssh` to one command in an allocation,
and the allocation's state checked first, so that a removed container gets a clear error.

The `ssh` invocation is `potluck ssh`'s (the user's key, Potluck's own
known_hosts trusted on first use), without a TTY and in batch mode: it runs
one command and its stdout/stderr are the command's. The commands hostd
serves itself (`potluck-logs`, `potluck-archive get PATH`) work on a running
container and on an ended one whose container is kept (`keep_for`).
"""

import asyncio
import shlex
from collections.abc import Sequence
from typing import Any

import click

from potluck.user.client import Api, ClientError, ExitCode, Login, config_path, segment

__all__ = ["IDENTITY", "allocation", "readable", "ssh_command", "ssh_script"]

#: The key the user's `ssh` logs in with (`potluck ssh`, `cp`, `logs`).
IDENTITY = click.option(
    "-i",
    "--identity",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Private key file (default: ssh's own choice).",
)


def ssh_command(alloc_id: str, identity: str | None, argv: Sequence[str]) -> list[str]:
    """`ssh` running `argv` (quoted for the far shell) in the allocation, no TTY, batch mode."""
    from potluck.sshgateway.client import ssh_argv

    login = Login.load()
    host, _, port = login.gateway.rpartition(":")
    command = " ".join(shlex.quote(a) for a in argv)
    try:
        ssh = ssh_argv(
            alloc_id,
            host or "127.0.0.1",
            int(port or 2222),
            identity,
            command=[command],
            tty=False,
            known_hosts_file=config_path().with_name("known_hosts"),
        )
    except ValueError as exc:
        raise ClientError(
            f"{exc}; check the id (`potluck alloc ls`) and the gateway given to `potluck login`",
            ExitCode.USAGE,
        ) from None
    # As `potluck ssh`: trust the gateway's key on first use, then hold it to that key.
    ssh[1:1] = ["-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]
    return ssh


def ssh_script(alloc_id: str, identity: str | None, script: str, *args: str) -> list[str]:
    """`ssh` running `sh -c script` with `args` in the allocation's container."""
    return ssh_command(alloc_id, identity, ["sh", "-c", script, "potluck-cp", *args])


def allocation(alloc_id: str) -> dict[str, Any]:
    """The allocation as the allocator shows it (ClientError if there is none of yours)."""
    return dict(asyncio.run(Api(Login.load()).call("GET", f"/v1/allocations/{segment(alloc_id)}")))


#: States in which the allocation never had a container (yet), or has none any more.
_NOT_YET = ("pending", "placed", "pulling")


def readable(alloc_id: str) -> dict[str, Any]:
    """The allocation, if its container's logs and files can be read now (it runs, or it ended and
    its container is kept); a ClientError saying why not otherwise."""
    found = allocation(alloc_id)
    state = found["state"]
    if state == "running" or found.get("kept_until"):
        return found
    if state in _NOT_YET:
        raise ClientError(
            f"allocation {alloc_id} is {state}: its container has not started yet; try again in a moment",
            ExitCode.REFUSED,
        )
    if state in ("refused",):
        raise ClientError(f"allocation {alloc_id} was refused: it never had a container", ExitCode.REFUSED)
    raise ClientError(
        f"allocation {alloc_id} is {state} and its container was removed (it was not kept, its "
        "keep_for is up, or it was released): its logs and files are gone; ask for `--keep-for` "
        "to keep them after it ends",
        ExitCode.REFUSED,
    )
