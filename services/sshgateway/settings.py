"""The gateway's settings: one frozen object, validated at start, from the environment.

Every field can be set as `POTLUCK_SSHGATEWAY_<FIELD>` (upper case); lists
are comma-separated. A bad value raises `SettingsError` naming the variable.

    POTLUCK_SSHGATEWAY_LISTEN=0.0.0.0:2222          users' ssh connects here
    POTLUCK_SSHGATEWAY_TUNNEL_LISTEN=0.0.0.0:2223   every hostd dials out to here
    POTLUCK_SSHGATEWAY_STATE_DIR=/var/lib/potluck-sshgateway

Keys live in `state_dir`, made on first start and kept: `ssh_host_ed25519_key`
is the host key users see (so their known_hosts stays valid across restarts),
`tunnel_client_ed25519_key` is what the gateway presents to each hostd, whose
public half members pin in their hostd config (`gateways = [{address = ...,
client_key = "ssh-ed25519 ..."}]`; `potluck sshgateway --print-client-key`
prints it).

Ciphers: only AES-GCM is offered to users by default. OpenSSH clients prefer
chacha20-poly1305 when the server offers it, and on this CPU (AES-NI) asyncssh
moves about 1.6x more data per second with aes128-gcm (issue 5's measurements;
bench/README.md). Every OpenSSH since 6.2 supports AES-GCM. Compression is off
on every hop: zlib costs CPU and caps throughput in asyncssh.

Key exchange and MACs (issue 13, `ssh-audit` clean): only
`mlkem768x25519-sha256` (post-quantum hybrid, OpenSSH 9.9+) and
`curve25519-sha256` (every OpenSSH since 6.5) are offered: no SHA-1, no NIST
curves, no finite-field Diffie-Hellman (whose server-side cost is what the
DHEat attack exploits). MACs are used only with a non-AEAD cipher; the ones
offered are SHA-2 encrypt-then-MAC. Names asyncssh does not implement are
refused at start, and so are weak ones (SHA-1, CBC, RC4, MD5, NIST curves, `none`: the rule
of potluck.kernel.ssh_algorithms), which asyncssh implements and an operator could otherwise
list.

Connection limits (each refusal says why, and is logged with the source):

- `source_connections_per_s`, `source_connection_burst`: new connections from
  one address are admitted at this rate, with this burst (a token bucket);
  one over is closed before the SSH banner with a line saying why (as
  OpenSSH's MaxStartups does), so it costs no key exchange.
- `max_unauthenticated`, `source_max_unauthenticated`: connections not yet
  logged in, in all and from one address (OpenSSH's MaxStartups and
  PerSourceMaxStartups); `login_timeout_s` bounds how long each may stay.
- `tunnel_source_connections_per_s`, `tunnel_source_connection_burst`,
  `tunnel_max_unauthenticated`, `tunnel_source_max_unauthenticated`: the
  same on the hosts' port, looser (hostds dial a connection for each session);
  a connection there must present a registered host key and take the
  gateway's within `login_timeout_s`.
- `max_idle_links_per_host`: authenticated connections one host may keep
  idle here (hostd keeps 2); one more closes the host's oldest (links.py).
- `max_sessions_per_connection` (OpenSSH's MaxSessions) and
  `max_sessions_per_user` (sessions open at once by one allocation's owner,
  over all their connections): one over is refused on the channel, with a
  message the ssh client prints.
- `user_sessions_per_s`, `user_session_burst`: sessions one allocation's owner
  opens, over time (a token bucket): each is two events in the log, so a loop
  of sessions is a loop of appends; one over is refused on the channel, before
  anything is recorded, with a message the ssh client prints.
- `max_connections_per_user`: authenticated connections open at once by one
  allocation's owner, over all their allocations and addresses; one over is
  disconnected right after it logs in, with a message the ssh client prints.

Lost gateways (gateway_sweep.py): each gateway refreshes an entry for its run
every `run_refresh_s` in a JetStream key-value bucket, and every
`lost_sweep_s` looks whether the runs that carry open sessions still do; a
run whose entry it has seen unchanged (or absent) for `run_lost_after_s` is
lost, and its sessions get `SessionEnded` GATEWAY_LOST. `run_lost_after_s`
must be at least twice `run_refresh_s`, so that one late refresh never counts
as a death.
"""

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import asyncssh.encryption
import asyncssh.kex
import asyncssh.mac
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from potluck.kernel.digits import is_digits
from potluck.kernel.rejections import error_text
from potluck.kernel.ssh_algorithms import weakness
from potluck.sshgateway.ratelimit import LimitPolicy

