"""hostd's configuration file (TOML), every field documented and validated at start.

    host_id = "h-3f2a9c1e7b40"             # printed by `potluck ops hosts enroll`
    credentials_file = "h-3f2a.creds"      # its NATS identity, from the same command
    nats_url = "nats://pool.example:4222"   # a cluster: its nodes, separated by commas
    docker_url = "unix:///var/run/docker.sock"
    state_dir = "/var/lib/potluck-hostd"
    allowed_images = ["potluck-test:*", "debian:*"]   # see below; empty = any image the pool pulls
    allow_network = false       # may containers here have a network? (see below)
    internal_network = false    # true: their network has no route out (see below)
    image_cache = "5G"          # images kept on this machine, out of donate.disk (see below)
    warm_containers = 0         # containers kept made ahead, per recent shape (see below)

    [donate]            # the most this machine gives the pool, all allocations together
    cpus = 2
    memory = "4G"
    disk = "20G"

    [labels]            # placement constraints users may ask for (bounded: see below)
    zone = "home"

    [timing]
    heartbeat_interval_s = 5
    drain_grace_s = 300         # running work gets this long to finish after `drain`
    usage_interval_s = 30
    disk_check_interval_s = 10  # how often what containers wrote is measured (sooner near the bound)
    image_scan_interval_s = 30  # images are listed at least this often (and on every image event)
    image_idle_s = 120          # an image no container has used for this long may be removed
    state_report_interval_s = 300   # everything hostd runs is reported again this often (see below)

    [policy]            # what the pool yields to the owner (see below); these are the defaults
    owner_busy_cpus = 0.5       # the owner's own CPU use (not the pool's), in cores, that counts as busy
    on_owner_busy = "throttle"  # "throttle" | "freeze" | "ignore"
    throttle_to = 0.25          # fraction of the donated CPUs the pool keeps while throttled
    resume_after_idle_s = 30    # the owner must be idle this long before the pool gets its share back
    on_battery = "freeze"       # "freeze" | "throttle" | "run"
    max_temperature_c = 85      # above it: throttle; 5 degrees below it: back
    max_frozen_s = 3600         # frozen longer than this: the allocation is told
    power_supply_dir = "/sys/class/power_supply"
    thermal_dir = "/sys/class/thermal"
    sample_interval_s = 0.5     # how often load, battery and heat are read
    busy_after_s = 1.5          # the owner's load must stay above owner_busy_cpus this long

    [[policy.windows]]  # hours (local clock) when the pool gets less or nothing; none by default
    days = ["mon", "tue", "wed", "thu", "fri"]
    from = "09:00"
    to = "18:00"
    action = "throttle"         # or "freeze"

    [[gateways]]        # SSH gateways this machine keeps connected to (outbound; no port opens)
    address = "gateway.example:2223"
    client_key = "ssh-ed25519 AAAA... potluck-sshgateway"   # `potluck sshgateway --print-client-key`

    [sleep]             # how hostd notices this machine sleep (see below)
    threshold_s = 2             # the boot-time clock ahead of the monotonic one by more: it slept
    check_interval_s = 1        # how often the two clocks are compared
    dbus_address = "unix:path=/run/dbus/system_bus_socket"   # logind's bus; "" listens to none

Relative paths are taken from the configuration file's folder.

`allowed_images` decides what the pool may run here (pool_images.py). Empty:
any image hostd pulls for the pool, and none of the engine's own (the member's
builds, or pulls with their own login: to the pool such an image is absent, so
its name is pulled the pool's way or the allocation fails here). Not empty: an
allocation's image must match an entry, and an image the engine already holds
under a matching name runs as it is, the member's own too: listing it is consent.

`allowed_images` entries are image references whose parts may hold `*` (any
run of characters) and `?` (one), matched part by part: registry, each
component of the repository, tag, digest (see potluck.contracts.image_reference).
`*` never spans `/`, `:` or `@`: `debian:*` is every tag of Docker Hub's debian
and not `debian:5000/evil/img:1` (registry `debian:5000`); `registry.example.org/acme/*:*`
is every tag of every image directly under registry.example.org/acme. No tag means
`:latest`, as with `docker pull`. An entry that is not a valid pattern stops
hostd at start, naming it.
A registry on the member's own machine or network (loopback, private or
link-local addresses, `localhost`) is pulled from only when an entry names it
without a wildcard in its registry part (local_registries.py), whatever else
the list admits; the allocator places an image whose registry is such an
address, or `localhost`, only where a member named it.

`[labels]`: at most 32; a name is 1 to 63 letters, digits, `_`, `.` or `-` (what
requests' `constraints` can name), a value at most 128 characters of visible text
(no control or invisible format character, no white space at either end;
potluck.contracts.host_labels). A label outside that stops hostd at start,
naming it and what to change; the registry refuses it too (BAD_LABELS).

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

`warm_containers` (default 0: none; at most 8): hostd keeps this many containers
made ahead for each of the two allocation shapes (image, command, disk bound) it
placed last. The next allocation of that shape takes one: its CPU, memory and pids
limits are set with `docker update` and read back before it runs, its hardening is
that of any container. With the helper (helper.py) they are started ahead and frozen,
running only hostd's keep-alive (no command) or the launcher that runs the command once
the container is taken (launcher.py); taking one is unfreezing it: about half a `docker
run` (bench/README.md, `allocation`). Without the helper they are only created ahead,
which saves a few percent. An allocation's environment values are given at the take
(a task's launcher reads them before its command runs; sessions get them from the exec
bridge), so only a container started ahead takes an allocation that has them; one with a
network of its own never takes one. They hold no CPU (a frozen one a few hundred kB of
memory), count against `donate.disk` with their disk bound, keep their image in the cache
(the engine removes no image a container was made from), and go when the host leaves or
drains.

`[sleep]`: a sleeping laptop is not a dead one. hostd listens to systemd-logind's
PrepareForSleep on the system D-Bus and tells the registry before the machine
sleeps, so the pool shows it asleep at once (its work waits, frozen by the kernel);
without D-Bus or logind it says one line in its log and goes on. Either way, on
waking it sees the suspend in its clocks, tells how long it slept, and re-syncs.
`dbus_address` unset: `DBUS_SYSTEM_BUS_ADDRESS`, else the system bus's usual socket.

`[policy]`: the pool yields to the machine's owner. Pool containers always run
at the lowest CPU weight the engine allows (`cpu_shares` 2, cgroup v2
`cpu.weight` 1): the owner's processes get a core within a scheduler tick.
On top of that hostd reads, every `sample_interval_s`:
- the owner's load: the machine's CPU use (/proc/stat) minus the pool's own
  (its containers' cgroups, hostd itself and the containers' shims; dockerd
  counts as the owner's: cpu_load.py), in cores. Busy once it stayed at or above
  `owner_busy_cpus` for `busy_after_s` (a shorter spike changes nothing);
  `on_owner_busy` then throttles, freezes, or (`ignore`) does nothing. The pool
  gets its share back only after the owner was idle `resume_after_idle_s`.
  hostd reads no input-idle signal (keyboard, mouse): a desktop and a server
  alike are judged by their load;
- the battery, under `power_supply_dir` (sysfs layout): on battery when a
  `type=Battery` supply says `status=Discharging`, or it has chargers
  (Mains, USB) and every one says `online=0` (one that cannot be read says
  nothing). `on_battery = "run"` ignores it. No battery there: never on battery;
- the temperature, the hottest `thermal_zone*/temp` under `thermal_dir`
  (millidegrees): at or above `max_temperature_c` the pool is throttled until it
  is 5 degrees below; a hot machine whose zones fail a read stays throttled until
  one reads cool again. No zone there: no sensor, and heat never acts;
- `[[policy.windows]]`: on the listed `days` (mon..sun), from `from` until
  `to` (HH:MM, local clock, `from` before `to`; `to` may be "24:00"), the pool is
  throttled or frozen (`action`).
Freezing beats throttling. Throttled, the pool's containers share
`throttle_to` of the donated cpus in proportion to what each asked for (never
less than 0.01 cpus each; memory is never shrunk); frozen, they are paused by
the cgroup freezer, apart from and together with the member's own `potluck
host pause` (they thaw when neither holds). The registry records each change
(HostThrottled, HostFrozen, HostShareRestored); an allocation frozen longer than
`max_frozen_s` is told to its user. Opting out entirely: `on_owner_busy =
"ignore"`, `on_battery = "run"`, no windows, and a `max_temperature_c` the
machine never reaches. `potluck host policy --config hostd.toml` prints the
policy in effect.
"""

