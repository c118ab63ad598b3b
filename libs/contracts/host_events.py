"""Facts about donated machines: the Host aggregate's events (streams `host-<host_id>`).

Every event names its host in `host_id`, which also ends its bus subject
(`potluck.evt.host.<Type>.<host_id>`), so a hostd's consumer sees its own
host's events and no other's; but for HostEngineLost and HostEngineReturned,
which hostd does not need (it reported them) and are not routed to it.
"""

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import Field

from potluck.contracts.capacity import Capacity
from potluck.contracts.compatibility import FIRST_CONTRACT
from potluck.contracts.engine import EngineFacts
from potluck.events import Event, event_type, registry

Actor = Literal["member", "operator", "registry"]

#: What made a host's owner policy act (see services/hostd's policy).
PolicyCause = Literal["owner", "battery", "heat", "window"]


class HostEvent(Event):
    routing_field: ClassVar[str | None] = "host_id"
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
    #: The contract it registered with (potluck.contracts.compatibility); before the number, the first.
    contract: int = FIRST_CONTRACT


@event_type
class HostSuspected(HostEvent):
    """Beats stopped for a few intervals, cause unknown: the host is *unreachable*.

    Placements avoid it; its allocations are kept (they wait for the host). The
    name stays for the log's sake: events already written keep their meaning.
    """

    silent_for_s: float


@event_type
class HostSleeping(HostEvent):
    """hostd announced that its machine is about to sleep (logind's PrepareForSleep).

    The host is *asleep* at once: its allocations wait for it, frozen by the kernel.
    """


@event_type
class HostWoke(HostEvent):
    """hostd came back saying its machine slept `slept_s` seconds (CLOCK_BOOTTIME ran ahead
    of CLOCK_MONOTONIC, or logind said so)."""

    slept_s: float = Field(ge=0)


@event_type
class HostLost(HostEvent):
    """Silent (asleep or unreachable) past `stranded_grace`: its allocations are given up."""

    silent_for_s: float


@event_type
class HostRecovered(HostEvent):
    """Beats came back. `suspect` is how events written before `unreachable` name it."""

    was: Literal["suspect", "unreachable", "asleep", "lost"]


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


@event_type
class HostLeft(HostEvent):
    """The member took the machine back for good (`potluck host leave`): it never registers
    again; coming back needs a new enrollment."""

    by: Actor


@event_type
class HostRevoked(HostEvent):
    """An operator evicted the machine (stolen, compromised): its key is no longer honoured,
    its allocations are lost, and nothing it sends is accepted again."""

    by: str
    reason: str = ""


@event_type
class HostConnectionsCapped(HostEvent):
    """The host's key held more NATS connections than a host may (`limit`): the registry took
    the key out of the NATS users file until `until`, which closed all of them, and puts it
    back then. Meanwhile the host cannot reach the bus and reads as unreachable."""

    connections: int = Field(ge=0)
    limit: int = Field(ge=1)
    until: datetime
    #: How long from the cap to `until`: hostd, whose clock may differ from the log's, counts
    #: this long on its own clock before it takes a refused key as revoked.
    for_s: float = Field(gt=0)


@event_type
class HostJoinTokenIssued(HostEvent):
    """An operator issued a single-use join token for the host (`potluck ops hosts enroll`).

    Only the token's digest is logged, never the token; `join_nkey` is the public half of
    the throwaway NATS identity the token carries, which may only ask to join.
    """

    token_sha256: str
    join_nkey: str
    expires_at: datetime


@event_type
class HostJoined(HostEvent):
    """The member's machine redeemed its join token (`potluck join`), with a NATS key pair it
    made itself: `nkey` is its public half, and the token is spent."""

    nkey: str


@event_type
class HostThrottled(HostEvent):
    """The owner policy cut the pool's CPU here to `share_cpus` (of the donated cpus)."""

    cause: PolicyCause
    reason: str
    share_cpus: float = Field(ge=0)


@event_type
class HostFrozen(HostEvent):
    """The owner policy froze the pool's containers here (cgroup freezer)."""

    cause: PolicyCause
    reason: str
    #: The member's `max_frozen_s`: an allocation frozen longer is told, and released if it
    #: asked to be (`on_preempt`). None: no limit.
    max_frozen_s: float | None = Field(default=None, gt=0)


@event_type
class HostShareRestored(HostEvent):
    """The owner policy gave the pool its full donated share back."""

    reason: str = ""


#: Of what hostd says of its engine, this much is recorded (the engine's own error text).
ENGINE_DETAIL_CHARS = 500


@event_type
class HostEngineLost(HostEvent):
    """hostd, still running, reported that its Docker engine stopped answering (its EngineStatus
    report; the registry records it): nothing new is placed on the host until the engine answers
    again, and what ran there may have stopped with it. `detail`: what hostd said.

    Not routed to the host (no host id ends its subject): hostd knows its own engine, and a
    hostd of the same contract but older than this event never meets it."""

    routing_field: ClassVar[str | None] = None
    detail: str = Field(default="", max_length=ENGINE_DETAIL_CHARS)


@event_type
class HostEngineReturned(HostEvent):
    """hostd reported that its Docker engine answers again: the host takes new work again.
    Not routed to the host, as HostEngineLost."""

    routing_field: ClassVar[str | None] = None


@registry.upcaster("HostRegistered", 1)
def _host_registered_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 had no SSH host key."""
    return {**data, "ssh_host_key": ""}


def host_stream(host_id: str) -> str:
    return f"host-{host_id}"