__all__ = [
    "DEFAULT_CIPHERS",
    "DEFAULT_KEX_ALGS",
    "DEFAULT_MAC_ALGS",
    "ENV_PREFIX",
    "GatewaySettings",
    "SettingsError",
    "parse_address",
]

ENV_PREFIX = "POTLUCK_SSHGATEWAY_"
HOST_KEY_FILE = "ssh_host_ed25519_key"
TUNNEL_KEY_FILE = "tunnel_client_ed25519_key"
#: The user name the gateway logs in with on a hostd's reverse connection.
TUNNEL_USER = "potluck-gateway"
DEFAULT_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
DEFAULT_KEX_ALGS = ("mlkem768x25519-sha256", "curve25519-sha256", "curve25519-sha256@libssh.org")
DEFAULT_MAC_ALGS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com")
_LIST_FIELDS = ("ciphers", "kex_algs", "mac_algs")


#: What asyncssh implements, per list setting (asyncssh's own registries).
_IMPLEMENTED = {
    "ciphers": asyncssh.encryption.get_encryption_algs,
    "kex_algs": asyncssh.kex.get_kex_algs,
    "mac_algs": asyncssh.mac.get_mac_algs,
}
#: The family of each list setting, as potluck.kernel.ssh_algorithms names it.
_KIND = {"ciphers": "cipher", "kex_algs": "kex", "mac_algs": "mac"}


class SettingsError(ValueError):
    """A setting is invalid; the message names the environment variable."""


def parse_address(value: str) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    # An IPv6 address must be bracketed, or "::1" would read as host ":" and port 1.
    ambiguous = ":" in host and not bracketed
    if not sep or not host or ambiguous or not is_digits(port) or not 0 <= int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT, e.g. 127.0.0.1:2222 or [::1]:2222")
    return host, int(port)


