"""The strings of SSH's wire format (RFC 4251, 5): a uint32 length, then that many bytes; a
public key's blob is a run of them (its type name, then its numbers), and an OpenSSH public
key line (`TYPE BASE64 [comment]`) carries one."""

import base64
import binascii
import struct

__all__ = ["public_key_blob", "ssh_strings"]


def ssh_strings(blob: bytes, count: int | None = None) -> list[bytes]:
    """The first `count` strings of `blob` (all of them when None); ValueError saying where it
    breaks off when it holds fewer, or ends inside one."""
    parts: list[bytes] = []
    at = 0
    while at < len(blob) if count is None else len(parts) < count:
        if at + 4 > len(blob):
            raise ValueError("the key data ends inside a length")
        (size,) = struct.unpack_from(">I", blob, at)
        at += 4
        if at + size > len(blob):
            raise ValueError("the key data is shorter than it says")
        parts.append(blob[at : at + size])
        at += size
    return parts


def public_key_blob(line: str) -> bytes:
    """The wire blob of an OpenSSH public key line (`TYPE BASE64 [comment]`): base64, a run of
    SSH strings, the first naming the line's TYPE, key data after it; ValueError saying why not."""
    fields = line.split()
    if len(fields) < 2:
        raise ValueError("expected TYPE BASE64 [comment], e.g. ssh-ed25519 AAAA... potluck-sshgateway")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key data is not base64") from None
    parts = ssh_strings(blob)
    if len(parts) < 2 or parts[0] != fields[0].encode():
        raise ValueError(f"the key data is not a {fields[0]} key")
    return blob