import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from potluck.contracts.capacity import Capacity
from potluck.contracts.host_labels import check_labels
from potluck.contracts.image_reference import InvalidReference, image_allowed, parse_pattern
from potluck.contracts.messages import ImagePattern
from potluck.contracts.subjects import validate_host_id
from potluck.hostd.gateway_config import GatewayLink
from potluck.hostd.policy_config import OwnerPolicy
from potluck.kernel.nats_urls import nats_servers
from potluck.kernel.rejections import error_line
from potluck.kernel.sizes import Size, format_size

if TYPE_CHECKING:  # the driver (and the docker SDK with it) is not config's to import
    from potluck.hostd.docker_driver import EngineMachine

#: Warm containers per shape: a few are all a burst of placements takes before the refill.
MAX_WARM_CONTAINERS = 8


class ConfigError(Exception):
    """The configuration file cannot be used; the message names the file and the field."""


class Donation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cpus: float = Field(gt=0, le=1024)
    memory: Size = Field(ge=64 * 1024 * 1024)
    disk: Size = Field(ge=64 * 1024 * 1024)

    def capacity(self) -> Capacity:
        return Capacity(cpus=self.cpus, memory_bytes=int(self.memory), disk_bytes=int(self.disk))

    def beyond(self, machine: "EngineMachine | None") -> list[str]:
        """What this donation promises past the machine the engine runs on, one problem a field
        ([] when the engine does not say what machine it runs on).

        The pool places up to the donation: CPUs past the engine's make every container asking
        more than it has fail to start ("Range of CPUs is from 0.01 to N"), and memory past it
        lets the pool's containers push the member's own programs into swap or the OOM killer.
        The disk is compared with the file system that holds the engine's data when this
        machine sees it (EngineMachine.disk_bytes): a donation of 100T on a 250G disk had the
        pool place a 62G allocation where 59G were free."""
        if machine is None:
            return []
        problems = []
        if self.cpus > machine.cpus:
            problems.append(
                f"donate.cpus: {self.cpus:g} is more than the {machine.cpus} CPUs of the machine "
                "the Docker engine runs on; donate at most that"
            )
        if int(self.memory) > machine.memory_bytes:
            problems.append(
                f"donate.memory: {format_size(int(self.memory))} is more than the "
                f"{machine.memory_bytes / (1 << 30):.1f}G of memory of the machine the Docker "
                "engine runs on; donate at most that"
            )
        if machine.disk_bytes is not None and int(self.disk) > machine.disk_bytes:
            problems.append(
                f"donate.disk: {format_size(int(self.disk))} is more than the "
                f"{machine.disk_bytes / (1 << 30):.1f}G file system the Docker engine keeps its "
                "data on (its DockerRootDir); donate at most what you can spare of it"
            )
        return problems


