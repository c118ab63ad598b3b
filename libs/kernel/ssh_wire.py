"""The strings of SSH's wire format (RFC 4251, 5): a uint32 length, then that many bytes; a
public key's blob is a run of them (its type name, then its numbers)."""

import struct

__all__ = ["ssh_strings"]


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
