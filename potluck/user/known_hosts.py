"""The gateway's host key, pinned at `potluck login --gateway-key` in Potluck's own known_hosts.

`potluck ssh`, `cp` and `logs` run OpenSSH with `StrictHostKeyChecking=accept-new` on the
known_hosts file beside the client configuration: a key already there is held to, one that
is not is trusted on first use. Trust on first use leaves the first connection open to a
machine in the middle, which the user would then keep trusting. The operator hands each user
their token privately, with the login line (`potluck up` prints it); the gateway's key goes
with it (`potluck sshgateway --print-host-key`), and `login` writes it, in place of whatever
that file held for the gateway's address, so that the first connection is held to it too.
"""

import base64
import binascii
import hashlib
import hmac
from pathlib import Path

from potluck.kernel.ssh_wire import public_key_blob

__all__ = ["host_pattern", "pin_gateway_key", "public_key_line"]

_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")


def public_key_line(given: str) -> str:
    """`given` (a host key line, or a file holding one) as `TYPE BASE64`; ValueError saying why not."""
    text = given.strip()
    if text and not text.startswith(_KEY_TYPES) and Path(text).expanduser().is_file():
        text = Path(text).expanduser().read_text().strip()
    parts = text.split()
    if len(parts) < 2 or parts[0] not in _KEY_TYPES:
        raise ValueError(
            f"{given[:60]!r} is not a host key line (`ssh-ed25519 AAAA...`) nor a file holding one: "
            "give what `potluck sshgateway --print-host-key` prints"
        )
    try:
        public_key_blob(text)
    except ValueError as exc:
        raise ValueError(f"{given[:60]!r}: {exc}") from None
    return f"{parts[0]} {parts[1]}"


def host_pattern(gateway: str) -> str:
    """How OpenSSH names `HOST:PORT` in known_hosts: `[HOST]:PORT`, or HOST alone for port 22."""
    host, _, port = gateway.rpartition(":")
    host = host.strip("[]")
    return host if port == "22" else f"[{host}]:{port}"


def _names(field: str, host: str) -> bool:
    """Whether a known_hosts line's host field names `host` (plain names or a hashed one)."""
    if field.startswith("|1|"):
        try:
            _, _, salt, digest = field.split("|")
            mac = hmac.new(base64.b64decode(salt), host.encode(), hashlib.sha1).digest()
            return hmac.compare_digest(mac, base64.b64decode(digest))
        except (ValueError, binascii.Error):
            return False
    return host in field.split(",")


def pin_gateway_key(path: Path, gateway: str, key_line: str) -> None:
    """Make `key_line` the one key `path` holds for `gateway` (other hosts' lines are kept)."""
    host = host_pattern(gateway)
    kept = []
    if path.exists():
        for line in path.read_text().splitlines():
            fields = line.split()
            if fields and not line.lstrip().startswith("#") and _names(fields[0], host):
                continue
            kept.append(line)
    kept.append(f"{host} {key_line}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(kept) + "\n")
