"""potluck.kernel.ssh_key_strength: which users' keys are too weak to log in with."""

import base64
import struct

import pytest

from potluck.kernel.ssh_key_strength import MIN_RSA_BITS, line_weakness, weakness
from tests.fixtures.weak_keys import DSA_KEY, ED25519_KEY, RSA_1024_KEY, RSA_3072_KEY


def _rsa_blob(bits: int) -> bytes:
    def string(b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + b

    modulus = (1 << (bits - 1)) | 1
    return (
        string(b"ssh-rsa")
        + string(b"\x01\x00\x01")
        + string(b"\x00" + modulus.to_bytes((bits + 7) // 8, "big"))
    )


def test_dsa_and_short_rsa_keys_are_weak_and_say_why() -> None:
    assert line_weakness(DSA_KEY) == "DSA keys are refused (OpenSSH dropped them)"
    assert (
        line_weakness(RSA_1024_KEY) == f"this RSA key has 1024 bits, fewer than the {MIN_RSA_BITS} required"
    )
    assert weakness(_rsa_blob(MIN_RSA_BITS - 1)) is not None


@pytest.mark.parametrize("line", [RSA_3072_KEY, ED25519_KEY, RSA_3072_KEY + " me@laptop"])
def test_ed25519_and_long_enough_rsa_keys_pass(line: str) -> None:
    assert line_weakness(line) is None
    assert weakness(_rsa_blob(MIN_RSA_BITS)) is None


@pytest.mark.parametrize(
    "line", ["", "ssh-rsa", "ssh-rsa !!!", "ssh-rsa " + base64.b64encode(b"\0\0\0\7ssh-rsa").decode()]
)
def test_a_malformed_key_is_not_judged_here(line: str) -> None:
    """What reads the key (the allocator's pattern, the gateway's parser) refuses it; this says only
    whether a well-formed key is weak, and must not raise on anything."""
    assert line_weakness(line) is None
