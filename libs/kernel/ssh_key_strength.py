"""Whether a user's SSH public key is too weak to log in with: one rule for the allocator, which
refuses such a key when it is registered, and the gateway, which refuses it at login.

DSA keys (1024 bits, SHA-1 signatures: off in OpenSSH since 7.0, gone since 9.8) and RSA keys
shorter than `MIN_RSA_BITS` (NIST's floor since 2013; OpenSSH's own is 1024) are refused.
The key is read from its wire blob with the standard library alone (the allocator does not
load asyncssh for this).
"""

import base64
import binascii

from potluck.kernel.ssh_wire import ssh_strings

__all__ = ["MIN_RSA_BITS", "line_weakness", "weakness"]

#: The shortest RSA key admitted.
MIN_RSA_BITS = 2048


def weakness(blob: bytes) -> str | None:
    """Why the public key with wire blob `blob` is too weak, or None (a malformed blob is not
    judged here: what reads it refuses it)."""
    try:
        name = ssh_strings(blob, 1)[0]
        if name == b"ssh-dss":
            return "DSA keys are refused (OpenSSH dropped them)"
        if name == b"ssh-rsa":
            modulus = ssh_strings(blob, 3)[2]
            bits = int.from_bytes(modulus, "big").bit_length()
            if bits < MIN_RSA_BITS:
                return f"this RSA key has {bits} bits, fewer than the {MIN_RSA_BITS} required"
    except ValueError:
        return None
    return None


def line_weakness(line: str) -> str | None:
    """`weakness` of an OpenSSH public key line (`ssh-ed25519 AAAA... comment`)."""
    parts = line.split()
    if len(parts) < 2:
        return None
    try:
        return weakness(base64.b64decode(parts[1], validate=True))
    except (binascii.Error, ValueError):
        return None
