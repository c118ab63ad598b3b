"""A stand-in container engine that keeps containers in memory: hollow hosts, for scale tests.

Kubernetes measures its control plane with kubemark's hollow nodes (the real node agent,
a fake runtime); this is the same for hostd. `HollowDriver` answers every call hostd's
agent, container manager and image inventory make on `DockerDriver`, from dicts: a
container is "running" from `run()` until it is stopped, removed, or `finish()`ed with an
exit code; usage grows with the time it ran; the engine "has" the images it was given.
Nothing runs, so a hollow host must never take real work: `potluck ops hollow` registers
them with the label `hollow=true` and the README says they are for scale tests only.

A subclass of DockerDriver (not a protocol beside it) so that the real path keeps its types
and code unchanged; every method hostd calls is overridden, and the base class never gets a
client (its URL is one no engine answers at).
"""

import hashlib
import queue
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from potluck.contracts.engine import EngineFacts
from potluck.contracts.image_reference import image_allowed
from potluck.hostd.container_config import ContainerSpec
from potluck.hostd.docker_driver import (
    ContainerNotFound,
    ContainerUsage,
    DockerDriver,
    DockerDriverError,
    EngineImage,
    EngineMachine,
    ImageNotAvailable,
    ManagedContainer,
)

#: Where a hollow driver says it is: no engine ever answers there.
HOLLOW_URL = "hollow://in-memory"
#: Exit code of a container stopped (SIGTERM, as `docker stop` gives to a shell).
STOPPED_EXIT = 143


@dataclass
class _Container:
    container_id: str
    spec: ContainerSpec
    started: float
    status: str = "running"
    exit_code: int | None = None
    oom_killed: bool = False
    finished: float | None = None
    paused: bool = False
    cpus: float = field(default=0.0)

    def managed(self) -> ManagedContainer:
        return ManagedContainer(
            container_id=self.container_id,
            allocation_id=self.spec.allocation_id,
            status="paused" if self.paused and self.status == "running" else self.status,
            running=self.status == "running",
            exit_code=self.exit_code,
            oom_killed=self.oom_killed,
            started_at=datetime.fromtimestamp(self.started, UTC),
            finished_at=None if self.finished is None else datetime.fromtimestamp(self.finished, UTC),
            spec=self.spec,
        )


class _Stream:
    """A blocking iterator of what `put` gives it, ended by `close` (hostd reads it in a thread)."""

    _END = object()

    def __init__(self, owner: "HollowDriver") -> None:
        self._owner = owner
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def put(self, item: Any) -> None:
        self._queue.put(item)

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            yield item

    def close(self) -> None:
        with self._owner._lock:
            self._owner._streams.discard(self)
            self._owner._image_streams.discard(self)
        self._queue.put(self._END)


