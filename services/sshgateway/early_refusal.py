"""What the gateway sends a connection it refuses before SSH starts (admitted_listener.py).

A line before the version string is what OpenSSH's own MaxStartups refusal looks like, and
RFC 4253 (4.2) allows it, but the OpenSSH client shows such lines only with `ssh -v`: a user
refused for a flood from their address saw "kex_exchange_identification: Connection closed
by remote host" and nothing about why, or when to try again. After the line comes the
gateway's version string and an SSH_MSG_DISCONNECT in the clear (RFC 4253 11.1: either side
may send it at any time, the key exchange included), which `ssh`, `scp` and `sftp` print at
their default log level: "Received disconnect from ADDRESS port PORT:12: potluck: too many
connections from your address ...". No key exchange is spent on it: the packet is a few
dozen bytes built here, with no crypto.
"""

import struct

from potluck.contracts.link import GATEWAY_SSH_VERSION

__all__ = ["SSH_DISCONNECT_TOO_MANY_CONNECTIONS", "disconnect_packet", "refusal_bytes"]

#: RFC 4253 11.1's reason code for what admission refuses (every one of its reasons is that).
SSH_DISCONNECT_TOO_MANY_CONNECTIONS = 12
_SSH_MSG_DISCONNECT = 1
#: The cipher block size before any key exchange (RFC 4253 6: 8 with no cipher).
_BLOCK = 8


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def disconnect_packet(reason_code: int, description: str) -> bytes:
    """An unencrypted SSH_MSG_DISCONNECT binary packet (RFC 4253 6 and 11.1)."""
    payload = (
        bytes([_SSH_MSG_DISCONNECT])
        + struct.pack(">I", reason_code)
        + _string(description.encode())
        + _string(b"")  # language tag
    )
    # Padding: at least 4 bytes, and the length, padding length, payload and padding a
    # multiple of the block size.
    padding = _BLOCK - (4 + 1 + len(payload)) % _BLOCK
    if padding < 4:
        padding += _BLOCK
    return struct.pack(">IB", 1 + len(payload) + padding, padding) + payload + bytes(padding)


def refusal_bytes(reason: str) -> bytes:
    """The line saying why, the gateway's version string, then a DISCONNECT saying it again."""
    said = f"potluck: {reason}"
    return (
        f"{said}\r\n".encode()
        + f"SSH-2.0-{GATEWAY_SSH_VERSION}\r\n".encode()
        + disconnect_packet(SSH_DISCONNECT_TOO_MANY_CONNECTIONS, said)
    )
