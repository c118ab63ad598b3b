"""The Docker engine, as hostd sees it, through the docker SDK (docker_sdk.py imports it).

Synchronous on purpose: callers run each method with `asyncio.to_thread`, and
`events()` in a thread of its own. Every docker SDK or requests failure leaves
this module as a `DockerDriverError`:

    DockerDriverError          anything the engine refused or failed to do
    +-- EngineUnavailable      no engine answers at the URL (down, socket missing, hung)
    +-- ImageNotAvailable      the image is not on the engine and was not pulled
    +-- ContainerNotFound      no container with that id or name
    +-- LimitsNotApplied       a limit or security setting would not, or did not, take effect
        +-- ImageRefused       the image brings what no container of ours may have (read first)

What a container gets is decided in `container_config` (pure, unit-tested);
here it is created, read back and verified, and only then started: the image
is read before anything is made from it (a VOLUME line would escape the disk
bound, a label of Potluck's namespace would show in the container's labels), the engine
must apply its seccomp profile, and the created container's inspect must show every
limit, so nothing of the allocation's runs unbounded.

Whose a container is, is read from its name (`container_config.allocation_of`), which only
a create call or a rename sets; its spec only from a spec label that agrees with that name
(`spec_of`), its own network from its network mode (`own_network`): never from a label an
image could have supplied. Containers of an older hostd are named alike, so still known.
"""

import base64
import contextlib
import json
import os
import signal
import socket
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import structlog

from potluck.contracts.engine import EngineFacts, user_namespaces
from potluck.contracts.image_reference import InvalidReference, engine_name
from potluck.hostd import pause_races
from potluck.hostd.container_config import (
    LABEL_HOST,
    LABEL_MANAGED,
    ContainerSpec,
    allocation_of,
    create_kwargs,
    hardware_paths,
    image_refusals,
    limit_mismatches,
    network_kwargs,
    network_mismatches,
    network_name,
    own_labels,
    own_network,
    spec_of,
)
from potluck.hostd.disk_bound import OUTSIDE_LAYER_FILES
from potluck.hostd.docker_sdk import docker, requests
from potluck.hostd.held_files import container_held_bytes
from potluck.hostd.helper import KEEP_ALIVE, find_helper
from potluck.hostd.no_network import hosts_mount, shares_machine_namespace
from potluck.hostd.pool_weight import cgroup_parent, lower_parent_weight

__all__ = [
    "LAYER_QUOTA_DRIVER", "STOP_SIGNALS", "ContainerNotFound", "ContainerSpec", "ContainerUsage",
    "DockerDriver", "DockerDriverError", "EngineFacts", "EngineMachine", "EngineUnavailable",
    "EventStream", "ExecResult", "ImageNotAvailable", "ImageRefused", "LimitsNotApplied",
    "ManagedContainer", "create_container",
]  # fmt: skip

#: `kill`: the engine was told to signal a container (`docker stop` or `kill`, or the engine's
#: own shutdown), which a `die` alone does not tell apart from a command that ended on its own.
WATCHED_EVENTS = ("start", "kill", "die", "oom")
#: What opens each entry of the engine's list of a container's changes (layer_entries).
_CHANGE = b'"Kind":'
#: Where inspect names the engine's own file behind each of OUTSIDE_LAYER_FILES.
_ENGINE_FILES = {
    "/etc/hosts": "HostsPath",
    "/etc/hostname": "HostnamePath",
    "/etc/resolv.conf": "ResolvConfPath",
}
#: The signals of a stop (`docker stop`: the image's stop signal, SIGTERM unless it names
#: another, then SIGKILL past its timeout), as numbers, as a `kill` event carries them.
STOP_SIGNALS = frozenset({int(signal.SIGTERM), int(signal.SIGKILL)})
#: The one storage driver whose `storage_opt` size bounds what a container writes and nothing
#: else (on xfs with pquota; the engine refuses it elsewhere, which the probe finds out).
LAYER_QUOTA_DRIVER = "overlay2"
#: Where this machine's kernel lists its devices (container_config.hardware_paths).
SYS_DEVICES = Path("/sys/devices")
#: Image events, and the container events that start or end an image's use.
IMAGE_EVENTS = ("pull", "tag", "untag", "delete", "import", "load", "create", "destroy")

log = structlog.get_logger(__name__)


def _connect_closing_on_error(self: Any) -> None:
    # docker-py leaves the socket open when connect() fails (an engine that is down),
    # which warns later as an unclosed socket; docker/docker-py#3356, not yet released.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(self.timeout)
        sock.connect(self.unix_socket)
    except BaseException:
        sock.close()
        raise
    self.sock = sock


setattr(docker.transport.unixconn.UnixHTTPConnection, "connect", _connect_closing_on_error)  # noqa: B010


class DockerDriverError(Exception):
    """The engine refused or failed; the message says what was tried."""


class EngineUnavailable(DockerDriverError):
    pass


class ImageNotAvailable(DockerDriverError):
    pass


class ContainerNotFound(DockerDriverError):
    pass


