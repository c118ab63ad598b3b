"""hostd's configuration file (TOML), every field documented and validated at start.

    host_id = "h-3f2a9c1e7b40"             # printed by `potluck ops hosts enroll`
    credentials_file = "h-3f2a.creds"      # its NATS identity, from the same command
    nats_url = "nats://pool.example:4222"
    docker_url = "unix:///var/run/docker.sock"
    state_dir = "/var/lib/potluck-hostd"
    allowed_images = ["potluck-test:*", "debian:*"]   # see below; empty = any image
    allow_network = false       # may containers here have a network? (see below)
    internal_network = false    # true: their network has no route out (see below)
    image_cache = "5G"          # images kept on this machine, out of donate.disk (see below)

    [donate]            # the most this machine gives the pool, all allocations together
    cpus = 2
    memory = "4G"
    disk = "20G"

    [labels]            # placement constraints users may ask for
    zone = "home"

    [timing]
    heartbeat_interval_s = 5
    drain_grace_s = 300         # running work gets this long to finish after `drain`
    usage_interval_s = 30
    disk_check_interval_s = 10  # how often writable layers are measured (no engine quota)
    image_scan_interval_s = 30  # images are listed at least this often (and on every image event)
    image_idle_s = 120          # an image no container has used for this long may be removed

    [[gateways]]        # SSH gateways this machine keeps connected to (outbound; no port opens)
    address = "gateway.example:2223"
    client_key = "ssh-ed25519 AAAA... potluck-sshgateway"   # `potluck sshgateway --print-client-key`

    [sleep]             # how hostd notices this machine sleep (see below)
    threshold_s = 2             # the boot-time clock ahead of the monotonic one by more: it slept
    check_interval_s = 1        # how often the two clocks are compared
    dbus_address = "unix:path=/run/dbus/system_bus_socket"   # logind's bus; "" listens to none

Relative paths are taken from the configuration file's folder.

`allowed_images` entries are image references whose parts may hold `*` (any
run of characters) and `?` (one), matched part by part: registry, each
component of the repository, tag, digest (see potluck.contracts.image_reference).
`*` never spans `/`, `:` or `@`: `debian:*` is every tag of Docker Hub's debian
and not `debian:5000/evil/img:1` (registry `debian:5000`); `registry.example.org/acme/*:*`
is every tag of every image directly under registry.example.org/acme. No tag means
`:latest`, as with `docker pull`. An entry that is not a valid pattern stops
hostd at start, naming it.

`allow_network` (default false): allocations that ask for `network: true` are
placed here only when it is true, and hostd refuses any that arrives
otherwise. Where it is true, each such container gets a bridge network of its
own (`potluck-<allocation>`), never the engine's default bridge, so containers
cannot reach one another; they can reach what the laptop routes to, its LAN
included, through the engine's NAT. Without networking a container has only
its loopback. `internal_network = true` makes those networks internal (no
route out at all): for engines that run without iptables (`--iptables=false`),
where Docker cannot keep bridge networks apart, and for tests.

`image_cache` (default: unset): the most disk the engine's images may take.
It is carved out of `donate.disk`: hostd registers `donate.disk - image_cache`
as the disk allocations' writable layers may reserve, so images and containers
together stay within what the member donated; it must be smaller than
`donate.disk`. When the images take more, hostd removes images, least recently
used first, until they fit: never one a container (running or stopped) was made
from, never one an allocation placed here is waiting for, never one named
exactly (no wildcard) in `allowed_images` (the member's own base images), and
never one used or pulled in the last `image_idle_s`. Unset, hostd removes no
image and registers all of `donate.disk` (images are then the member's to
manage).

`[sleep]`: a sleeping laptop is not a dead one. hostd listens to systemd-logind's
PrepareForSleep on the system D-Bus and tells the registry before the machine
sleeps, so the pool shows it asleep at once (its work waits, frozen by the kernel);
without D-Bus or logind it says one line in its log and goes on. Either way, on
waking it sees the suspend in its clocks, tells how long it slept, and re-syncs.
`dbus_address` unset: `DBUS_SYSTEM_BUS_ADDRESS`, else the system bus's usual socket.
"""

import os
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from potluck.contracts.capacity import Capacity
from potluck.contracts.image_reference import InvalidReference, image_allowed, parse_pattern
from potluck.contracts.subjects import validate_host_id
from potluck.hostd.gateway_link import GatewayLink
from potluck.kernel.sizes import Size, format_size


class ConfigError(Exception):
    """The configuration file cannot be used; the message names the file and the field."""


class Donation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cpus: float = Field(gt=0, le=1024)
    memory: Size = Field(ge=64 * 1024 * 1024)
    disk: Size = Field(ge=64 * 1024 * 1024)

    def capacity(self) -> Capacity:
        return Capacity(cpus=self.cpus, memory_bytes=int(self.memory), disk_bytes=int(self.disk))


