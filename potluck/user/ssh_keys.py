"""The public keys an allocation admits when its user names none: their own default ones.

`potluck ssh`, `potluck cp` and `potluck logs` all go through the gateway with the user's
OpenSSH client, which offers the default identities in ~/.ssh. An allocation created without
`--ssh-key` admitted no key at all, so every one of them ended in "Permission denied
(publickey)", even for a task's logs. With no `--ssh-key`, the keys OpenSSH would offer are
the ones admitted, and the user is told which (or that there are none, and how to make one).
"""

from collections.abc import Callable
from pathlib import Path

import click

__all__ = ["DEFAULT_IDENTITIES", "admitted_keys", "public_key_files"]

#: The usual identities OpenSSH offers by default (ssh(1), -i), in its order; its security-key
#: (`_sk`) and legacy ones are left out.
DEFAULT_IDENTITIES = ("id_rsa", "id_ecdsa", "id_ed25519")


def admitted_keys(given: tuple[Path, ...], say: Callable[[str], None]) -> list[str]:
    """The public key lines of `given`, or of the user's default identities when none is given."""
    if given:
        return [path.read_text().strip() for path in given]
    ssh_dir = Path.home() / ".ssh"
    found = [path for name in DEFAULT_IDENTITIES if (path := ssh_dir / f"{name}.pub").is_file()]
    if found:
        say(f"no --ssh-key given: {', '.join(map(str, found))} may SSH in (potluck ssh, cp and logs)")
    else:
        say(
            f"no --ssh-key given and no public key in {ssh_dir}: potluck ssh, cp and logs cannot reach "
            "it; `ssh-keygen -t ed25519` makes one, then give --ssh-key ~/.ssh/id_ed25519.pub"
        )
    return [path.read_text().strip() for path in found]


def public_key_files(ctx: click.Context, param: click.Parameter, value: tuple[Path, ...]) -> tuple[Path, ...]:
    """--ssh-key's files, each an existing file that is not a private key: a missing one says
    how to make one, and a private key (the .pub left off) is never read into a request."""
    for path in value:
        if not path.is_file():
            raise click.BadParameter(
                f"{path}: no such file; `ssh-keygen -t ed25519` makes ~/.ssh/id_ed25519 and its "
                "public half ~/.ssh/id_ed25519.pub, the file to give",
                ctx,
                param,
            )
        with path.open("rb") as head:
            if head.read(64).lstrip().startswith(b"-----BEGIN"):
                raise click.BadParameter(
                    f"{path} is a private key, which stays on this machine: give its public half "
                    f"({path}.pub)",
                    ctx,
                    param,
                )
    return value
