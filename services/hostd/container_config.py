"""Pure translation of an allocation's limits into Docker create arguments, and back.

`create_kwargs` (and `network_kwargs`, for an allocation's own network) say
what we ask the engine for; `image_refusals` reads an image's inspect before
anything is made from it; `limit_mismatches` and `network_mismatches` read the
engine's answer back and list every limit or security setting that did not
take effect, so that hostd refuses to start work it cannot bound. Nothing here
talks to Docker.

Labels are not hostd's alone: the engine merges an image's LABELs into the labels of
every container made from it, and a key the create call does not set shows the image's
value. So an image carrying any label of Potluck's own namespace (`potluck.`) is refused
before anything is made from it (`image_refusals`); every container hostd creates sets
each label hostd reads back (`CONTAINER_LABELS`), an empty value where one does not apply
(`own_labels`); and what a container is, whose and with which bounds, is never read from a
label an image could have supplied: its allocation from its name (`allocation_of`), its
spec only from a label that agrees with that name (`spec_of`), its own network from its
network mode (`own_network`).
"""

import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from potluck.contracts.capacity import MIN_CPUS
from potluck.contracts.image_reference import engine_name
from potluck.hostd.helper import HELPER_DIR, HELPER_PATH, KEEP_ALIVE
from potluck.hostd.no_network import hosts_mount
from potluck.hostd.seccomp_profile import PROFILE as SECCOMP_PROFILE