class Timing(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    heartbeat_interval_s: float = Field(default=5.0, gt=0, le=300)
    drain_grace_s: float = Field(default=300.0, ge=0)
    usage_interval_s: float = Field(default=30.0, gt=0)
    disk_check_interval_s: float = Field(default=10.0, gt=0)
    image_scan_interval_s: float = Field(default=30.0, gt=0)
    image_idle_s: float = Field(default=120.0, ge=0)


class SleepSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold_s: float = Field(default=2.0, gt=0, le=3600)
    check_interval_s: float = Field(default=1.0, gt=0, le=60)
    #: Where logind is; None: DBUS_SYSTEM_BUS_ADDRESS or the usual socket; "": do not listen.
    dbus_address: str | None = None


class HostdConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host_id: str
    credentials_file: Path
    nats_url: str = "nats://127.0.0.1:4222"
    docker_url: str = "unix:///var/run/docker.sock"
    state_dir: Path
    allowed_images: list[str] = Field(default_factory=list)
    allow_network: bool = False
    internal_network: bool = False
    image_cache: Size | None = Field(default=None, gt=0)
    donate: Donation
    labels: dict[str, str] = Field(default_factory=dict)
    timing: Timing = Field(default_factory=Timing)
    gateways: list[GatewayLink] = Field(default_factory=list)
    sleep: SleepSettings = Field(default_factory=SleepSettings)

    @field_validator("host_id")
    @classmethod
    def _host_id(cls, value: str) -> str:
        return validate_host_id(value)

    @field_validator("allowed_images")
    @classmethod
    def _allowed_images(cls, value: list[str]) -> list[str]:
        for i, text in enumerate(value):
            try:
                parse_pattern(text)
            except InvalidReference as exc:
                raise ValueError(f"entry {i}: {exc}") from None
        return value

    @field_validator("nats_url")
    @classmethod
    def _nats_url(cls, value: str) -> str:
        if not value.startswith(("nats://", "tls://")):
            raise ValueError("must start with nats:// or tls://")
        return value

    @field_validator("docker_url")
    @classmethod
    def _docker_url(cls, value: str) -> str:
        if not value.startswith(("unix://", "tcp://", "ssh://")):
            raise ValueError("must be unix:///path/docker.sock, tcp://host:port or ssh://...")
        return value

    @model_validator(mode="after")
    def _image_cache_within_donation(self) -> "HostdConfig":
        if self.image_cache is not None and self.image_cache >= self.donate.disk:
            raise ValueError(
                f"image_cache ({format_size(self.image_cache)}) must be smaller than donate.disk "
                f"({format_size(self.donate.disk)}): images are kept out of the donated disk, "
                "and allocations need the rest"
            )
        return self

    def placeable(self) -> Capacity:
        """What allocations may reserve here: the donation, less the disk kept for images."""
        donated = self.donate.capacity()
        if self.image_cache is None:
            return donated
        return Capacity(
            cpus=donated.cpus,
            memory_bytes=donated.memory_bytes,
            disk_bytes=donated.disk_bytes - self.image_cache,
        )

    def base_images(self) -> list[str]:
        """The `allowed_images` entries that name one image (no wildcard): kept in the cache."""
        return [text for text in self.allowed_images if "*" not in text and "?" not in text]

    def image_allowed(self, image: str) -> bool:
        return image_allowed(self.allowed_images, image)

    def nats_seed(self) -> str:
        """The host's nkey seed, from the credentials file enrollment wrote."""
        try:
            data = tomllib.loads(self.credentials_file.read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"credentials_file {self.credentials_file} does not exist; "
                "get it from `potluck ops hosts enroll`"
            ) from None
        except (tomllib.TOMLDecodeError, OSError) as exc:
            raise ConfigError(f"credentials_file {self.credentials_file}: {exc}") from None
        if data.get("host_id") != self.host_id:
            raise ConfigError(
                f"credentials_file {self.credentials_file} belongs to host {data.get('host_id')!r}, "
                f"not {self.host_id!r}"
            )
        seed = data.get("nats_seed")
        if not isinstance(seed, str) or not seed.startswith("SU"):
            raise ConfigError(f"credentials_file {self.credentials_file} holds no user nkey seed")
        return seed


def load_config(path: Path) -> HostdConfig:
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; see `potluck hostd --help` for an example") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    base = path.parent
    for key in ("credentials_file", "state_dir"):
        if isinstance(raw.get(key), str) and not os.path.isabs(raw[key]):
            raw[key] = str(base / raw[key])
    try:
        return HostdConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None
