"""What makes a text a NATS user's public key, as nats-server checks one in its users file.

A machine that joins names its own public key (JoinRequest), and the registry writes it into
the users file nats-server loads. nats-server refuses to load a file holding one text that is
no user's public key (`Not a valid public nkey for a user`), and keeps the file it had: every
later reload fails with it, so no machine enrolled afterwards could connect and no revoked one
was cut off. The check is nats-server's own (nkeys' IsValidPublicUserKey): base32 of a prefix
byte that says "user", 32 bytes of Ed25519 public key and a CRC-16 of both.
"""

import base64
import binascii

import nkeys

__all__ = ["USER_KEY_CHARS", "user_key_problem"]

#: A user's public key, base32 of 35 bytes: 56 characters, starting with U.
USER_KEY_CHARS = 56
_RAW_BYTES = 35


def user_key_problem(text: str) -> str | None:
    """Why `text` is not a NATS user's public key, or None when it is one."""
    if len(text) != USER_KEY_CHARS or not text.isascii() or not text.startswith("U"):
        return f"a NATS user's public key is {USER_KEY_CHARS} characters starting with U"
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        return "a NATS user's public key is base32 (A-Z and 2-7)"
    if len(raw) != _RAW_BYTES or raw[0] != nkeys.PREFIX_BYTE_USER:
        return "not a NATS user's public key (its prefix byte is another kind of key's)"
    if nkeys.crc16_checksum(raw[:-2]) != raw[-2:]:
        return "not a NATS user's public key (its checksum does not match)"
    return None
