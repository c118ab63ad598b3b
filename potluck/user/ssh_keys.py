"""The public keys an allocation admits when its user names none: their own default ones.

"Their own" as ssh takes it: the key files in the .ssh of the home the password database gives
this user (ssh_home), not $HOME's, which ssh never reads.

`potluck ssh`, `potluck cp` and `potluck logs` all go through the gateway with the user's
OpenSSH client, which offers the default identities in ~/.ssh. An allocation created without
`--ssh-key` admitted no key at all, so every one of them ended in "Permission denied
(publickey)", even for a task's logs. With no `--ssh-key`, the keys OpenSSH would offer are
the ones admitted, and the user is told which (or that there are none, and how to make one).
"""

import os
import pwd
from collections.abc import Callable
from pathlib import Path

import click

__all__ = ["DEFAULT_IDENTITIES", "admitted_keys", "home_aside", "public_key_files", "ssh_dir", "ssh_home"]

#: The usual identities OpenSSH offers by default (ssh(1), -i), in its order; its security-key
#: (`_sk`) and legacy ones are left out.
DEFAULT_IDENTITIES = ("id_rsa", "id_ecdsa", "id_ed25519")


def ssh_home() -> Path:
    """The home ssh reads ~/.ssh from: this user's in the password database, as OpenSSH takes it
    (getpwuid), never $HOME. Under `sudo -E`, a systemd unit or a test, $HOME may name another
    directory, whose keys ssh never offers; $HOME only if the database has no entry."""
    try:
        return Path(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        return Path.home()


def ssh_dir() -> Path:
    """The directory whose default key files ssh offers without -i."""
    return ssh_home() / ".ssh"


def home_aside() -> Path | None:
    """$HOME/.ssh when $HOME is not the home ssh reads (`sudo -E`, a unit's HOME=), else None:
    keys its owner may well mean, which ssh offers only when given with -i."""
    home = os.environ.get("HOME")
    if not home:
        return None
    aside = Path(home) / ".ssh"
    try:
        return None if aside.resolve() == ssh_dir().resolve() else aside
    except OSError:
        return aside


def admitted_keys(given: tuple[Path, ...], say: Callable[[str], None]) -> list[str]:
    """The public key lines of `given`, or of the user's default identities when none is given."""
    if given:
        return [path.read_text().strip() for path in given]
    keys = ssh_dir()
    found = [path for name in DEFAULT_IDENTITIES if (path := keys / f"{name}.pub").is_file()]
    # $HOME's keys too when it is another directory: told they go only with -i.
    elsewhere = home_aside()
    aside = (
        [path for name in DEFAULT_IDENTITIES if (path := elsewhere / f"{name}.pub").is_file()]
        if elsewhere is not None
        else []
    )
    if found or aside:
        listed = ", ".join(map(str, found + aside))
        said = f"no --ssh-key given: {listed} may SSH in (potluck ssh, cp and logs)"
        if aside:
            said += (
                f"; ssh offers the keys in {keys} on its own, not those in $HOME/.ssh ({elsewhere}): "
                f"give {aside[0].with_suffix('')} with -i"
            )
        say(said)
        found += aside
    else:
        say(
            f"no --ssh-key given and no public key in {keys}, where ssh looks for yours: potluck ssh, "
            f"cp and logs cannot reach it; `ssh-keygen -t ed25519 -f {keys}/id_ed25519` makes one, "
            f"then give --ssh-key {keys}/id_ed25519.pub"
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
