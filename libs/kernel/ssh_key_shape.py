"""Whether an OpenSSH public key line holds a whole key of its type: the allocator refuses one
that does not when it is given, for the gateway only compares a login's key with the lines it
was given, and a line cut short (or padded) matches no key anyone holds: the allocation would be
made, and never reached.

The numbers each type carries are RFC 4253 (ssh-rsa), RFC 5656 (ecdsa-sha2-*: the curve's name
again, then an uncompressed point), RFC 8709 (ssh-ed25519: 32 bytes) and OpenSSH's PROTOCOL.u2f
(sk-*: those of their base type, then the application string). Read with the standard library
alone, as ssh_key_strength does.
"""

from potluck.kernel.ssh_wire import public_key_blob, ssh_strings

__all__ = ["shape_problem"]

#: Each ECDSA curve's name in the blob and the length of its uncompressed point (0x04, X, Y).
_CURVES = {"nistp256": 65, "nistp384": 97, "nistp521": 133}
_ED25519_BYTES = 32


def shape_problem(line: str) -> str | None:
    """Why `line` (`TYPE BASE64 [comment]`) is not a whole public key of its TYPE, or None."""
    try:
        blob = public_key_blob(line)
        parts = ssh_strings(blob)
    except ValueError as exc:
        return str(exc)
    kind = line.split()[0]
    fields = parts[1:]
    if kind == "ssh-ed25519":
        return _ed25519(fields, 1)
    if kind == "sk-ssh-ed25519@openssh.com":
        return _ed25519(fields, 2)
    if kind == "ssh-rsa":
        if len(fields) != 2:
            return _count(kind, fields, 2)
        exponent, modulus = (int.from_bytes(f, "big") for f in fields)
        if exponent < 3 or exponent % 2 == 0 or modulus % 2 == 0:
            return "the key data is not an RSA public key (its exponent or modulus cannot be one)"
        return None
    if kind == "ssh-dss":
        return None if len(fields) == 4 else _count(kind, fields, 4)
    for curve, point in _CURVES.items():
        if kind in (f"ecdsa-sha2-{curve}", f"sk-ecdsa-sha2-{curve}@openssh.com"):
            wanted = 3 if kind.startswith("sk-") else 2
            if len(fields) != wanted:
                return _count(kind, fields, wanted)
            if fields[0] != curve.encode() or len(fields[1]) != point or fields[1][:1] != b"\x04":
                return f"the key data is not a whole {curve} point ({point} bytes from 0x04)"
            return None
    return f"{kind!r} is not a key type logins are made with (ssh-ed25519, ecdsa-sha2-*, ssh-rsa, sk-*)"


def _ed25519(fields: list[bytes], wanted: int) -> str | None:
    if len(fields) != wanted:
        return _count("ed25519", fields, wanted)
    if len(fields[0]) != _ED25519_BYTES:
        return f"the key data holds {len(fields[0])} bytes of key where an ed25519 key has {_ED25519_BYTES}"
    return None


def _count(kind: str, fields: list[bytes], wanted: int) -> str:
    return f"the key data holds {len(fields)} numbers after its type, where its type ({kind}) has {wanted}"