# Containers run strangers' code on a member's laptop, as root inside the
# container. Docker's default set is dropped entirely; we add back only what
# ordinary shell work and package managers need on the container's own files:
#   CHOWN, FOWNER, DAC_OVERRIDE  unpack archives and install packages whose files
#                                belong to other users (dpkg, tar -p, pip as root);
#   SETUID, SETGID               switch to an unprivileged user (apt drops to _apt,
#                                `su` to a build user).
# Left out, among Docker's defaults: NET_RAW (raw sockets, spoofing), MKNOD (device
# nodes), SETFCAP/SETPCAP (file capabilities), SYS_CHROOT, KILL (signal other users'
# processes), NET_BIND_SERVICE, AUDIT_WRITE, FSETID. no-new-privileges also
# keeps setuid binaries from gaining anything.
CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID")
#: A container's output log (the engine's json-file, on the member's disk) is part of its
#: allocation's disk: 1/LOG_SHARE of it, at most LOG_MOST_BYTES, in LOG_FILES files the engine
#: rotates. Its files may take what is left (`ContainerSpec.writable_bytes`): the log had been
#: 30 MB beside every allocation's disk, half as much again as a 64 MiB one.
LOG_SHARE = 16
LOG_MOST_BYTES = 30 << 20
LOG_FILES = 3
#: The log of a container made before it counted (an upgraded hostd adopting it keeps it as it
#: ran: 10 MB a file), and the bound its files had then (`StorageOpt.size`: the whole disk).
LEGACY_LOG = {"max-size": "10m", "max-file": str(LOG_FILES)}
#: The engine's word for "run no health check", whatever the image declares.
NO_HEALTHCHECK = ("NONE",)
NAME_PREFIX = "potluck-"
LABEL_ALLOCATION = "potluck.allocation"
LABEL_HOST = "potluck.host"
LABEL_MANAGED = "potluck.managed"
LABEL_SPEC = "potluck.spec"
LABEL_NETWORK = "potluck.network"
#: A container made ahead, for no allocation yet (warm_pool.py).
LABEL_WARM = "potluck.warm"
#: Potluck's own label namespace: the labels above, the disk-quota probe's, the networks'.
#: An image may carry none of it (`image_refusals`).
LABEL_NAMESPACE = "potluck."
#: Every label hostd reads back from a container: each container it creates sets all of them.
CONTAINER_LABELS = (LABEL_ALLOCATION, LABEL_HOST, LABEL_MANAGED, LABEL_SPEC, LABEL_WARM)
# Open files: the soft limit most programs expect, a hard limit they may raise it to
# (the engine's own default is about a million, kernel memory a container could pin).
NOFILE_SOFT = 1024
NOFILE_HARD = 4096
# Processes of the container's user. The kernel counts them per uid across the whole
# machine (and never for uid 0 of the machine), so a container running as uid 1000
# shares the count with the member's own session: generous, with the pids cgroup
# limit as the real bound on the container.
NPROC = 4096
# Core dumps: none, and no process in the container may raise the limit (raising the hard
# limit needs CAP_SYS_RESOURCE). The machine's kernel.core_pattern decides where a core goes: a
# file (written where the crashing process stands), or a pipe to a helper (systemd-coredump,
# apport) that the kernel runs as root in the member's own namespaces, its work outside the
# container's CPU quota and its files outside the container's disk bound. A limit of 0 stops
# the file but not the pipe: the kernel applies no limit to a pipe, except that 1 byte is its
# sign to start no helper ("RLIMIT_CORE is set to 1, aborting core"); and a file of 1 byte is
# less than any core, so none is written either (both measured on this machine's 6.18 kernel:
# with 0 the helper ran, with 1 it did not, and no core file was left).
CORE = 1
#: The core limit of containers made before it was 1 (an upgraded hostd starting one again).
LEGACY_CORE = 0
# What the kernel counts for each user of the machine, whichever container or process uses
# it: a container's root is the machine's root (no user namespace), so without a limit of its
# own a container could queue signals, or fill message queues, until the machine's root has
# none left (found: 96,367 signals queued, the whole of root's limit, and with them every
# root process of the member's unable to create a POSIX timer). A process may queue or create
# only while the user's count is below its own limit, so these cap what all containers
# together can take, leaving the rest to the member's daemons:
#   SIGPENDING  queued signals (real-time ones, and each POSIX timer holds one), against the
#               machine's default of a few thousand to a hundred thousand (it scales with RAM);
#   MSGQUEUE    bytes of POSIX message queues, against the default 819,200: two queues of
#               the default size (10 messages of 8 KiB);
#   MEMLOCK     locked memory, which shared memory locked with SHM_LOCK counts for the user
#               as a whole (and every lock counts against the container's memory too): the
#               usual default, set here rather than inherited from however the engine was
#               started (unlimited on some machines).
SIGPENDING = 1024
MSGQUEUE = 204800
MEMLOCK = 8 << 20
# The lowest CPU weight the engine allows (cgroup v1 cpu.shares 2, v2 cpu.weight 1): the
# owner's processes get a core from the pool's within a scheduler tick, the way BOINC runs
# its work at idle priority; the quota (nano_cpus) still bounds the pool from above.
CPU_SHARES = 2
# The kernel's OOM killer, when the member's whole machine runs out of memory (not a container's
# own limit, whose OOM kills only inside it), kills the process of the highest score: without an
# adjustment a container's process and the member's own (a browser, an editor holding unsaved
# work) stand alike, by size alone. At the most, every process of a container goes before any of
# the member's, as the pool yields the CPU to the owner (CPU_SHARES). No process in the
# container may lower it again: the engine's write (with CAP_SYS_RESOURCE) is the kernel's floor
# for the container's processes (oom_score_adj_min), and going below it needs that capability,
# dropped. (An engine without the capability leaves the floor its own parent's, 0 at most.)
OOM_SCORE_ADJ = 1000
# What a container may read of the kernel's files. Its root is the machine's root (no user
# namespace), so every file of /proc and /sys that the kernel keeps for the machine's root alone
# (mode 0400) is open to it, capabilities or not; and the container's /sys is the machine's own.
# The engine masks a few such paths (an empty file or directory over them); naming masked paths
# replaces its list, so the list of the newest engine (moby's oci.DefaultSpec) is repeated here
# and the rest added, each for the reason given. A path the machine has not got is left alone.
ENGINE_MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)  # fmt: skip
#: What every engine since Docker 18 has masked: a container made before hostd named its own
#: list (adopted after an upgrade) shows these, and is kept.
OLDER_ENGINE_MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
)  # fmt: skip
#: Masked besides the engine's: path -> why.
MASKED_PATHS: dict[str, str] = {
    **dict.fromkeys(
        ("/proc/kpageflags", "/proc/kpagecount", "/proc/kpagecgroup"),
        "the flags and use counts of every physical page of the machine (root's alone): what "
        "rowhammer and page-cache attacks look for",
    ),
    **dict.fromkeys(
        ("/proc/slabinfo", "/proc/vmallocinfo", "/proc/pagetypeinfo"),
        "the layout of the kernel's own memory (root's alone): what a kernel exploit grooms",
    ),
    **dict.fromkeys(
        ("/proc/interrupts", "/proc/softirqs", "/sys/kernel/irq"),
        "interrupt counts of each device, the member's keyboard and touchpad among them: "
        "the timing of the member's keystrokes",
    ),
    "/proc/irq": "a directory for each interrupt, named after its device's driver (the member's "
    "Wi-Fi card, graphics card, keyboard controller), with its count (spurious): what "
    "/proc/interrupts is masked for, the engine only making it read-only",
    "/sys/devices/virtual/dmi": "the machine's serial numbers and UUID (root's alone), its "
    "maker and model: an identity of the member's machine (/sys/class/dmi/id leads here)",
    "/proc/cmdline": "the kernel's command line: the UUIDs of the machine's root file system "
    "and encrypted disk (root=UUID=..., cryptdevice=UUID=...), an identity of the machine",
    "/sys/devices/virtual/block": "the machine's loop and device-mapper disks: the file behind "
    "each loop device (the member's snaps, disk images) and the UUID of each encrypted volume",
    "/sys/devices/virtual/powercap": "the CPU's energy counters (root's alone): a side channel "
    "to the member's computations (PLATYPUS, CVE-2020-8694)",
}
#: The machine's hardware in /sys/devices (buses, disks with their serial numbers, batteries,
#: sensors), masked on every engine under the names it usually has; a local engine's machine
#: adds its own (`hardware_paths`). /sys/devices/system (CPUs, memory, NUMA nodes, which
#: programs size themselves by) and /sys/devices/virtual (the container's own network
#: interfaces) stay.
HARDWARE_PATHS = (
    "/sys/devices/pci0000:00", "/sys/devices/platform", "/sys/devices/pnp0",
    "/sys/devices/LNXSYSTM:00", "/sys/devices/isa", "/sys/devices/soc0",
)  # fmt: skip
#: What /sys/devices holds that no hardware of the machine is in (`hardware_paths`).
NOT_HARDWARE = frozenset({"system", "virtual"})
#: What the engine makes read-only by default, and must still (`limit_mismatches`).
ENGINE_READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def hardware_paths(devices: list[str]) -> tuple[str, ...]:
    """HARDWARE_PATHS and, of `devices` (the names in the machine's /sys/devices), every one
    that may be hardware, as paths to mask."""
    found = (f"/sys/devices/{name}" for name in devices if name not in NOT_HARDWARE and "/" not in name)
    return tuple(sorted({*HARDWARE_PATHS, *found}))