class GatewaySettings(BaseModel):
    # "inf" would parse as a float and mean "never": a timeout that never fires
    # or a lockout that never ends is a mistake, not a setting.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    state_dir: Path
    listen: str = "127.0.0.1:2222"
    tunnel_listen: str = "127.0.0.1:2223"
    #: Names this gateway in audit events.
    name: str = Field(default_factory=socket.gethostname, min_length=1, max_length=255)
    ciphers: tuple[str, ...] = DEFAULT_CIPHERS
    kex_algs: tuple[str, ...] = DEFAULT_KEX_ALGS
    mac_algs: tuple[str, ...] = DEFAULT_MAC_ALGS

    #: New connections admitted per second from one address, after a burst of `source_connection_burst`.
    source_connections_per_s: float = Field(default=2.0, gt=0)
    source_connection_burst: int = Field(default=10, ge=1)
    #: Connections not logged in yet, in all and from one address.
    max_unauthenticated: int = Field(default=64, ge=1)
    source_max_unauthenticated: int = Field(default=10, ge=1)
    max_sessions_per_connection: int = Field(default=10, ge=1)
    max_sessions_per_user: int = Field(default=32, ge=1)
    #: The hosts' port (hostds dial in): new connections per second from one address after a
    #: burst, and connections not authenticated yet, in all and from one address (a hostd keeps
    #: 2 idle ones and dials one more for each session it starts).
    tunnel_source_connections_per_s: float = Field(default=20.0, gt=0)
    tunnel_source_connection_burst: int = Field(default=100, ge=1)
    tunnel_max_unauthenticated: int = Field(default=256, ge=1)
    tunnel_source_max_unauthenticated: int = Field(default=64, ge=1)
    #: Authenticated connections open at once by one allocation's owner (session_caps.py says why).
    max_connections_per_user: int = Field(default=64, ge=1)
    #: Sessions one allocation's owner opens a second, after a burst of `user_session_burst`
    #: (session_caps.py says why).
    user_sessions_per_s: float = Field(default=5.0, gt=0)
    user_session_burst: int = Field(default=40, ge=1)

    #: How long a new session to an allocation still starting (pending, placed, pulling) waits
    #: for it to run before it is refused (start_wait.py says why).
    start_wait_s: float = Field(default=10.0, ge=0)
    #: How long a new session waits for a connection from its host.
    link_wait_s: float = Field(default=10.0, gt=0)
    #: Idle connections one host may keep at this gateway (hostd keeps 2); one more closes its
    #: oldest (links.py says why).
    max_idle_links_per_host: int = Field(default=8, ge=1)
    #: How long opening a session on a host's connection may take (a dead link fails here).
    channel_open_timeout_s: float = Field(default=10.0, gt=0)
    login_timeout_s: float = Field(default=30.0, gt=0)
    keepalive_interval_s: float = Field(default=15.0, gt=0)
    keepalive_count_max: int = Field(default=3, ge=1)
    #: SSH channel window on the hop to hostd (bytes in flight per session).
    link_window: int = Field(default=2 * 1024 * 1024, ge=64 * 1024)
    #: CPU slice the event loop asks the kernel for, in microseconds (potluck.contracts.link
    #: request_short_slice: keystrokes stay prompt while another session moves bulk data);
    #: 0 keeps the kernel's default.
    cpu_slice_us: int = Field(default=100, ge=0, le=100_000)

    #: Keys one connection may offer before the rest are refused (OpenSSH's MaxAuthTries).
    max_keys_per_connection: int = Field(default=6, ge=1)
    failure_window_s: float = Field(default=600.0, gt=0)
    source_delay_s: float = Field(default=0.5, ge=0)
    source_max_delay_s: float = Field(default=8.0, ge=0)
    source_lockout_after: int = Field(default=10, ge=1)
    source_lockout_s: float = Field(default=300.0, ge=0)
    alloc_delay_s: float = Field(default=0.5, ge=0)
    alloc_max_delay_s: float = Field(default=4.0, ge=0)
    alloc_lockout_after: int = Field(default=50, ge=1)
    alloc_lockout_s: float = Field(default=120.0, ge=0)

    #: How often the gateway refreshes its run's liveness entry on the bus.
    run_refresh_s: float = Field(default=10.0, gt=0)
    #: How long a run's entry must be seen unchanged or absent before its sessions are ended.
    run_lost_after_s: float = Field(default=30.0, gt=0)
    #: How often the gateway looks for sessions whose gateway is lost.
    lost_sweep_s: float = Field(default=15.0, gt=0)

    @field_validator("state_dir", mode="before")
    @classmethod
    def _state_dir(cls, value: Any) -> Any:
        # An empty value would become Path("."), and the keys would land wherever we started.
        if isinstance(value, str) and not value.strip():
            raise ValueError("name a directory; an empty value would put the keys in the working directory")
        return value

    @field_validator("listen", "tunnel_listen")
    @classmethod
    def _address(cls, value: str) -> str:
        parse_address(value)
        return value

    @field_validator("ciphers", "kex_algs", "mac_algs")
    @classmethod
    def _algorithms(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one algorithm")
        field = info.field_name or ""
        known = _IMPLEMENTED[field]()
        unknown = [name for name in value if name.encode() not in known]
        if unknown:
            raise ValueError(f"not implemented by asyncssh: {', '.join(unknown)}")
        weak = [f"{name} ({why})" for name in value if (why := weakness(_KIND[field], name))]
        if weak:
            raise ValueError(
                f"too weak to offer: {', '.join(weak)}; leave the setting unset for the defaults"
            )
        return value

    @model_validator(mode="after")
    def _unauthenticated(self) -> "GatewaySettings":
        if self.source_max_unauthenticated > self.max_unauthenticated:
            raise ValueError(
                "source_max_unauthenticated must not exceed max_unauthenticated "
                f"({self.source_max_unauthenticated} > {self.max_unauthenticated})"
            )
        if self.tunnel_source_max_unauthenticated > self.tunnel_max_unauthenticated:
            raise ValueError(
                "tunnel_source_max_unauthenticated must not exceed tunnel_max_unauthenticated "
                f"({self.tunnel_source_max_unauthenticated} > {self.tunnel_max_unauthenticated})"
            )
        return self

    @model_validator(mode="after")
    def _lost_after(self) -> "GatewaySettings":
        if self.run_lost_after_s < 2 * self.run_refresh_s:
            raise ValueError(
                "run_lost_after_s must be at least twice run_refresh_s "
                f"({self.run_lost_after_s} < 2 x {self.run_refresh_s}): "
                "a live gateway would be taken for lost"
            )
        return self

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_address(self.listen)

    @property
    def tunnel_address(self) -> tuple[str, int]:
        return parse_address(self.tunnel_listen)

    @property
    def host_key_path(self) -> Path:
        return self.state_dir / HOST_KEY_FILE

    @property
    def tunnel_key_path(self) -> Path:
        return self.state_dir / TUNNEL_KEY_FILE

    def source_policy(self) -> LimitPolicy:
        return LimitPolicy(
            base_delay_s=self.source_delay_s,
            max_delay_s=max(self.source_max_delay_s, self.source_delay_s),
            window_s=self.failure_window_s,
            lockout_after=self.source_lockout_after,
            lockout_s=self.source_lockout_s,
        )

    def alloc_policy(self) -> LimitPolicy:
        return LimitPolicy(
            base_delay_s=self.alloc_delay_s,
            max_delay_s=max(self.alloc_max_delay_s, self.alloc_delay_s),
            window_s=self.failure_window_s,
            lockout_after=self.alloc_lockout_after,
            lockout_s=self.alloc_lockout_s,
        )

    @classmethod
    def for_keys(cls, state_dir: Path | None, environ: Mapping[str, str] | None = None) -> "GatewaySettings":
        """Only what the gateway's keys need, its state directory (the option, else
        `POTLUCK_SSHGATEWAY_STATE_DIR`); nothing else is read, so printing a key needs no
        database, NATS or listening settings."""
        env = os.environ if environ is None else environ
        value: Any = state_dir if state_dir is not None else env.get(ENV_PREFIX + "STATE_DIR")
        source = "--state-dir" if state_dir is not None else ENV_PREFIX + "STATE_DIR"
        if value is None:
            raise SettingsError(f"{source}: name the gateway's state directory, where its keys are")
        try:
            return cls(state_dir=value)
        except ValidationError as exc:
            raise SettingsError(f"{source}: {error_text(exc.errors()[0])}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "GatewaySettings":
        """Settings from `POTLUCK_SSHGATEWAY_*` variables; `overrides` (e.g. CLI options) win."""
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        for name in cls.model_fields:
            value = env.get(ENV_PREFIX + name.upper())
            if value is None:
                continue
            if name in _LIST_FIELDS:
                raw[name] = tuple(v.strip() for v in value.split(",") if v.strip())
            else:
                raw[name] = value
        given = {k: v for k, v in overrides.items() if v is not None}
        raw.update(given)
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                field = str(err["loc"][0]) if err["loc"] else ""
                source = ENV_PREFIX + field.upper() if field and field not in given else field
                if err["type"] == "missing" and field in overrides:
                    # Unset everywhere: name the option too, as `--help` lists it.
                    option = "--" + field.replace("_", "-")
                    problems.append(f"give {option} (or {ENV_PREFIX + field.upper()}): it is required")
                    continue
                problems.append(f"{source or '(settings)'}: {error_text(err)}")
            raise SettingsError("; ".join(problems)) from None
