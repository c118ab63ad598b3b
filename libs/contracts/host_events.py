"""Facts about donated machines: the Host aggregate's events (streams `host-<host_id>`).

Every event names its host in `host_id`, which also ends its bus subject
(`potluck.evt.host.<Type>.<host_id>`), so a hostd's consumer sees its own
host's events and no other's.
"""

from typing import Any, ClassVar, Literal

from pydantic import Field

from potluck.contracts.capacity import Capacity
from potluck.contracts.engine import EngineFacts
from potluck.events import Event, event_type, registry

Actor = Literal["member", "operator", "registry"]


class HostEvent(Event):
    routing_field = "host_id"
    host_id: str


@event_type
class HostEnrolled(HostEvent):
    """An operator admitted a machine; `nkey` is the public half of its NATS identity."""

    name: str
    nkey: str


@event_type
class HostRegistered(HostEvent):
    schema_version: ClassVar[int] = 2

    donated: Capacity
    labels: dict[str, str] = Field(default_factory=dict)
    allowed_images: list[str] = Field(default_factory=list)
    #: Containers that ask for a network may run here; hosts registered before it was asked never.
    allow_network: bool = False
    engine: EngineFacts
    hostd_version: str
    #: hostd's SSH host key (OpenSSH public key line); gateways map reverse connections by it.
    ssh_host_key: str = ""


@event_type
class HostSuspected(HostEvent):
    """Beats stopped for a few intervals; placements avoid the host."""

    silent_for_s: float


@event_type
class HostLost(HostEvent):
    """Beats stayed away past the grace period; its allocations are lost."""

    silent_for_s: float


@event_type
class HostRecovered(HostEvent):
    was: Literal["suspect", "lost"]


@event_type
class HostPaused(HostEvent):
    by: Actor


@event_type
class HostResumed(HostEvent):
    by: Actor


@event_type
class HostDrainStarted(HostEvent):
    by: Actor
    grace_s: float = Field(ge=0)


@event_type
class HostDeregistered(HostEvent):
    by: Actor


@registry.upcaster("HostRegistered", 1)
def _host_registered_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 had no SSH host key."""
    return {**data, "ssh_host_key": ""}


def host_stream(host_id: str) -> str:
    return f"host-{host_id}"