def masked_paths(hardware: tuple[str, ...] = HARDWARE_PATHS) -> list[str]:
    """Every path a container of ours gets masked: the engine's, ours, and `hardware`."""
    return sorted({*ENGINE_MASKED_PATHS, *MASKED_PATHS, *hardware})


def _masked(got: list[str] | None) -> list[str]:
    """Of what must be masked (the engine's list and ours), what `got` masks; all of it for a
    container made before hostd named its own list (none of ours, all of what every engine
    masks), so that it keeps running."""
    wanted = {*ENGINE_MASKED_PATHS, *MASKED_PATHS}
    masked = set(got or [])
    only_ours = set(MASKED_PATHS) - set(ENGINE_MASKED_PATHS)
    if not masked & only_ours and masked >= set(OLDER_ENGINE_MASKED_PATHS):
        return sorted(wanted)
    return sorted(wanted & masked)


# The engine refuses memory limits below 6 MiB.
MIN_MEMORY_BYTES = 6 * 1024 * 1024
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")


def log_file_bytes(disk_bytes: int) -> int:
    """The most each of the LOG_FILES log files of a container of `disk_bytes` holds."""
    return max(1, min(LOG_MOST_BYTES, disk_bytes // LOG_SHARE) // LOG_FILES)


def log_bytes(disk_bytes: int) -> int:
    """The most the log of a container of `disk_bytes` takes of it: its LOG_FILES files."""
    return log_file_bytes(disk_bytes) * LOG_FILES


def writable_bytes(disk_bytes: int) -> int:
    """What the files of a container of `disk_bytes` may take: all of it but its log's part."""
    return disk_bytes - log_bytes(disk_bytes)


def log_beside_disk(inspect: Mapping[str, Any]) -> bool:
    """Whether a container has the log of one made before the log counted against its disk (an
    older hostd's: 10 MB files beside the bound), from its inspect."""
    log = (inspect.get("HostConfig") or {}).get("LogConfig") or {}
    return log.get("Config") == LEGACY_LOG


def files_bound(spec: "ContainerSpec", *, log_beside: bool) -> tuple[int, int]:
    """What the container's files may take, and the part of its disk its log has besides: all of
    the disk for a container whose log is beside it (`log_beside_disk`), else `writable_bytes`."""
    return (spec.disk_bytes, 0) if log_beside else (spec.writable_bytes, spec.log_bytes)


@dataclass(frozen=True)
class ContainerSpec:
    """What one allocation gets on this host; the labels keep it for a restarted hostd."""

    allocation_id: str
    host_id: str
    image: str
    cpus: float
    memory_bytes: int
    disk_bytes: int
    pids_limit: int
    command: list[str] | None = None
    # Users' environment values are secrets: kept out of repr, so out of logs and errors.
    env: dict[str, str] = field(default_factory=dict, repr=False)
    network: bool = False

    def __post_init__(self) -> None:
        if not _ID.match(self.allocation_id):
            raise ValueError(f"allocation_id {self.allocation_id!r} is not a valid container name")
        if not self.host_id:
            raise ValueError("host_id must not be empty")
        if not self.cpus >= MIN_CPUS:
            # Below Docker's floor the quota reads back as 0, which Docker takes as no limit.
            raise ValueError(
                f"cpus must be at least {MIN_CPUS} (less would run without a CPU limit), not {self.cpus}"
            )
        if self.memory_bytes < MIN_MEMORY_BYTES:
            raise ValueError(f"memory_bytes must be at least {MIN_MEMORY_BYTES}")
        if self.disk_bytes <= 0:
            raise ValueError(f"disk_bytes must be positive, not {self.disk_bytes}")
        if self.pids_limit < 1:
            raise ValueError(f"pids_limit must be at least 1, not {self.pids_limit}")

    @property
    def container_name(self) -> str:
        return NAME_PREFIX + self.allocation_id

    @property
    def log_file_bytes(self) -> int:
        """The most each of the container's LOG_FILES log files holds."""
        return log_file_bytes(self.disk_bytes)

    @property
    def log_bytes(self) -> int:
        """The most the container's log takes of its disk."""
        return log_bytes(self.disk_bytes)

    @property
    def writable_bytes(self) -> int:
        """What the container's files may take of its disk: all of it but its log's."""
        return writable_bytes(self.disk_bytes)

    @property
    def log_config(self) -> dict[str, str]:
        """The engine's json-file options that hold the log to its part of the disk."""
        return {"max-size": str(self.log_file_bytes), "max-file": str(LOG_FILES)}

    @property
    def nano_cpus(self) -> int:
        return round(self.cpus * 1e9)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "ContainerSpec":
        return cls(**json.loads(text))

    def differences(self, other: "ContainerSpec | None") -> list[str]:
        """Names of the fields in which `other` differs; names only, never values (env)."""
        if other is None:
            return ["(unreadable)"]
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]


def network_name(spec: ContainerSpec) -> str:
    """The bridge network of the allocation's own, when it may have one."""
    return spec.container_name


def _network_mode(spec: ContainerSpec) -> str:
    # Never "bridge", the engine's default network shared by every container on it.
    return network_name(spec) if spec.network else "none"


def network_kwargs(spec: ContainerSpec, *, internal: bool) -> dict[str, Any]:
    """Arguments for docker-py's `networks.create`: a bridge for this one container.
    `internal`: no route out, whatever the engine's firewall does (see `_bridge_options`)."""
    return {
        "name": network_name(spec),
        "driver": "bridge",
        "internal": internal,
        "options": _bridge_options(internal=internal),
        "labels": {
            LABEL_ALLOCATION: spec.allocation_id,
            LABEL_HOST: spec.host_id,
            LABEL_MANAGED: "1",
            LABEL_NETWORK: "1",
        },
        "check_duplicate": True,
    }


#: The name server of a container without a network: its own loopback, where nothing answers,
#: so a lookup fails at once (see `_dns`).
NO_NETWORK_DNS = "127.0.0.1"
#: The engine's word for "no search domain".
NO_SEARCH_DOMAIN = "."


def _dns(spec: ContainerSpec) -> dict[str, Any]:
    """docker-py's dns arguments. Left to itself the engine copies the machine's resolv.conf into
    each container: the member's name servers (a home router, an employer's resolvers, a VPN's)
    and search domains (an employer's name), to a container that has no network to use them
    with, and the search domains to one whose lookups the engine's resolver forwards anyway."""
    dns: dict[str, Any] = {"dns_search": [NO_SEARCH_DOMAIN]}
    if not spec.network:
        dns["dns"] = [NO_NETWORK_DNS]
    return dns


def _bridge_options(*, internal: bool) -> dict[str, str]:
    # One container per network; should one more join, it still may not talk to it.
    options = {"com.docker.network.bridge.enable_icc": "false"}
    if internal:
        # Docker makes a network internal with firewall rules only: the container still gets
        # a default route via the bridge's address, and an engine without iptables forwards
        # from there into every other bridge. With no address on the bridge that route
        # leads nowhere: the container reaches its own address and nothing else.
        options["com.docker.network.bridge.inhibit_ipv4"] = "true"
    return options


def network_mismatches(
    spec: ContainerSpec, network: dict[str, Any], *, internal: bool
) -> list[tuple[str, Any, Any]]:
    """(field, wanted, got) for what a network's inspect shows against what the allocation needs."""
    labels = network.get("Labels") or {}
    options = network.get("Options") or {}
    checks: list[tuple[str, Any, Any]] = [
        ("Network.Driver", "bridge", network.get("Driver")),
        ("Network.Internal", internal, bool(network.get("Internal"))),
        ("Network.Labels.allocation", spec.allocation_id, labels.get(LABEL_ALLOCATION)),
        ("Network.Labels.host", spec.host_id, labels.get(LABEL_HOST)),
    ]
    checks += [
        (f"Network.Options.{k}", v, options.get(k)) for k, v in _bridge_options(internal=internal).items()
    ]
    return [(name, wanted, got) for name, wanted, got in checks if wanted != got]


def ulimits(core: int = CORE) -> list[dict[str, Any]]:
    return [
        {"Name": "nofile", "Soft": NOFILE_SOFT, "Hard": NOFILE_HARD},
        {"Name": "nproc", "Soft": NPROC, "Hard": NPROC},
        {"Name": "core", "Soft": core, "Hard": core},
        {"Name": "sigpending", "Soft": SIGPENDING, "Hard": SIGPENDING},
        {"Name": "msgqueue", "Soft": MSGQUEUE, "Hard": MSGQUEUE},
        {"Name": "memlock", "Soft": MEMLOCK, "Hard": MEMLOCK},
    ]


def _wanted_ulimits(got: list[dict[str, Any]] | None) -> list[tuple[str, int, int]]:
    """The limits a container must show: ours, or, for one an older hostd made, those with the
    core limit it had then (kept to its end; its core files were stopped as well)."""
    legacy = _ulimit_set(ulimits(core=LEGACY_CORE))
    return legacy if _ulimit_set(got) == legacy else _ulimit_set(ulimits())


def image_refusals(image_inspect: dict[str, Any]) -> list[tuple[str, Any, Any, str]]:
    """(field, wanted, got, what the image's author does about it) for what an image would
    bring that no container of ours may have, read before any container is made from it."""
    config = image_inspect.get("Config") or {}
    refusals: list[tuple[str, Any, Any, str]] = []
    volumes = config.get("Volumes")
    if volumes:
        # A VOLUME line makes an anonymous volume outside the writable layer and its disk bound.
        declared = ", ".join(sorted(volumes))
        refusals.append(
            (
                "Image.Config.Volumes",
                {},
                volumes,
                f"declares VOLUME {declared}, whose files would lie outside the container's disk "
                "bound: rebuild the image without VOLUME lines (a plain directory holds the same files)",
            )
        )
    workdir = config.get("WorkingDir") or ""
    if _kernel_directory(workdir):
        # runc before 1.1.12 (CVE-2024-21626) set a container's working directory before it
        # closed a descriptor of the machine's own cgroup directory: `WORKDIR /proc/self/fd/N`
        # started the command with a directory of the member's machine as its own. No image
        # has a reason to start in the kernel's file systems, patched runtime or not.
        refusals.append(
            (
                "Image.Config.WorkingDir",
                "",
                workdir,
                f"starts in {workdir} (WORKDIR), one of the kernel's own file systems (/proc, /sys, "
                "/dev), through which a container could reach the member's machine: rebuild the "
                "image with a WORKDIR of its own files",
            )
        )
    # The engine merges an image's labels into its containers': one in our namespace would
    # speak for hostd (whose container it is, its bounds) wherever hostd did not set it.
    # Named, never shown: a value is the image's business (and may copy another's spec).
    ours = sorted(k for k in config.get("Labels") or {} if k.startswith(LABEL_NAMESPACE))
    if ours:
        refusals.append(
            (
                "Image.Config.Labels",
                [],
                ours,
                f"carries the label{'s' if len(ours) > 1 else ''} {', '.join(ours)} of Potluck's "
                f"own namespace ({LABEL_NAMESPACE}*), which only hostd sets on its containers: "
                "rebuild the image without them (no LABEL line of that namespace, FROM a base "
                "image that has none: a label inherited from a base image cannot be removed)",
            )
        )
    return refusals


#: The kernel's file systems in every container: no image may start in them (`image_refusals`).
KERNEL_DIRECTORIES = ("proc", "sys", "dev")


def _kernel_directory(path: str) -> bool:
    """Whether `path`, as the engine resolves a WORKDIR (from /, `..` taken), lies in one of
    KERNEL_DIRECTORIES."""
    parts = posixpath.normpath(posixpath.join("/", path)).split("/")
    return len(parts) > 1 and parts[1] in KERNEL_DIRECTORIES


def own_labels(values: dict[str, str]) -> dict[str, str]:
    """The labels of a container hostd creates: `values`, and every other of CONTAINER_LABELS
    set empty, so that none of them can show an image's value (the engine's merge fills a key
    the create call leaves out from the image)."""
    unknown = values.keys() - set(CONTAINER_LABELS)
    if unknown:
        raise ValueError(f"not a container label of ours: {sorted(unknown)}")
    return {key: values.get(key, "") for key in CONTAINER_LABELS}


def labels(spec: ContainerSpec) -> dict[str, str]:
    return own_labels(
        {
            LABEL_ALLOCATION: spec.allocation_id,
            LABEL_HOST: spec.host_id,
            LABEL_MANAGED: "1",
            LABEL_SPEC: spec.to_json(),
        }
    )


def allocation_of(name: str) -> str:
    """The allocation whose container this is, by the container's name (`potluck-<allocation>`,
    with or without the engine's leading "/"); "" for any other name (a warm container not
    taken, anything not ours). The name is the create call's or a rename's, never an image's:
    what a container is for is read from it, not from a label."""
    name = name.removeprefix("/")
    if not name.startswith(NAME_PREFIX):
        return ""
    alloc_id = name.removeprefix(NAME_PREFIX)
    return alloc_id if _ID.match(alloc_id) else ""


def spec_of(inspect: dict[str, Any]) -> ContainerSpec | None:
    """The spec a container of ours was created with, from its spec label; None when it has
    none (a warm container, taken or not) or one that names another allocation or host than
    the container's own name and host label say: an image's, on a container made before
    hostd set every label itself. What it is used for grants nothing (run() checks that a
    container found is of the same spec, and reads the limits back from the engine); whose
    the container is and its bounds never come from it."""
    labels = (inspect.get("Config") or {}).get("Labels") or {}
    try:
        spec = ContainerSpec.from_json(labels.get(LABEL_SPEC, ""))
    except (ValueError, TypeError):
        return None
    owner = allocation_of(str(inspect.get("Name") or ""))
    if spec.allocation_id != owner or spec.host_id != labels.get(LABEL_HOST):
        return None
    return spec


def own_network(inspect: dict[str, Any]) -> str | None:
    """The network made for this container alone (`network_kwargs`), if it has one: its network
    mode, when that is named after the container itself, as hostd names an allocation's own
    network. Read from what the create call set (name, network mode), never from a label."""
    name = str(inspect.get("Name") or "").removeprefix("/")
    mode = (inspect.get("HostConfig") or {}).get("NetworkMode")
    return name if allocation_of(name) and mode == name else None


#: The helper directory's tmpfs: read-only, so a page is room enough (it holds a mount point).
HELPER_DIR_BYTES = 4096
HELPER_DIR_MODE = 0o755


def helper_mounts(helper: str) -> list[dict[str, Any]]:
    """This machine's static busybox (`helper`) at HELPER_PATH, read-only, in a directory that
    is itself a read-only mount (helper.py: a mount point cannot be renamed away and replaced).
    The engine orders mounts by depth; runc makes the bind's mount point in the tmpfs before
    it makes the tmpfs read-only."""
    return [
        {
            "Type": "tmpfs",
            "Target": HELPER_DIR,
            "ReadOnly": True,
            "TmpfsOptions": {"SizeBytes": HELPER_DIR_BYTES, "Mode": HELPER_DIR_MODE},
        },
        _helper_bind(helper),
    ]


def _helper_bind(helper: str) -> dict[str, Any]:
    # Alone, this was a container's one mount before the helper's directory was a mount too.
    return {"Type": "bind", "Source": helper, "Target": HELPER_PATH, "ReadOnly": True}


def _mount_facts(mounts: list[dict[str, Any]] | None) -> list[tuple[Any, ...]]:
    """What a mount list says, whichever of inspect's two spellings it uses (HostConfig.Mounts
    has Target and ReadOnly, the top-level Mounts Destination and RW; a tmpfs has no Source in
    the first and an empty one in the second)."""
    facts = []
    for m in mounts or []:
        read_only = bool(m["ReadOnly"]) if "ReadOnly" in m else not m.get("RW", True)
        target = m.get("Target") or m.get("Destination")
        facts.append((m.get("Type"), m.get("Source") or "", target, read_only))
    return sorted(facts, key=repr)


def create_kwargs(
    spec: ContainerSpec,
    *,
    disk_quota: bool,
    helper: str | None = None,
    cgroup_parent: str | None = None,
    hardware: tuple[str, ...] = HARDWARE_PATHS,
    hosts_file: str | None = None,
) -> dict[str, Any]:
    """Arguments for docker-py's `containers.create`, limits and hardening included, and
    `masked_paths`, which docker-py does not take (docker_driver.create_container puts it in
    the host config).

    `hardware`: the paths of the machine's hardware in /sys to mask (`hardware_paths`).

    `cgroup_parent`: the pool's own parent group (pool_weight.py), which hostd gives the
    lowest CPU weight, so that the pool as a whole yields to the owner's processes.

    `helper`: this machine's static busybox (helper.py), mounted read-only; an allocation
    without a command then runs KEEP_ALIVE instead of the image's CMD (and ENTRYPOINT):
    it is interactive, up until released or expired, whatever the image would run.

    `hosts_file`: hostd's /etc/hosts for containers without a network (no_network.py), on the
    engine's machine; given, such a container is made without the engine's network code."""
    kwargs: dict[str, Any] = {
        # By its whole reference: an engine reads a bare `3f2a` as the start of an image id.
        "image": engine_name(spec.image),
        "command": spec.command,
        "name": spec.container_name,
        "environment": dict(spec.env),
        "labels": labels(spec),
        "detach": True,
        # docker-init as PID 1 reaps zombies and forwards signals.
        "init": True,
        "nano_cpus": spec.nano_cpus,
        "cpu_shares": CPU_SHARES,
        # Memory equal to memory-plus-swap: no swap beyond the limit.
        "mem_limit": spec.memory_bytes,
        "memswap_limit": spec.memory_bytes,
        "pids_limit": spec.pids_limit,
        "oom_score_adj": OOM_SCORE_ADJ,
        "ulimits": ulimits(),
        "cap_drop": ["ALL"],
        "cap_add": list(CAPABILITIES),
        # Potluck's own seccomp profile (seccomp_profile.py), not the engine's default, which
        # is whatever the member's engine version blocks.
        "security_opt": security_options(),
        "privileged": False,
        # An image's EXPOSE lines publish nothing unless asked to: never on the member's interfaces.
        "publish_all_ports": False,
        "network_mode": _network_mode(spec),
        **_dns(spec),
        "cgroupns": "private",
        "ipc_mode": "private",
        "read_only": False,
        "log_config": {"type": "json-file", "config": spec.log_config},
        "restart_policy": {"Name": "no"},
        # An image's HEALTHCHECK is run by the engine, whose own work (an exec each interval,
        # down to a millisecond) is outside the container's CPU quota and the pool's cgroup.
        "healthcheck": {"test": list(NO_HEALTHCHECK)},
        "masked_paths": masked_paths(hardware),
    }
    if cgroup_parent is not None:
        kwargs["cgroup_parent"] = cgroup_parent
    if disk_quota:
        kwargs["storage_opt"] = {"size": str(spec.writable_bytes)}
    if helper is not None:
        kwargs["mounts"] = helper_mounts(helper)
        if spec.command is None:
            kwargs["entrypoint"] = list(KEEP_ALIVE)
    if hosts_file is not None and not spec.network:
        kwargs["network_disabled"] = True
        kwargs["mounts"] = [*kwargs.get("mounts", []), hosts_mount(hosts_file)]
    return kwargs


def security_options() -> list[str]:
    """The create call's security options: no new privileges, and Potluck's seccomp profile."""
    return ["no-new-privileges", SECCOMP + SECCOMP_PROFILE]


#: How a seccomp profile is named among the security options (the engine's own spelling).
SECCOMP = "seccomp="


def _seccomp(security: list[str]) -> Any:
    """The profile the container runs with: ours, as it is in inspect; for a container made
    before hostd named one (adopted after an upgrade: the engine's default, its options naming
    none), ours too, so that it keeps running; any other one as it is."""
    named = [o.removeprefix(SECCOMP) for o in security if o.startswith(SECCOMP)]
    if not named:
        return SECCOMP_PROFILE
    return named[0] if len(named) == 1 else named


def _healthcheck(inspect: dict[str, Any]) -> Any:
    """The health check the engine runs, as NO_HEALTHCHECK when it runs none: a container made
    before hostd turned images' checks off (adopted after an upgrade) has no entry when its
    image had no check either."""
    test = ((inspect.get("Config") or {}).get("Healthcheck") or {}).get("Test")
    return test or list(NO_HEALTHCHECK)


def _bounded_quota(spec: ContainerSpec, got: Any) -> Any:
    """The spec's quota when `got` is a real quota no larger (0 or None is no limit at all)."""
    if isinstance(got, int) and round(MIN_CPUS * 1e9) <= got <= spec.nano_cpus:
        return spec.nano_cpus
    return got


def _oom_score_adj(got: Any) -> Any:
    """OOM_SCORE_ADJ for a container made before hostd set it (0, the engine's default: as
    likely as the member's processes to be killed, never more shielded), so that an upgraded
    hostd keeps the allocations running on it; anything else as it is, a negative score (which
    would shield the container at the member's expense) first of all."""
    return OOM_SCORE_ADJ if got in (0, None) else got


def _ulimit_set(values: list[dict[str, Any]] | None) -> list[tuple[str, int, int]]:
    return sorted((str(u.get("Name")), int(u.get("Soft", -1)), int(u.get("Hard", -1))) for u in values or [])


def _caps(values: list[str] | None) -> list[str]:
    return sorted(v.upper().removeprefix("CAP_") for v in values or [])


def limit_mismatches(
    spec: ContainerSpec,
    inspect: dict[str, Any],
    *,
    disk_quota: bool,
    helper: str | None = None,
    hosts_file: str | None = None,
) -> list[tuple[str, Any, Any]]:
    """(field, wanted, got) for each limit or security setting `inspect` does not show;
    `helper` and `hosts_file` as given to create_kwargs (their read-only mounts are the only
    ones allowed; the second only in a container made without the engine's network code)."""
    host = inspect.get("HostConfig") or {}
    helper_facts = _mount_facts(helper_mounts(helper) if helper is not None else [])
    # A container made before the helper's directory was a mount (an upgraded hostd adopting
    # it) has the bind alone: kept to its end, as it ran before; every new one gets both.
    older_facts = _mount_facts([_helper_bind(helper)] if helper is not None else [])
    # Only a container made without the engine's network code has hostd's hosts file (one made
    # with it, or before, has the engine's own, which inspect does not list among the mounts).
    network_disabled = bool((inspect.get("Config") or {}).get("NetworkDisabled"))
    hosts = _mount_facts([hosts_mount(hosts_file)] if hosts_file is not None and network_disabled else [])
    got_host = [m for m in _mount_facts(host.get("Mounts")) if m not in hosts]
    got_top = [m for m in _mount_facts(inspect.get("Mounts")) if m not in hosts]
    # A container made before the helper existed (an upgraded hostd adopting it) has no mount
    # at all: fewer than allowed, so it is kept (without the helper's keep-alive or SFTP).
    with_helper = bool(helper_facts) and got_host in (helper_facts, older_facts)
    mounts = got_host if with_helper else helper_facts if got_host or got_top else []
    keep_alive = KEEP_ALIVE if with_helper and spec.command is None else None
    log = host.get("LogConfig") or {}
    security = host.get("SecurityOpt") or []
    checks: list[tuple[str, Any, Any]] = [
        # The owner policy may have lowered the quota of a running container (never raised
        # it): any quota from the engine's least up to the spec's bounds the work.
        ("NanoCpus", spec.nano_cpus, _bounded_quota(spec, host.get("NanoCpus"))),
        ("CpuShares", CPU_SHARES, host.get("CpuShares")),
        ("Memory", spec.memory_bytes, host.get("Memory")),
        ("MemorySwap", spec.memory_bytes, host.get("MemorySwap")),
        ("PidsLimit", spec.pids_limit, host.get("PidsLimit")),
        ("Ulimits", _wanted_ulimits(host.get("Ulimits")), _ulimit_set(host.get("Ulimits"))),
        ("OomKillDisable", False, bool(host.get("OomKillDisable"))),
        ("OomScoreAdj", OOM_SCORE_ADJ, _oom_score_adj(host.get("OomScoreAdj"))),
        ("CapDrop", ["ALL"], _caps(host.get("CapDrop"))),
        ("CapAdd", sorted(CAPABILITIES), _caps(host.get("CapAdd"))),
        ("SecurityOpt.no-new-privileges", True,
         any(o in ("no-new-privileges", "no-new-privileges:true") for o in security)),
        ("SecurityOpt.unconfined", [], [o for o in security if "unconfined" in o]),
        ("SecurityOpt.seccomp", SECCOMP_PROFILE, _seccomp(security)),
        ("Privileged", False, host.get("Privileged")),
        ("MaskedPaths", sorted({*ENGINE_MASKED_PATHS, *MASKED_PATHS}), _masked(host.get("MaskedPaths"))),
        ("ReadonlyPaths", sorted(ENGINE_READONLY_PATHS),
         sorted(set(ENGINE_READONLY_PATHS) & set(host.get("ReadonlyPaths") or []))),
        ("NetworkMode", _network_mode(spec), host.get("NetworkMode")),
        # A published port listens on the member's interfaces, outside any network of ours.
        ("PublishAllPorts", False, bool(host.get("PublishAllPorts"))),
        ("PortBindings", {}, host.get("PortBindings") or {}),
        ("Binds", [], host.get("Binds") or []),
        # Top-level Mounts also lists the anonymous volumes of an image's VOLUME lines:
        # they live outside the writable layer and its disk bound, so they are refused too.
        ("HostConfig.Mounts", mounts, got_host),
        ("Mounts", mounts, got_top),
        ("VolumesFrom", [], host.get("VolumesFrom") or []),
        ("Devices", [], host.get("Devices") or []),
        ("DeviceCgroupRules", [], host.get("DeviceCgroupRules") or []),
        ("DeviceRequests", [], host.get("DeviceRequests") or []),
        ("PidMode", "", host.get("PidMode")),
        ("IpcMode", "private", host.get("IpcMode")),
        ("UTSMode", "", host.get("UTSMode")),
        ("UsernsMode", "", host.get("UsernsMode")),
        ("CgroupnsMode", "private", host.get("CgroupnsMode")),
        ("Init", True, host.get("Init")),
        ("Config.Healthcheck", list(NO_HEALTHCHECK), _healthcheck(inspect)),
        ("Config.Entrypoint", keep_alive,
         (inspect.get("Config") or {}).get("Entrypoint") if keep_alive is not None else None),
        ("LogConfig.Type", "json-file", log.get("Type")),
    ]  # fmt: skip
    # A container made before its log counted against its disk (an upgraded hostd adopting it)
    # has the log and the quota it ran with: kept to its end, both as bounded as they were.
    size = (host.get("StorageOpt") or {}).get("size") if disk_quota else None
    legacy = log_beside_disk(inspect) and size in (None, str(spec.disk_bytes))
    wanted_log = LEGACY_LOG if legacy else spec.log_config
    for option in ("max-size", "max-file"):
        checks.append((f"LogConfig.{option}", wanted_log[option], (log.get("Config") or {}).get(option)))
    if disk_quota:
        checks.append(("StorageOpt.size", str(spec.disk_bytes if legacy else spec.writable_bytes), size))
    return [(name, wanted, got) for name, wanted, got in checks if wanted != got]
