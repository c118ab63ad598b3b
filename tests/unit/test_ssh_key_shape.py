"""potluck.kernel.ssh_key_shape: which public key lines hold a whole key of their type."""

import base64
import struct
import subprocess
from pathlib import Path

import pytest

from potluck.kernel.ssh_key_shape import shape_problem
from tests.fixtures.weak_keys import DSA_KEY, ED25519_KEY, RSA_3072_KEY


def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _line(kind: str, *fields: bytes) -> str:
    blob = _string(kind.encode()) + b"".join(_string(f) for f in fields)
    return f"{kind} {base64.b64encode(blob).decode()} me@laptop"


def _fields(line: str) -> list[bytes]:
    blob = base64.b64decode(line.split()[1])
    found, at = [], 0
    while at < len(blob):
        (size,) = struct.unpack_from(">I", blob, at)
        found.append(blob[at + 4 : at + 4 + size])
        at += 4 + size
    return found[1:]


@pytest.mark.parametrize(
    ("kind", "bits"),
    [("ed25519", None), ("rsa", "2048"), ("ecdsa", "256"), ("ecdsa", "384"), ("ecdsa", "521")],
)
def test_keys_ssh_keygen_makes_are_whole(tmp_path: Path, kind: str, bits: str | None) -> None:
    """Tried: a key of each type OpenSSH's ssh-keygen makes, as its .pub line. Must hold: whole."""
    key = tmp_path / "key"
    size = ["-b", bits] if bits else []
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *size, "-N", "", "-f", str(key)], check=True)
    line = key.with_suffix(".pub").read_text().strip()
    assert shape_problem(line) is None, line


def test_the_fixture_keys_and_security_key_shapes_are_whole() -> None:
    assert shape_problem(ED25519_KEY) is None
    assert shape_problem(RSA_3072_KEY) is None
    assert shape_problem(DSA_KEY) is None  # whole; its weakness is ssh_key_strength's to say
    ed = _fields(ED25519_KEY)[0]
    assert shape_problem(_line("sk-ssh-ed25519@openssh.com", ed, b"ssh:")) is None
    point = b"\x04" + bytes(64)
    assert shape_problem(_line("sk-ecdsa-sha2-nistp256@openssh.com", b"nistp256", point, b"ssh:")) is None


def test_a_line_that_holds_no_whole_key_says_what_is_wrong() -> None:
    """Tried (as an API abuse probe sent it): an ed25519 line whose key is 2 bytes, not 32; and
    other lines cut short, padded or mislabelled. Before, the allocator took them and made an
    allocation no key could ever reach. Must hold: each is named with what is wrong."""
    ed = _fields(ED25519_KEY)[0]
    cut = _line("ssh-ed25519", ed[:2])
    assert shape_problem(cut) == "the key data holds 2 bytes of key where an ed25519 key has 32"
    assert shape_problem("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOZ3") is not None
    padded = _line("ssh-ed25519", ed, b"extra")
    assert shape_problem(padded) == (
        "the key data holds 2 numbers after its type, where its type (ed25519) has 1"
    )
    e, n = _fields(RSA_3072_KEY)
    assert shape_problem(_line("ssh-rsa", e)) is not None
    assert shape_problem(_line("ssh-rsa", b"\x02", n)) is not None  # an even exponent
    point = b"\x04" + bytes(64)
    assert shape_problem(_line("ecdsa-sha2-nistp256", b"nistp384", point)) is not None
    assert shape_problem(_line("ecdsa-sha2-nistp256", b"nistp256", point[:-1])) is not None
    assert shape_problem(_line("sk-made-up@example.com", ed)) is not None
    relabelled = ED25519_KEY.replace("ssh-ed25519", "ecdsa-sha2-nistp256", 1)
    assert shape_problem(relabelled) == "the key data is not a ecdsa-sha2-nistp256 key"
    assert shape_problem("ssh-ed25519 !!!") == "the key data is not base64"
