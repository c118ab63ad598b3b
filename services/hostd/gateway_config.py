"""The `[[gateways]]` part of hostd's config, apart from the link itself (gateway_link.py).

Kept apart so that reading a config does not load asyncssh (~18 MB resident in hostd, see
bench/README.md's footprint section): a hostd without gateways never needs it. The pinned
key is checked here by its wire form (RFC 4253's string framing, the type named twice),
which is what the link compares with the key the gateway presents.
"""

from pydantic import BaseModel, ConfigDict, field_validator

from potluck.kernel.digits import is_digits
from potluck.kernel.ssh_wire import public_key_blob

__all__ = ["GatewayLink", "parse_address", "public_key_blob"]


def parse_address(value: str) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not is_digits(port) or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT, e.g. gateway.example:2223")
    return host, int(port)


class GatewayLink(BaseModel):
    """One gateway this host keeps connected to: where it listens for hosts, and its pinned key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str
    client_key: str

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        parse_address(value)
        return value.strip()

    @field_validator("client_key")
    @classmethod
    def _client_key(cls, value: str) -> str:
        try:
            public_key_blob(value.strip())
        except ValueError as exc:
            raise ValueError(f"not an OpenSSH public key line ({exc})") from None
        return value.strip()

    @property
    def host(self) -> str:
        return parse_address(self.address)[0]

    @property
    def port(self) -> int:
        return parse_address(self.address)[1]

    def key_blob(self) -> bytes:
        return public_key_blob(self.client_key)
