"""The bytes the gateway sends a connection it refuses before SSH starts (early_refusal.py)."""

import struct

from hypothesis import given
from hypothesis import strategies as st

from potluck.contracts.link import GATEWAY_SSH_VERSION
from potluck.sshgateway.early_refusal import (
    SSH_DISCONNECT_TOO_MANY_CONNECTIONS,
    disconnect_packet,
    refusal_bytes,
)


def _read_string(data: bytes, at: int) -> tuple[bytes, int]:
    (length,) = struct.unpack_from(">I", data, at)
    return data[at + 4 : at + 4 + length], at + 4 + length


@given(st.text(max_size=300), st.integers(min_value=1, max_value=15))
def test_a_disconnect_packet_is_one_well_formed_clear_text_packet(description: str, code: int) -> None:
    """Tried: any description (any Unicode, empty, long) and reason code. Must hold: RFC 4253's
    framing with no cipher: the length covers exactly the rest; 4 to 11 bytes of padding; the
    whole a multiple of 8; the payload is SSH_MSG_DISCONNECT, the code, the description in
    UTF-8 and an empty language tag, and nothing after it but the padding."""
    packet = disconnect_packet(code, description)
    length, padding = struct.unpack_from(">IB", packet)
    assert length == len(packet) - 4
    assert 4 <= padding < 4 + 8
    assert len(packet) % 8 == 0
    payload = packet[5 : len(packet) - padding]
    assert payload[0] == 1
    assert struct.unpack_from(">I", payload, 1)[0] == code
    said, at = _read_string(payload, 5)
    language, at = _read_string(payload, at)
    assert (said.decode(), language, at) == (description, b"", len(payload))


def test_a_refusal_is_a_line_then_the_version_then_a_disconnect_saying_it_again() -> None:
    """Must hold: the line first (what a raw client and `ssh -v` read), the gateway's SSH
    version string, then a DISCONNECT whose description is the same line, code 12."""
    data = refusal_bytes("too many new connections from your address; try again in 3 s")
    line = b"potluck: too many new connections from your address; try again in 3 s"
    version = f"SSH-2.0-{GATEWAY_SSH_VERSION}".encode()
    assert data.startswith(line + b"\r\n" + version + b"\r\n")
    packet = data[len(line) + len(version) + 4 :]
    assert packet == disconnect_packet(SSH_DISCONNECT_TOO_MANY_CONNECTIONS, line.decode())
