"""SSH wire strings (potluck.kernel.ssh_wire): what the allocator, the gateway and hostd read
public keys with."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.kernel.ssh_wire import ssh_strings


def _wire(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(part)) + part for part in parts)


@given(st.lists(st.binary(max_size=40), max_size=6))
def test_strings_come_back_as_they_were_written(parts: list[bytes]) -> None:
    blob = _wire(*parts)
    assert ssh_strings(blob) == parts
    for count in range(len(parts) + 1):
        assert ssh_strings(blob, count) == parts[:count]


@pytest.mark.parametrize(
    ("blob", "count", "said"),
    [
        (b"\x00\x00", None, "ends inside a length"),
        (_wire(b"ssh-rsa")[:-1], None, "shorter than it says"),
        (_wire(b"ssh-rsa"), 3, "ends inside a length"),
        (struct.pack(">I", 1 << 31) + b"x", 1, "shorter than it says"),
    ],
)
def test_a_blob_that_breaks_off_is_refused_saying_where(blob: bytes, count: int | None, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        ssh_strings(blob, count)
