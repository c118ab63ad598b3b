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

__all__ = ["IDENTITY", "allocation", "readable", "ssh_command", "ssh_script", "why_unreadable"]

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
    raise ClientError(why_unreadable(alloc_id, found), ExitCode.REFUSED)


def why_unreadable(alloc_id: str, found: dict[str, Any]) -> str:
    """Why the ended allocation `found` has no container to read, as far as its record says."""
    state = found["state"]
    if state == "refused":
        return f"allocation {alloc_id} was refused: it never had a container"
    if state == "failed":
        # Its container, if it ever started, went with it: its host removes a failed one.
        why = ": ".join(str(found[k]) for k in ("reason", "detail") if found.get(k))
        return (
            f"allocation {alloc_id} failed ({why or 'no reason recorded'}): it has no container whose "
            f"logs or files could be read (`potluck alloc show {alloc_id}` has its history)"
        )
    if state == "exited":
        return (
            f"allocation {alloc_id} exited and its container was removed (it was not kept, its "
            "keep-for was up, or you removed it): its logs and files are gone; `--keep-for` keeps "
            "them after it ends (`potluck run` keeps a task's 1h)"
        )
    removed = {
        "released": "it was released",
        "expired": "its lifetime ran out (`potluck alloc extend` keeps one running longer)",
        "lost": "its host was lost",
    }.get(state, f"it is {state}")
    return f"allocation {alloc_id} has no container any more ({removed}): its logs and files are gone"