class LimitsNotApplied(DockerDriverError):
    def __init__(
        self, field: str, wanted: Any, got: Any, *, container_id: str = "", before: str = "", why: str = ""
    ) -> None:
        """`before`: refused before any container was made (what was read), else after creating
        one; `why`: what `before` does that it must not, and what to do about it."""
        if before and why:
            message = f"{before} {why}; no container was made ({field}: wanted {wanted!r}, got {got!r})"
        elif before:
            message = f"{field}: wanted {wanted!r}, {before} has {got!r}; no container was made"
        else:
            message = (
                f"{field} did not take effect on container {container_id[:12] or '?'}: "
                f"wanted {wanted!r}, the engine reports {got!r}; the container was removed"
            )
        super().__init__(message)
        self.field, self.wanted, self.got, self.container_id = field, wanted, got, container_id


class ImageRefused(LimitsNotApplied):
    """Refused from the image's own inspect, before anything was made from it: every container
    of the image would be refused alike, so its shape is not worth making ahead either."""


@dataclass(frozen=True)
class EngineMachine:
    """The machine a Docker engine runs on, as its `docker info` says (NCPU, MemTotal), and the
    size of the file system that holds its data-root (DockerRootDir) when that is on this
    machine (None otherwise: an engine reached by tcp:// or ssh://, or in a VM)."""

    cpus: int
    memory_bytes: int
    disk_bytes: int | None = None


@dataclass(frozen=True)
class ManagedContainer:
    container_id: str
    allocation_id: str
    status: str
    running: bool
    exit_code: int | None
    oom_killed: bool
    started_at: datetime | None
    finished_at: datetime | None
    spec: ContainerSpec | None = None
    #: It runs hostd's keep-alive (an interactive allocation's, helper.py), not a command.
    keeps_alive: bool = False


@dataclass(frozen=True)
class ContainerUsage:
    cpu_total_ns: int
    memory_bytes: int
    memory_limit_bytes: int
    pids: int


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    output: bytes


def _engine_failed(exc: BaseException) -> bool:
    """A 5xx: the engine (runc's freezer) failed the call, not refused it."""
    return isinstance(exc, docker.errors.APIError) and bool(exc.is_server_error())


def create_container(client: docker.DockerClient, kwargs: dict[str, Any]) -> Any:
    """docker-py's `containers.create(**kwargs)`, and the host config's MaskedPaths from
    kwargs' `masked_paths`: docker-py's create() takes no such argument, so its own split of
    the arguments into the create call's and the host config's is used, then the call made."""
    api: Any = client.api
    args = dict(kwargs)
    masked = args.pop("masked_paths")
    args["version"] = api._version
    split: Any = docker.models.containers._create_container_args  # type: ignore[attr-defined]
    create_args = split(args)
    create_args["host_config"]["MaskedPaths"] = list(masked)
    created = api.create_container(**create_args)
    return client.containers.get(created["Id"])


class StdinWriter:
    """What `docker attach --stdin` gives: docker-py's file object on the upgraded connection,
    and under it the socket that carries stdin. Both are closed together (the socket's file
    descriptor stays open while the file object does)."""

    def __init__(self, attached: Any) -> None:
        self._attached = attached
        self._socket: socket.socket = attached._sock if hasattr(attached, "_sock") else attached

    def write_all(self, data: bytes) -> None:
        self._socket.sendall(data)

    def close(self) -> None:
        self._socket.close()
        self._attached.close()


def _refused_as_paused(exc: BaseException) -> bool:
    return (
        isinstance(exc, docker.errors.APIError)
        and exc.status_code == 409
        and pause_races.says_paused(str(exc.explanation))
    )


def _time(value: str | None) -> datetime | None:
    if not value or value.startswith("0001-01-01"):
        return None
    return datetime.fromisoformat(value)


def _managed(attrs: dict[str, Any]) -> ManagedContainer:
    state = attrs.get("State") or {}
    status = state.get("Status", "unknown")
    ended = status in ("exited", "dead")
    return ManagedContainer(
        container_id=attrs["Id"],
        # By its name, never a label (an image's labels show in its containers'): a container
        # created ahead (warm_pool.py) is the allocation's it was renamed for, or nobody's.
        allocation_id=allocation_of(str(attrs.get("Name") or "")),
        status=status,
        running=bool(state.get("Running")),
        exit_code=int(state.get("ExitCode", 0)) if ended else None,
        oom_killed=bool(state.get("OOMKilled")),
        started_at=_time(state.get("StartedAt")),
        finished_at=_time(state.get("FinishedAt")) if ended else None,
        spec=spec_of(attrs),
        keeps_alive=list((attrs.get("Config") or {}).get("Entrypoint") or []) == KEEP_ALIVE,
    )