class Timing(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    heartbeat_interval_s: float = Field(default=5.0, gt=0, le=300)
    drain_grace_s: float = Field(default=300.0, ge=0)
    usage_interval_s: float = Field(default=30.0, gt=0)
    disk_check_interval_s: float = Field(default=10.0, gt=0)
    image_scan_interval_s: float = Field(default=30.0, gt=0)
    image_idle_s: float = Field(default=120.0, ge=0)
    #: hostd reports everything it runs after every (re)connect and this often besides: a report
    #: JetStream dropped (a stream's bound; another host flooding this one's subjects through
    #: the JetStream API, see services/registry/nats_auth.py) is made good within this long.
    state_report_interval_s: float = Field(default=300.0, gt=0)


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
    # The registration's bounds (potluck.contracts.messages.RegisterHost), said at start.
    allowed_images: list[ImagePattern] = Field(default_factory=list, max_length=256)
    allow_network: bool = False
    internal_network: bool = False
    image_cache: Size | None = Field(default=None, gt=0)
    warm_containers: int = 0
    #: Count what containers' output costs the engine (their shims' CPU, a share of dockerd's)
    #: against their CPU caps, pausing a container while its budget is spent (log_cost.py).
    #: Off by default: the engine's work for a `docker cp` or `docker exec` on the container
    #: (the member's, a benchmark's baseline) is charged to it too, and the engine refuses both
    #: while it is paused (bench/README.md, `log_flood`).
    log_bound: bool = False
    donate: Donation
    labels: dict[str, str] = Field(default_factory=dict)
    timing: Timing = Field(default_factory=Timing)
    gateways: list[GatewayLink] = Field(default_factory=list)
    sleep: SleepSettings = Field(default_factory=SleepSettings)
    policy: OwnerPolicy = Field(default_factory=OwnerPolicy)

    @field_validator("host_id")
    @classmethod
    def _host_id(cls, value: str) -> str:
        return validate_host_id(value)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        check_labels(value)  # InvalidLabels, a ValueError: named under `labels` in the ConfigError
        return value

    @field_validator("allowed_images")
    @classmethod
    def _allowed_images(cls, value: list[str]) -> list[str]:
        for i, text in enumerate(value):
            try:
                parse_pattern(text)
            except InvalidReference as exc:
                raise ValueError(f"entry {i}: {exc}") from None
        return value

    @field_validator("warm_containers")
    @classmethod
    def _warm_containers(cls, value: int) -> int:
        if not 0 <= value <= MAX_WARM_CONTAINERS:
            raise ValueError(
                f"must be from 0 (keep none) to {MAX_WARM_CONTAINERS} containers per shape, not {value}"
            )
        return value

    @field_validator("nats_url")
    @classmethod
    def _nats_url(cls, value: str) -> str:
        nats_servers(value)  # one server, or a cluster's nodes separated by commas
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
        # `potluck hostd --help` has no example to show (it pointed there): say where one comes from.
        raise ConfigError(
            f"{path}: no such file; `potluck join TOKEN` writes it (the README's member quick start "
            "shows one written by hand; every field is described in services/hostd/config.py)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    base = path.parent
    for key in ("credentials_file", "state_dir"):
        if isinstance(raw.get(key), str) and not os.path.isabs(raw[key]):
            raw[key] = str(base / raw[key])
    policy = raw.get("policy")
    if isinstance(policy, dict):
        for key in ("power_supply_dir", "thermal_dir"):
            if isinstance(policy.get(key), str) and not os.path.isabs(policy[key]):
                policy[key] = str(base / policy[key])
    try:
        return HostdConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(error_line(err, "(top)") for err in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None
