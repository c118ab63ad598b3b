"""`potluck ssh ALLOC`: the `ssh` invocation that reaches an allocation through the gateway.

The login name is the allocation id; the key is one the user registered on
the allocation. What the gateway refuses anyway (agent and X11 forwarding,
port forwarding, compression) is switched off here too, so that a user's
~/.ssh/config (`ForwardAgent yes`, `LocalForward ...`) does not make the
session fail or print warnings.

Supported through the gateway: a shell with or without a PTY, commands with
their exit status, stdin/stdout/stderr in both directions (`tar c . | potluck
ssh ALLOC -- tar x -C /data`), and whatever runs over exec, e.g. rsync
(`rsync -e 'ssh -p 2222' ... ALLOC@gateway:/data`) or legacy `scp -O` when the
image has rsync or scp.
The sftp subsystem (sftp, and scp's default mode) works in every image: hostd
runs the image's sftp-server when it has one, and otherwise serves SFTP itself,
each file operation run in the container (potluck.hostd.helper_sftp); there is
no other subsystem.
"""

import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ssh_argv"]

_ALLOC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")


def ssh_argv(
    alloc_id: str,
    gateway_host: str,
    port: int,
    identity_file: str | Path | None = None,
    *,
    command: Sequence[str] = (),
    tty: bool | None = None,
    known_hosts_file: str | Path | None = None,
    ssh: str = "ssh",
) -> list[str]:
    """argv for `ssh` (or `ssh` = another client binary) to reach `alloc_id` through a gateway.

    `tty`: None lets ssh decide (a PTY for an interactive shell), True forces one
    (`-tt`), False refuses one (`-T`).
    """
    if not _ALLOC.fullmatch(alloc_id):
        raise ValueError(f"{alloc_id!r} is not an allocation id")
    if not gateway_host or gateway_host.startswith("-") or any(c.isspace() for c in gateway_host):
        raise ValueError(f"{gateway_host!r} is not a host name or address")
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    argv = [ssh, "-p", str(port)]
    if identity_file is not None:
        argv += ["-i", str(identity_file), "-o", "IdentitiesOnly=yes"]
    if known_hosts_file is not None:
        # ssh splits this option's value at whitespace (it is a list of files): quote the path.
        if '"' in str(known_hosts_file):
            raise ValueError(f"{known_hosts_file!r}: a known_hosts path cannot hold a double quote")
        argv += ["-o", f'UserKnownHostsFile="{known_hosts_file}"']
    argv += [
        "-o", "ForwardAgent=no",
        "-o", "ForwardX11=no",
        "-o", "ClearAllForwardings=yes",
        "-o", "Compression=no",
        "-o", "ServerAliveInterval=30",
        "-o", "ServerAliveCountMax=4",
    ]  # fmt: skip
    if tty is True:
        argv.append("-tt")
    elif tty is False:
        argv.append("-T")
    argv.append(f"{alloc_id}@{gateway_host}")
    if command:
        argv += ["--", *command]
    return argv