class EventStream:
    """start/kill/die/oom events of one host's containers; iterate in a thread, close from any."""

    def __init__(self, stream: Any, base_url: str, *, follows: bool) -> None:
        self._stream = stream
        self._base_url = base_url
        self._follows = follows
        self._closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            for raw in self._stream:
                action = raw.get("Action") or raw.get("status")
                if raw.get("Type") != "container" or action not in WATCHED_EVENTS:
                    continue
                attributes = (raw.get("Actor") or {}).get("Attributes") or {}
                exit_code = attributes.get("exitCode")
                signalled = attributes.get("signal")
                yield {
                    "action": action,
                    "container_id": (raw.get("Actor") or {}).get("ID") or raw.get("id"),
                    # The container's name (no label: see _managed).
                    "allocation_id": allocation_of(str(attributes.get("name") or "")),
                    "host_id": attributes.get(LABEL_HOST, ""),
                    "exit_code": int(exit_code) if exit_code is not None else None,
                    "signal": int(str(signalled)) if str(signalled).isdigit() else None,
                    "time_nano": int(raw.get("timeNano", 0)),
                }
        except (requests.RequestException, OSError) as exc:
            if not self._closed:
                raise EngineUnavailable(f"event stream from {self._base_url} broke: {exc}") from exc
            return
        # The SDK ends the stream quietly when the connection drops.
        if self._follows and not self._closed:
            raise EngineUnavailable(
                f"event stream from {self._base_url} ended: the engine stopped? "
                "Follow events again once it answers"
            )

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):  # the SDK's socket shutdown may race the reader
            self._stream.close()


