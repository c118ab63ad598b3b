"""hostd's SSH identity: an ed25519 key pair made on first start and kept in its state_dir.

hostd is the SSH *server* on its outbound connections to the gateways
(potluck.hostd.gateway_link), so this is its host key. The public half travels to the
gateways through the log: hostd sends it when it registers
(`RegisterHost.ssh_host_key`, logged as `HostRegistered.ssh_host_key`), and a
gateway accepts a connection from a laptop only when the key it presents is
the one registered for a host, and so knows which host it is.

The same helpers make and load the gateway's own keys (potluck.sshgateway.service).
A key file is written whole or not at all (a temporary file renamed over the
name), readable by its owner only; a key file that exists but cannot be read
is an error, never silently replaced, since a new key would break every
pinned copy of the old one.
"""

import contextlib
import os
import tempfile
from pathlib import Path

import asyncssh

__all__ = [
    "HOST_KEY_FILE",
    "SSHIdentityError",
    "host_key_path",
    "load_or_create_key",
    "public_key_line",
    "ssh_host_key",
]

HOST_KEY_FILE = "ssh_host_ed25519_key"


class SSHIdentityError(Exception):
    """A key file exists but cannot be used; the message names it."""


def host_key_path(state_dir: Path) -> Path:
    return state_dir / HOST_KEY_FILE


def load_or_create_key(path: Path, *, comment: str = "") -> asyncssh.SSHKey:
    """The private key at `path`, made (ed25519, mode 0600) if there is none yet."""
    try:
        return asyncssh.read_private_key(str(path))
    except FileNotFoundError:
        pass
    except (OSError, asyncssh.KeyImportError) as exc:
        raise SSHIdentityError(
            f"{path}: cannot read the SSH key ({exc}); fix or remove the file "
            "(a new key must then be pinned again wherever the old one was)"
        ) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment or None)
    data = key.export_private_key("openssh")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            # Another process may have made one meanwhile: the first one wins.
            os.link(tmp, path)
        except FileExistsError:
            return asyncssh.read_private_key(str(path))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    public = path.with_name(path.name + ".pub")
    public.write_text(public_key_line(key) + "\n")
    return key


def public_key_line(key: asyncssh.SSHKey) -> str:
    """`ssh-ed25519 AAAA... comment`, one line: what RegisterHost.ssh_host_key carries."""
    return key.export_public_key("openssh").decode().strip()


def ssh_host_key(state_dir: Path, host_id: str = "") -> str:
    """Load (or make) hostd's host key and return its public line: send this at registration."""
    key = load_or_create_key(host_key_path(state_dir), comment=f"potluck-hostd-{host_id}" if host_id else "")
    return public_key_line(key)