class HollowDriver(DockerDriver):
    """DockerDriver's interface over dicts; thread-safe, as hostd calls it from threads."""

    def __init__(self, host_id: str, images: Iterable[str] = ()) -> None:
        super().__init__(HOLLOW_URL, helper=None)
        self.host_id = host_id
        self._lock = threading.Lock()
        self._images = set(images)
        self._containers: dict[str, _Container] = {}
        self._streams: set[_Stream] = set()
        self._image_streams: set[_Stream] = set()

    # The engine.

    def answers(self) -> int:
        """Every call reaches the hollow engine (it is this process): never the same count twice."""
        with self._lock:
            self._answers += 1
            return self._answers

    def ping(self) -> bool:
        return True

    def machine(self) -> EngineMachine | None:
        return None  # no machine: nothing runs, so a hollow host's donation bounds nothing real

    def engine_facts(self) -> EngineFacts:
        return EngineFacts(
            version="hollow",
            api_version="1.45",
            cgroup_version="2",
            storage_driver="hollow",
            disk_quota_supported=True,  # nothing is written: no layer to measure
            seccomp=True,
            user_namespaces="off",  # nothing runs, but say what a plain engine would
        )

    def close(self) -> None:
        with self._lock:
            streams = list(self._streams | self._image_streams)
        for stream in streams:
            stream.close()

    def pull(self, image: str) -> None:
        with self._lock:
            self._images.add(image)
        self._image_event("pull")

    # Containers.

    def run(self, spec: ContainerSpec) -> str:
        """Make and start the allocation's container, or return the one made from the same spec."""
        with self._lock:
            found = self._by_name(spec.container_name)
            if found is not None:
                if found.spec != spec:
                    raise DockerDriverError(
                        f"{spec.container_name} already exists but was made from another spec: "
                        "remove it first to run the allocation with this one"
                    )
                return found.container_id
            if not self._has(spec.image):
                raise ImageNotAvailable(
                    f"running {spec.container_name}: the hollow engine has no {spec.image}"
                )
            container_id = uuid.uuid4().hex + uuid.uuid4().hex
            self._containers[container_id] = _Container(container_id, spec, started=time.time())
        self._event("start", container_id, spec, None)
        return container_id

    def _has(self, image: str) -> bool:
        """Given as a name or a pattern ("*": any image is there, as if pulled long ago)."""
        return image in self._images or "*" in self._images or image_allowed(sorted(self._images), image)

    def _by_name(self, name_or_id: str) -> _Container | None:
        found = self._containers.get(name_or_id)
        if found is not None:
            return found
        for container in self._containers.values():
            if container.spec.container_name == name_or_id:
                return container
        return None

    def _get(self, container_id: str, what: str) -> _Container:
        found = self._by_name(container_id)
        if found is None:
            raise ContainerNotFound(f"{what} {container_id[:12]}: no such container")
        return found

    def _event(self, action: str, container_id: str, spec: ContainerSpec, exit_code: int | None) -> None:
        event = {
            "action": action,
            "container_id": container_id,
            "allocation_id": spec.allocation_id,
            "host_id": self.host_id,
            "exit_code": exit_code,
            "time_nano": time.time_ns(),
        }
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream.put(event)

    def _image_event(self, action: str) -> None:
        with self._lock:
            streams = list(self._image_streams)
        for stream in streams:
            stream.put(action)

    def finish(self, container_id: str, exit_code: int, *, oom_killed: bool = False) -> None:
        """The container's command exits with `exit_code` (as a real one would, by itself)."""
        with self._lock:
            container = self._get(container_id, "finishing")
            if container.status != "running":
                return
            container.status, container.exit_code, container.oom_killed = "exited", exit_code, oom_killed
            container.finished = time.time()
        self._event("die", container.container_id, container.spec, exit_code)

    def verify_limits(self, container_id: str, spec: ContainerSpec) -> None:
        self.inspect(container_id)

    def start_again(self, container_id: str, spec: ContainerSpec) -> None:
        with self._lock:
            container = self._get(container_id, "starting again")
            if container.status == "running":
                return
            container.status, container.exit_code, container.oom_killed = "running", None, False
            container.started, container.finished = time.time(), None
        self._event("start", container.container_id, container.spec, None)

    def inspect(self, container_id: str) -> dict[str, Any]:
        with self._lock:
            container = self._get(container_id, "inspecting")
            return {"Id": container.container_id, "State": {"Pid": 0, "Status": container.status}}

    def state(self, container_id: str) -> ManagedContainer:
        with self._lock:
            return self._get(container_id, "inspecting").managed()

    def list_managed(self, host_id: str | None) -> list[ManagedContainer]:
        with self._lock:
            return [
                c.managed() for c in self._containers.values() if host_id is None or c.spec.host_id == host_id
            ]

    def stop(self, container_id: str, timeout: int = 10) -> None:
        self.finish(container_id, STOPPED_EXIT)

    def remove(self, container_id: str) -> None:
        with self._lock:
            container = self._by_name(container_id)
            if container is None:
                return
            del self._containers[container.container_id]
        if container.status == "running":
            self._event("die", container.container_id, container.spec, 137)

    def pause(self, container_id: str) -> None:
        with self._lock:
            self._get(container_id, "pausing").paused = True

    def unpause(self, container_id: str) -> None:
        with self._lock:
            self._get(container_id, "unpausing").paused = False

    def update_cpus(self, container_id: str, cpus: float) -> None:
        with self._lock:
            self._get(container_id, "updating the CPU quota of").cpus = cpus

    def writable_layer_bytes(self, container_id: str) -> int:
        with self._lock:
            self._get(container_id, "measuring")
        return 0

    def layer_entries(self, container_id: str, most: int) -> int:
        with self._lock:
            self._get(container_id, "counting")
        return 0

    def outside_layer_bytes(self, container_id: str) -> dict[str, int]:
        with self._lock:
            self._get(container_id, "measuring")
        return {}

    def outside_and_held_bytes(self, container_id: str) -> tuple[dict[str, int], int]:
        return self.outside_layer_bytes(container_id), 0

    def usage(self, container_id: str) -> ContainerUsage:
        """As if it kept a tenth of a CPU busy and held 16 MiB since it started."""
        with self._lock:
            container = self._get(container_id, "sampling")
            ran_s = (container.finished or time.time()) - container.started
            limit = container.spec.memory_bytes
        return ContainerUsage(
            cpu_total_ns=int(ran_s * 1e8), memory_bytes=min(16 << 20, limit), memory_limit_bytes=limit, pids=1
        )

    def events(
        self, host_id: str, since: datetime | int | None = None, until: datetime | int | None = None
    ) -> Any:
        stream = _Stream(self)
        with self._lock:
            self._streams.add(stream)
        if until is not None:
            stream.close()  # nothing is replayed: the hollow engine keeps no history
        return stream

    # Images held.

    def images(self) -> list[EngineImage]:
        with self._lock:
            users: dict[str, int] = {}
            for c in self._containers.values():
                users[c.spec.image] = users.get(c.spec.image, 0) + 1
            return [
                EngineImage(
                    image_id="sha256:" + hashlib.sha256(name.encode()).hexdigest(),
                    tags=(name,),
                    digests=(),
                    size=1 << 20,
                    created=0,
                    containers=users.get(name, 0),
                )
                for name in sorted(self._images)
                if "*" not in name and "?" not in name  # a pattern is no image to list
            ]

    def remove_image(self, image: EngineImage) -> None:
        with self._lock:
            if image.containers:
                raise DockerDriverError(f"removing image {image.tags}: a container was made from it")
            self._images.difference_update(image.tags)
        self._image_event("delete")

    def image_events(self) -> Any:
        stream = _Stream(self)
        with self._lock:
            self._image_streams.add(stream)
        return stream