class DockerDriver:
    def __init__(
        self,
        base_url: str,
        timeout: float = 30,
        *,
        internal_networks: bool = False,
        helper: str | Literal["find"] | None = "find",
        hosts_file: str | None = None,
    ) -> None:
        """`internal_networks`: an allocation's own network has no route out (hostd's
        `internal_network`). `helper`: the static busybox containers get (helper.py); "find"
        looks for one on this machine, None gives none. `hosts_file`: the /etc/hosts of
        containers without a network, on the engine's machine (no_network.py); None leaves
        them to the engine's network code."""
        self.base_url = base_url
        self.timeout = timeout
        self.internal_networks = internal_networks
        self.helper = find_helper() if helper == "find" else helper
        self.hosts_file = hosts_file
        self._hosts_file_seen = False
        self._client: docker.DockerClient | None = None
        self._facts: EngineFacts | None = None
        self._cgroup_driver = "cgroupfs"
        self._hardware: tuple[str, ...] | None = None
        self._lock = threading.Lock()
        #: (the name asked for, the image id the engine holds under it) -> may the pool run it?
        #: None: every image held (tools and tests that drive the engine directly). hostd sets
        #: its ledger's (pool_images.py): a member's own image is then, for the pool, absent.
        self.image_gate: Callable[[str, str], bool] | None = None
        self._engine_files_unseen_logged = False
        #: Calls the engine answered (a refusal is an answer too): see `answers`.
        self._answers = 0

    def answers(self) -> int:
        """How many calls the engine has answered so far. A call after which this has not
        moved never reached the engine (engine_facts' remembered facts, say) and says nothing
        of whether it is up: hostd tells the pool its engine is back only on a real answer."""
        return self._answers

    # Plumbing: one client made on first use, and every failure translated.

    def _unavailable(self, exc: BaseException) -> EngineUnavailable:
        return EngineUnavailable(
            f"no Docker engine answers at {self.base_url} ({type(exc).__name__}: {exc}); "
            "start Docker (`sudo systemctl start docker`, or Docker Desktop), or point hostd.toml's "
            "`docker_url` at the engine's socket"
        )

    def _api(self) -> docker.DockerClient:
        with self._lock:
            if self._client is None:
                try:
                    self._client = docker.DockerClient(
                        base_url=self.base_url, version="auto", timeout=int(self.timeout)
                    )
                except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
                    raise self._unavailable(exc) from exc
            return self._client

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[docker.DockerClient]:
        answered = True
        try:
            yield self._api()
        except EngineUnavailable:
            answered = False
            raise
        except docker.errors.ImageNotFound as exc:
            raise ImageNotAvailable(
                f"{what}: {exc.explanation}; the image is not on the engine at {self.base_url} "
                "and run() does not pull: pull() it first or build it there"
            ) from exc
        except docker.errors.NotFound as exc:
            raise ContainerNotFound(f"{what}: {exc.explanation}") from exc
        except docker.errors.APIError as exc:
            raise DockerDriverError(f"{what}: {exc.explanation or exc}") from exc
        except (requests.RequestException, OSError) as exc:
            answered = False
            raise self._unavailable(exc) from exc
        except docker.errors.DockerException as exc:
            raise DockerDriverError(f"{what}: {exc}") from exc
        finally:
            if answered:
                with self._lock:
                    self._answers += 1

    def __enter__(self) -> "DockerDriver":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # The engine.

    def ping(self) -> bool:
        with self._errors("ping") as client:
            return bool(client.ping())

    def machine(self) -> EngineMachine | None:
        """The CPUs and memory of the machine the engine runs on (a VM's, for Docker Desktop):
        what a donation may not exceed. None when the engine does not say."""
        with self._errors("reading the engine's machine") as client:
            info = client.info()
        cpus, memory = info.get("NCPU"), info.get("MemTotal")
        if not isinstance(cpus, int) or not isinstance(memory, int) or cpus <= 0 or memory <= 0:
            return None
        return EngineMachine(cpus=cpus, memory_bytes=memory, disk_bytes=self._data_root_size(info))

    def _data_root_size(self, info: dict[str, Any]) -> int | None:
        """The size of the file system under the engine's data-root, where containers' layers
        and volumes go, if this machine sees it: the engine is reached by its socket here and
        the directory exists here."""
        root = info.get("DockerRootDir")
        if not self.base_url.startswith("unix://") or not isinstance(root, str) or not root:
            return None
        try:
            fs = os.statvfs(root)
        except OSError:
            return None
        return fs.f_blocks * fs.f_frsize or None

    def engine_facts(self) -> EngineFacts:
        if self._facts is not None:
            return self._facts
        with self._errors("reading engine facts") as client:
            info = client.info()
            version = client.version()
        self._cgroup_driver = str(info.get("CgroupDriver") or "cgroupfs")
        driver = str(info.get("Driver", ""))
        # Only overlay2's size option bounds the container's own writes (its upper layer). btrfs
        # and zfs bound the image and the writes together: a 16 MB probe of a small image passes,
        # then every allocation of an image larger than its disk bound cannot be created. Other
        # drivers are measured, as engines without quotas are.
        quota = self._probe_disk_quota() if driver == LAYER_QUOTA_DRIVER else False
        facts = EngineFacts(
            version=str(version.get("Version", "")),
            api_version=str(client.api.api_version),
            cgroup_version=str(info.get("CgroupVersion", "1")),
            storage_driver=driver,
            disk_quota_supported=bool(quota),
            seccomp=any("seccomp" in o for o in info.get("SecurityOptions") or []),
            user_namespaces=user_namespaces([str(o) for o in info.get("SecurityOptions") or []]),
        )
        if quota is not None:
            self._facts = facts
        return facts

    def _probe_disk_quota(self) -> bool | None:
        """Can a container's writable layer get a size limit? Only the engine knows for sure
        (overlay2 needs xfs with pquota), so create one such container, never started, and
        remove it. None when no image is there to try it with."""
        with self._errors("probing disk quota support") as client:
            images = client.images.list()
            if not images:
                return None
            try:
                probe = client.containers.create(
                    images[0], name=f"potluck-probe-{uuid.uuid4().hex[:12]}",
                    network_mode="none", storage_opt={"size": "16M"},
                    # Ours set empty: an image's would show through, and might say "managed".
                    labels={**own_labels({}), "potluck.probe": "1"},
                )  # fmt: skip
            except docker.errors.APIError:
                return False
            # With its anonymous volumes: an image's VOLUME lines (images[0] is any image the
            # engine holds) make them at create, with the image's files at that path copied in.
            probe.remove(v=True, force=True)
            return True

    def usable_hosts_file(self, client: docker.DockerClient, image_id: str) -> str | None:
        """`hosts_file` once the engine has been seen to find it, None after it did not
        (no_network.py). A hostd in a container of its own, with only the engine's socket,
        writes it where the engine does not look: every create that binds it would fail. Tried
        once, by creating a container of `image_id` that binds it, never started."""
        if self.hosts_file is None or self._hosts_file_seen:
            return self.hosts_file
        api: Any = client.api
        host_config = api.create_host_config(network_mode="none", mounts=[hosts_mount(self.hosts_file)])
        try:
            probe = api.create_container(
                image_id, name=f"potluck-probe-{uuid.uuid4().hex[:12]}", network_disabled=True,
                host_config=host_config, labels={**own_labels({}), "potluck.probe": "1"},
            )  # fmt: skip
        except docker.errors.APIError as exc:
            if exc.status_code != 400:  # the engine failing, not refusing the mount: ask again
                raise
            log.warning(
                "hostd.hosts_file_unseen",
                path=self.hosts_file,
                error=str(exc.explanation or exc),
                hint="the engine does not see hostd's files (is hostd in a container of its own?): "
                "containers without a network are made with the engine's network code, which "
                "costs every start more; run hostd on the engine's machine",
            )
            self.hosts_file = None
            return None
        api.remove_container(probe["Id"], v=True, force=True)
        self._hosts_file_seen = True
        return self.hosts_file

    def pull(self, image: str) -> None:
        try:
            with self._errors(f"pulling {image}") as client:
                client.images.pull(engine_name(image))
        except InvalidReference as exc:
            raise ImageNotAvailable(f"cannot pull {image}: {exc}") from exc
        except DockerDriverError as exc:
            if isinstance(exc, EngineUnavailable):
                raise
            raise ImageNotAvailable(f"cannot pull {image}: {exc}") from exc

    # Containers.

    def run(self, spec: ContainerSpec) -> str:
        """Create the allocation's container, or find the one a previous run() made from the
        same spec; check its limits; then start it if it is not running. Returns its id."""
        facts = self.engine_facts()
        if not facts.seccomp:
            # Without the engine's profile every syscall reaches the laptop's kernel.
            raise LimitsNotApplied("seccomp", True, False, before=f"the engine at {self.base_url}")
        disk_quota = facts.disk_quota_supported
        name = spec.container_name
        with self._errors(f"running {name}") as client:
            try:
                container = client.containers.get(name)
                made_from = _managed(container.attrs).spec
                if made_from != spec:
                    raise DockerDriverError(
                        f"{name} already exists but was made from another spec (it differs in "
                        f"{', '.join(spec.differences(made_from))}): "
                        "remove it first to run the allocation with this one"
                    )
            except docker.errors.NotFound:
                image = self._check_image(client, spec.image)
                hosts_file = (
                    None if spec.network else self.usable_hosts_file(client, str(image.get("Id") or ""))
                )
                if spec.network:
                    self._own_network(client, spec)
                try:
                    container = create_container(
                        client,
                        create_kwargs(
                            spec,
                            disk_quota=disk_quota,
                            helper=self.helper,
                            cgroup_parent=self._pool_parent(),
                            hardware=self.hardware(),
                            hosts_file=hosts_file,
                        ),
                    )
                except docker.errors.APIError as exc:
                    if exc.status_code != 409:  # 409: a concurrent run() created it first
                        self._remove_network(client, spec)
                        raise
                    container = client.containers.get(name)
        self.verify_limits(container.id or "", spec)
        if container.status == "created":
            with self._errors(f"starting {name}"):
                try:
                    container.start()
                except docker.errors.APIError:
                    container.remove(v=True, force=True)
                    raise
                container.reload()
            self.started(container.attrs)
        return container.id or ""

    def hardware(self) -> tuple[str, ...]:
        """The paths of the machine's hardware in /sys that containers get masked: the usual
        names, and for an engine on this machine what its /sys/devices holds."""
        if self._hardware is None:
            names: list[str] = []
            if self.base_url.startswith("unix://"):
                with contextlib.suppress(OSError):
                    names = [entry.name for entry in SYS_DEVICES.iterdir()]
            self._hardware = hardware_paths(names)
        return self._hardware

    def _pool_parent(self) -> str | None:
        """The pool's own cgroup parent, for an engine on this machine (hostd sets its weight)."""
        return cgroup_parent(self._cgroup_driver) if self.base_url.startswith("unix://") else None

    def started(self, attrs: dict[str, Any]) -> None:
        """What follows every start of a pool container (`attrs`: its inspect after the start):
        on this machine, its network namespace checked to be its own (no_network.py; one that
        is the machine's removes it), then its pool cgroup's weight lowered."""
        pid = int((attrs.get("State") or {}).get("Pid") or 0)
        if pid and self.base_url.startswith("unix://") and shares_machine_namespace(pid):
            container_id = str(attrs.get("Id") or "")
            self.remove(container_id)
            raise LimitsNotApplied("network namespace", "its own", "the machine's", container_id=container_id)
        self._lower_pool_weight(attrs)

    def _lower_pool_weight(self, attrs: dict[str, Any]) -> None:
        if self._pool_parent() is None:
            return
        pid = int((attrs.get("State") or {}).get("Pid") or 0)
        try:
            written = lower_parent_weight(pid) if pid else None
        except OSError as exc:
            written = None
            log.warning(
                "hostd.pool_weight_not_set",
                error=str(exc),
                hint="the pool's containers keep their own lowest weight; run hostd as root "
                "on the engine's machine for the pool to yield to the owner as a whole",
            )
        if written is not None:
            log.debug("hostd.pool_weight_set", file=str(written))

    def _check_image(self, client: docker.DockerClient, image: str) -> dict[str, Any]:
        """Refuse, before making anything from it, an image that brings what no container may
        have, or one `image_gate` says is not the pool's (ImageNotAvailable); the image's inspect
        when it is fine. The engine is asked by the image's whole
        reference (`engine_name`), never by what it could read as an image id."""
        try:
            name = engine_name(image)
        except InvalidReference as exc:
            raise DockerDriverError(f"{image[:200]!r} is not an image reference: {exc}") from exc
        attrs: dict[str, Any] = client.api.inspect_image(name)  # type: ignore[no-untyped-call]
        if self.image_gate is not None and not self.image_gate(image, str(attrs.get("Id") or "")):
            # Not the pool's (pool_images.py): the member's own, built or pulled with their login.
            # Absent, as far as the pool goes: hostd pulls the name the pool's way, or fails.
            raise ImageNotAvailable(
                f"the engine at {self.base_url} holds an image named {image} that hostd did not "
                "pull for the pool and allowed_images does not list; pull it the pool's way first"
            )
        refusals = image_refusals(attrs)
        if refusals:
            # All of them said at once: the image's author rebuilds once, not once for each.
            field, wanted, got, _ = refusals[0]
            why = "; it also ".join(why for *_, why in refusals)
            raise ImageRefused(field, wanted, got, before=f"the image {image}", why=why)
        return attrs

    def _own_network(self, client: docker.DockerClient, spec: ContainerSpec) -> None:
        """Make the allocation's own bridge network, or check the one a previous run() made."""
        kwargs = network_kwargs(spec, internal=self.internal_networks)
        try:
            client.networks.create(**kwargs)
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
        attrs: dict[str, Any] = client.api.inspect_network(network_name(spec))
        mismatches = network_mismatches(spec, attrs, internal=self.internal_networks)
        if mismatches:
            field, wanted, got = mismatches[0]
            raise LimitsNotApplied(field, wanted, got, before=f"the network {network_name(spec)}")

    def _remove_network(self, client: docker.DockerClient, spec: ContainerSpec) -> None:
        # A network left behind holds nothing and the next run() of the allocation reuses it.
        if spec.network:
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_network(network_name(spec))

    def verify_limits(self, container_id: str, spec: ContainerSpec) -> None:
        """Raise LimitsNotApplied (after removing the container) unless inspect shows them all."""
        disk_quota = self.engine_facts().disk_quota_supported
        mismatches = limit_mismatches(
            spec,
            self.inspect(container_id),
            disk_quota=disk_quota,
            helper=self.helper,
            hosts_file=self.hosts_file,
        )
        if mismatches:
            self.remove(container_id)
            field, wanted, got = mismatches[0]
            raise LimitsNotApplied(field, wanted, got, container_id=container_id)

    def start_again(self, container_id: str, spec: ContainerSpec) -> None:
        """Start an allocation's stopped container once more, its writable layer as it was; its
        limits are read back first, as a new container's are (a mismatch removes it)."""
        self.verify_limits(container_id, spec)
        with self._errors(f"starting {container_id[:12]} again") as client:
            client.api.start(container_id)
            attrs = client.api.inspect_container(container_id)
        self.started(attrs)

    def inspect(self, container_id: str) -> dict[str, Any]:
        with self._errors(f"inspecting {container_id[:12]}") as client:
            attrs: dict[str, Any] = client.api.inspect_container(container_id)
            return attrs

    def state(self, container_id: str) -> ManagedContainer:
        return _managed(self.inspect(container_id))

    def list_managed(self, host_id: str | None) -> list[ManagedContainer]:
        """This host's potluck containers, running or not (None: every host's)."""
        wanted = [f"{LABEL_MANAGED}=1"] + ([f"{LABEL_HOST}={host_id}"] if host_id else [])
        filters: dict[str, str | list[str] | bool] = {"label": wanted}
        with self._errors(f"listing containers of host {host_id}") as client:
            found = client.containers.list(all=True, filters=filters, ignore_removed=True)
            return [_managed(c.attrs) for c in found]

    def stop(self, container_id: str, timeout: int = 10) -> None:
        with self._errors(f"stopping {container_id[:12]}") as client:
            client.api.stop(container_id, timeout=timeout)

    def remove(self, container_id: str) -> None:
        """Kill and remove, with the allocation's own network (named in the container's network
        mode after the container itself, never in a label) and its anonymous volumes; a
        container already gone is fine.

        No container of ours should have a volume (an image's VOLUME is refused before anything
        is made from it, and a mount of one refused when its limits are read back), but the
        image is read by name before the container is created by name, and the name may move
        in between (a pull of it for another allocation): the engine then makes an anonymous
        volume, with the image's files at that path copied in, outside the container's disk
        bound, and keeps it after the container unless it goes with it."""
        with (
            contextlib.suppress(ContainerNotFound),
            self._errors(f"removing {container_id[:12]}") as client,
        ):
            network = own_network(client.api.inspect_container(container_id))
            client.api.remove_container(container_id, v=True, force=True)
            if network is not None:
                # A network left behind holds nothing and the next run() of the allocation reuses it.
                with contextlib.suppress(docker.errors.APIError):
                    client.api.remove_network(network)

    def pause(self, container_id: str) -> None:
        with self._errors(f"pausing {container_id[:12]}") as client:
            for attempt in pause_races.freezing(_engine_failed):
                with attempt:
                    client.api.pause(container_id)

    def unpause(self, container_id: str) -> None:
        with self._errors(f"unpausing {container_id[:12]}") as client:
            for attempt in pause_races.freezing(_engine_failed):
                with attempt:
                    client.api.unpause(container_id)

    def running_ids(self) -> list[str]:
        """Every running container of the engine, the member's own too (log_cost.py shares
        dockerd's work out among them all)."""
        with self._errors("listing the engine's containers") as client:
            return [str(c["Id"]) for c in client.api.containers(quiet=True)]

    def process_and_log_of(self, container_id: str) -> tuple[int, str]:
        """The container's first process as this machine sees it (0 when it is not running) and
        the file its log driver writes its output to ("" for a driver that names none: local,
        none)."""
        with self._errors(f"inspecting {container_id[:12]}") as client:
            attrs = client.api.inspect_container(container_id)
        return int((attrs.get("State") or {}).get("Pid") or 0), str(attrs.get("LogPath") or "")

    def signal(self, container_id: str, signal: str) -> None:
        """Send `signal` to the container's PID 1 (docker-init hands it to its child); asked
        again while the engine still holds the container paused after an unpause."""
        with self._errors(f"signalling {container_id[:12]}") as client:
            for attempt in pause_races.while_stale_paused(_refused_as_paused):
                with attempt:
                    client.api.kill(container_id, signal=signal)

    def attach_stdin(self, container_id: str) -> StdinWriter:
        """A write end of a running container's stdin (`docker attach --stdin`; the container
        made with stdin open); asked again while the engine still holds it paused after an
        unpause, as `signal` is."""
        with self._errors(f"attaching to the stdin of {container_id[:12]}") as client:
            for attempt in pause_races.while_stale_paused(_refused_as_paused):
                with attempt:
                    attached = client.api.attach_socket(container_id, params={"stdin": 1, "stream": 1})
        return StdinWriter(attached)

    def update_cpus(self, container_id: str, cpus: float) -> None:
        """Change a running container's CPU quota in place (`docker update --cpus`); its
        memory and everything else stay as they are."""
        with self._errors(f"updating the CPU quota of {container_id[:12]}") as client:
            # docker-py's update_container knows no NanoCpus, which is what containers are
            # created with (the engine refuses a CpuQuota next to it): the same endpoint, raw.
            api: Any = client.api
            response = api._post_json(
                api._url("/containers/{0}/update", container_id), data={"NanoCpus": round(cpus * 1e9)}
            )
            api._raise_for_status(response)

    def writable_layer_bytes(self, container_id: str) -> int:
        """Bytes written to the container's own layer (SizeRw); the engine walks the layer."""
        with self._errors(f"measuring {container_id[:12]}") as client:
            found = client.api.containers(all=True, size=True, filters={"id": container_id})
            if not found:
                raise ContainerNotFound(f"measuring {container_id[:12]}: no such container")
            return int(found[0].get("SizeRw") or 0)

    def layer_entries(self, container_id: str, most: int) -> int:
        """How many files, directories, links and whiteouts the container's writable layer holds
        (the engine's list of its changes, which walks the layer alone), counted while the answer
        streams in, and read no further than the chunk that holds entry `most` + 1 (which is
        what it returns then): a layer of millions of entries costs hostd no more than the
        count that shows it past its bound."""
        with self._errors(f"counting the files of {container_id[:12]}") as client:
            api: Any = client.api
            response = api._get(api._url("/containers/{0}/changes", container_id), stream=True)
            try:
                api._raise_for_status(response)
                # `"Kind":` opens no JSON string (a quote inside one is escaped), so each one
                # is an entry; the last bytes of a chunk are kept for one cut in two.
                count, tail = 0, b""
                for chunk in response.iter_content(1 << 16):
                    data = tail + chunk
                    count += data.count(_CHANGE)
                    tail = data[-(len(_CHANGE) - 1) :]
                    if count > most:
                        break
            finally:
                response.close()
            return min(count, most + 1)

    def outside_layer_bytes(self, container_id: str) -> dict[str, int]:
        """The sizes of the engine's files the container can write outside its own layer
        (OUTSIDE_LAYER_FILES): each the engine's own file on this machine (inspect's
        HostsPath, HostnamePath, ResolvConfPath), its size read with lstat; a path the
        container does not have is left out.

        Never the engine's stat of the path inside the container (`docker cp`'s HEAD), as
        before: to answer it the engine bind-mounts those files onto their places in the
        container's root, resolving each place first and mounting on the path again after, as
        root in its own mount namespace, so a container swapping its /etc for a link to a
        directory of the member's between the two (where it may rename /etc: the vfs, btrfs
        and zfs drivers, overlayfs with redirect_dir) had the engine create `hostname` or
        `resolv.conf` there and mount its writable file over it, at every measure of the disk
        guard. The engine's files are the container's only through their contents: no path
        of the container's leads to them. Only where hostd does not see the engine's files
        (it runs in a container of its own with only the engine's socket) is the engine asked,
        as before, saying so in the log."""
        with self._errors(f"measuring {container_id[:12]}") as client:
            attrs = client.api.inspect_container(container_id)
        return self._outside_layer_sizes(container_id, attrs)

    def outside_and_held_bytes(self, container_id: str) -> tuple[dict[str, int], int]:
        """`outside_layer_bytes`, and the bytes on disk of the files the container deleted and
        its processes still hold open, which no walk of its layer finds (held_files.py; 0 for
        an engine not on this machine, whose processes hostd does not see, and for a container
        not running): from one inspect, whose first process's pid names its cgroup."""
        with self._errors(f"measuring {container_id[:12]}") as client:
            attrs = client.api.inspect_container(container_id)
        init_pid = int((attrs.get("State") or {}).get("Pid") or 0)
        held = 0
        if self.base_url.startswith("unix://") and init_pid > 0:
            held = container_held_bytes(container_id, init_pid)
        return self._outside_layer_sizes(container_id, attrs), held

    def _outside_layer_sizes(self, container_id: str, attrs: dict[str, Any]) -> dict[str, int]:
        sizes: dict[str, int] = {}
        unseen: list[str] = []
        for path in OUTSIDE_LAYER_FILES:
            own = str(attrs.get(_ENGINE_FILES[path]) or "")
            if not own:
                continue
            try:
                info = os.lstat(own)
            except FileNotFoundError:
                unseen.append(path)
                continue
            sizes[path] = info.st_size if stat.S_ISREG(info.st_mode) else 0
        if unseen:
            sizes.update(self._outside_layer_bytes_by_engine(container_id, unseen))
        return sizes

    def _outside_layer_bytes_by_engine(self, container_id: str, paths: list[str]) -> dict[str, int]:
        """The engine's stat of `paths` inside the container, for a hostd that does not see the
        engine's files (outside_layer_bytes says what it risks)."""
        if not self._engine_files_unseen_logged:
            self._engine_files_unseen_logged = True
            log.warning(
                "docker.engine_files_unseen",
                paths=paths,
                hint="hostd does not see the engine's files (is it in a container of its own?): "
                "the engine stats them inside each container, which a container swapping its "
                "/etc can turn against the machine on some storage drivers; run hostd on the "
                "machine itself",
            )
        with self._errors(f"measuring {container_id[:12]}") as client:
            api: Any = client.api
            sizes = {}
            for path in paths:
                response = api.head(api._url("/containers/{0}/archive", container_id), params={"path": path})
                if response.status_code == 404:  # no body to a HEAD: the path, or the container
                    continue
                api._raise_for_status(response)
                stat_ = json.loads(base64.b64decode(response.headers["X-Docker-Container-Path-Stat"]))
                sizes[path] = int(stat_.get("size") or 0)
            return sizes

    def usage(self, container_id: str) -> ContainerUsage:
        """One stats sample: cumulative CPU time, memory without page cache, pids."""
        with self._errors(f"sampling {container_id[:12]}") as client:
            api = tuple(int(part) for part in client.api.api_version.split("."))
            one_shot = True if api >= (1, 41) else None
            stats = client.api.stats(container_id, stream=False, one_shot=one_shot)
        memory = stats.get("memory_stats") or {}
        detail = memory.get("stats") or {}
        cache = detail.get("total_inactive_file", detail.get("inactive_file", 0))
        return ContainerUsage(
            cpu_total_ns=int(((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage", 0)),
            memory_bytes=max(0, int(memory.get("usage", 0)) - int(cache)),
            memory_limit_bytes=int(memory.get("limit", 0)),
            pids=int((stats.get("pids_stats") or {}).get("current", 0)),
        )

    def exec_run(self, container_id: str, argv: list[str], *, user: str = "") -> ExecResult:
        with self._errors(f"exec in {container_id[:12]}") as client:
            # The engine's stale "paused" can refuse the start as well as the create; a start it
            # refused ran nothing, so both are asked again, with a new exec.
            for attempt in pause_races.while_stale_paused(_refused_as_paused):
                with attempt:
                    exec_id = client.api.exec_create(container_id, argv, user=user)["Id"]
                    output = client.api.exec_start(exec_id)
            code = client.api.exec_inspect(exec_id).get("ExitCode")
        return ExecResult(exit_code=-1 if code is None else int(code), output=output)

    def logs(self, container_id: str, *, tail: int = 100) -> bytes:
        with self._errors(f"reading logs of {container_id[:12]}") as client:
            output: bytes = client.api.logs(container_id, tail=tail)
            return output

    def events(
        self, host_id: str, since: datetime | int | None = None, until: datetime | int | None = None
    ) -> EventStream:
        """start/kill/die/oom of this host's managed containers; blocks, so iterate in a thread.
        Without `until` it follows forever; close() it to stop, EngineUnavailable if it breaks."""
        filters = {
            "type": ["container"],
            "event": list(WATCHED_EVENTS),
            "label": [f"{LABEL_HOST}={host_id}", f"{LABEL_MANAGED}=1"],
        }
        with self._errors(f"following events of host {host_id}") as client:
            raw = client.api.events(since=since, until=until, filters=filters, decode=True)
        return EventStream(raw, self.base_url, follows=until is None)

    # Images held (image_inventory.py keeps the cache; these only read and remove).

    def images(self) -> list["EngineImage"]:
        """Every image the engine holds, with the containers (any state, anyone's) made from it."""
        with self._errors("listing images") as client:
            raw_images = client.api.images()
            users: dict[str, int] = {}
            for container in client.api.containers(all=True):
                image_id = container.get("ImageID") or ""
                users[image_id] = users.get(image_id, 0) + 1
        return [
            EngineImage(
                image_id=str(raw["Id"]),
                tags=tuple(t for t in raw.get("RepoTags") or () if t != "<none>:<none>"),
                digests=tuple(d for d in raw.get("RepoDigests") or () if not d.startswith("<none>")),
                size=int(raw.get("Size") or 0),
                created=int(raw.get("Created") or 0),
                containers=users.get(str(raw["Id"]), 0),
            )
            for raw in raw_images
        ]

    def remove_image(self, image: "EngineImage") -> None:
        """Untag each of its tags (the last one deletes it), or delete it by id if it has none;
        never forced, so the engine itself refuses an image a container was made from."""
        with self._errors(f"removing image {image.image_id[:19]}") as client:
            for name in image.tags or (image.image_id,):
                client.api.remove_image(name, force=False, noprune=False)

    def image_events(self) -> "ImageEvents":
        """Events that change which images the engine holds or uses (pull, tag, untag, delete,
        ...; a container made or removed), as they happen; iterate in a thread."""
        filters = {"type": ["image", "container"], "event": list(IMAGE_EVENTS)}
        with self._errors("following image events") as client:
            raw = client.api.events(filters=filters, decode=True)
        return ImageEvents(raw, self.base_url)


@dataclass(frozen=True)
class EngineImage:
    image_id: str
    tags: tuple[str, ...]
    digests: tuple[str, ...]
    size: int
    #: When the engine built or pulled it (unix seconds).
    created: int
    #: Containers (any state) made from it.
    containers: int


class ImageEvents:
    """The action of each image event; ends (EngineUnavailable) when the engine goes away."""

    def __init__(self, stream: Any, base_url: str) -> None:
        self._stream = stream
        self._base_url = base_url
        self._closed = False

    def __iter__(self) -> Iterator[str]:
        try:
            for raw in self._stream:
                yield str(raw.get("Action") or raw.get("status") or "")
        except (requests.RequestException, OSError) as exc:
            if not self._closed:
                raise EngineUnavailable(f"image events from {self._base_url} broke: {exc}") from exc
            return
        if not self._closed:
            raise EngineUnavailable(f"image events from {self._base_url} ended: the engine stopped?")

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):
            self._stream.close()
