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

asyncssh is imported only where a key object is made or read: hostd's public line, what
it sends at every start, is read from the key file with the standard library (see
`ssh_host_key`), so that a hostd without gateways never loads asyncssh (~18 MB resident;
bench/README.md, footprint).
"""

import base64
import binascii
import contextlib
import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncssh

__all__ = [
    "HOST_KEY_FILE",
    "SSHIdentityError",
    "host_key_path",
    "load_key",
    "load_or_create_key",
    "public_key_line",
    "require_key_type",
    "ssh_host_key",
]

HOST_KEY_FILE = "ssh_host_ed25519_key"


class SSHIdentityError(Exception):
    """A key file exists but cannot be used; the message names it."""


def host_key_path(state_dir: Path) -> Path:
    return state_dir / HOST_KEY_FILE


def load_key(path: Path, *, made_by: str) -> "asyncssh.SSHKey":
    """The private key at `path`, never made here: where a key is only shown (a key to pin
    elsewhere), a new one would be a key nothing uses, printed as if it were the real one.

    A missing key is an SSHIdentityError naming where it was looked for, then `made_by`: which
    directory is meant and what makes the key there.
    """
    import asyncssh

    folder = path.parent
    if not folder.is_dir():
        problem = "is not a directory" if folder.exists() else "does not exist"
        raise SSHIdentityError(f"{folder} {problem}, so it holds no {path.name}; {made_by}")
    try:
        return asyncssh.read_private_key(str(path))
    except FileNotFoundError:
        raise SSHIdentityError(f"{folder} holds no {path.name}; {made_by}") from None
    except (OSError, asyncssh.KeyImportError) as exc:
        raise SSHIdentityError(
            f"{path}: cannot read the SSH key ({exc}); fix or remove the file "
            "(a new key must then be pinned again wherever the old one was)"
        ) from None


def load_or_create_key(path: Path, *, comment: str = "") -> "asyncssh.SSHKey":
    """The private key at `path`, made (ed25519, mode 0600) if there is none yet."""
    import asyncssh

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


def require_key_type(path: Path, kind: str, allowed: Sequence[str], *, remedy: str) -> None:
    """An SSHIdentityError naming `path` when its key's type `kind` is not one of `allowed`.

    The keys made here are ed25519, but a key file may have been replaced by hand; on a link
    that takes only some types, a key of another one failed every handshake with words that
    named neither the file nor the fix. `remedy` says what to do (which file to remove, what
    makes a new one).
    """
    if kind not in allowed:
        taken = " or ".join(allowed)
        raise SSHIdentityError(
            f"{path} holds a key of type {kind}, and Potluck's links take {taken} keys only; {remedy}"
        )


def public_key_line(key: "asyncssh.SSHKey") -> str:
    """`ssh-ed25519 AAAA... comment`, one line: what RegisterHost.ssh_host_key carries."""
    return key.export_public_key("openssh").decode().strip()


_PRIVATE_BEGIN = "-----BEGIN OPENSSH PRIVATE KEY-----"
_PRIVATE_END = "-----END OPENSSH PRIVATE KEY-----"
_MAGIC = b"openssh-key-v1\0"


def _wire_string(data: bytes, at: int) -> tuple[bytes, int]:
    (size,) = struct.unpack_from(">I", data, at)
    end = at + 4 + size
    if end > len(data):
        raise ValueError("truncated")
    return data[at + 4 : end], end


def _public_blob(private_text: str) -> bytes:
    """The public key data an OpenSSH private key file carries in clear (PROTOCOL.key)."""
    body = private_text.strip()
    if not body.startswith(_PRIVATE_BEGIN) or not body.endswith(_PRIVATE_END):
        raise ValueError("not an OpenSSH private key file")
    data = base64.b64decode("".join(body[len(_PRIVATE_BEGIN) : -len(_PRIVATE_END)].split()), validate=True)
    if not data.startswith(_MAGIC):
        raise ValueError("not an openssh-key-v1 file")
    at = len(_MAGIC)
    for _ in range(3):  # cipher name, KDF name, KDF options
        _, at = _wire_string(data, at)
    (count,) = struct.unpack_from(">I", data, at)
    if count != 1:
        raise ValueError("not exactly one key")
    blob, _ = _wire_string(data, at + 4)
    return blob


def _public_line_on_file(path: Path) -> str | None:
    """The key's public line from its `.pub` file, if that file holds this key's public half.

    None when anything is missing or does not match: the caller then reads the key with
    asyncssh, which makes a missing key and names an unreadable one.
    """
    try:
        blob = _public_blob(path.read_text())
        line = path.with_name(path.name + ".pub").read_text().strip()
        fields = line.split()
        if len(fields) >= 2 and base64.b64decode(fields[1], validate=True) == blob:
            return line
    except (OSError, ValueError, UnicodeDecodeError, binascii.Error, struct.error):
        pass
    return None


_MAKE_KEY = (
    "import sys; from pathlib import Path; from potluck.kernel.ssh_identity import load_or_create_key; "
    "load_or_create_key(Path(sys.argv[1]), comment=sys.argv[2])"
)


def ssh_host_key(state_dir: Path, host_id: str = "") -> str:
    """Load (or make) hostd's host key and return its public line: send this at registration."""
    path = host_key_path(state_dir)
    comment = f"potluck-hostd-{host_id}" if host_id else ""
    line = _public_line_on_file(path)
    if line is None and not path.exists():
        # First start: the key is made in a child process, so that asyncssh's modules do not
        # stay resident in hostd for its whole life when it has no gateway to link to.
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [sys.executable, "-c", _MAKE_KEY, str(path), comment],
                capture_output=True,
                timeout=120,
                check=False,
            )
        line = _public_line_on_file(path)
    if line is not None:
        return line
    # Whatever went wrong above is found again here, in this process, and named.
    key = load_or_create_key(path, comment=comment)
    return public_key_line(key)
