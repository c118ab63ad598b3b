"""What hostd reports about its containers (JetStream subjects `potluck.report.<host_id>.<kind>`).

Reports are not events: the allocator validates them and logs the facts they
imply. Each carries its own id, sent as Nats-Msg-Id; the allocator derives the
logged event's id from it, so a report delivered twice is logged once.
"""

from datetime import UTC, datetime
from typing import Literal
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field

from potluck.contracts.host_images import MAX_IMAGES_HELD
from potluck.events.bus import REPORT_PREFIX

FailureReason = Literal[
    "image_not_allowed",
    "network_not_allowed",
    "image_not_available",
    "image_pull_failed",
    "limits_not_applied",
    "disk_limit_exceeded",
    "engine_unavailable",
    "invalid_spec",
    "start_failed",
]


def _now() -> datetime:
    return datetime.now(UTC)


def _id() -> str:
    return str(uuid4())


class Report(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)  # see Event's

    kind: str
    report_id: str = Field(default_factory=_id)
    at: datetime = Field(default_factory=_now)


class PreviousExit(BaseModel):
    """How a container had stopped before its host started it again."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    exit_code: int
    oom_killed: bool = False


class ContainerStarted(Report):
    kind: Literal["started"] = "started"
    alloc_id: str
    container_id: str
    #: Set when hostd started an interactive allocation's stopped container again (its engine
    #: restarted, its machine rebooted, its keep-alive killed): how it had stopped.
    restarted_after: PreviousExit | None = None


#: Why a container's exit is its host's doing (None: its command ended on its own, or hostd
#: did not see how it stopped): "host_drained", hostd's drain stopped it; "kept_stopping", an
#: interactive allocation's container stopped again once hostd had started it again as often
#: as its restart budget allows (or the engine kept refusing to start it); "stopped_on_host",
#: the engine was told to stop it outside Potluck (the member's `docker stop`, or the engine
#: itself shutting down).
StopReason = Literal["host_drained", "kept_stopping", "stopped_on_host"]


class ContainerExited(Report):
    kind: Literal["exited"] = "exited"
    alloc_id: str
    container_id: str
    exit_code: int
    oom_killed: bool
    stopped_by_host: StopReason | None = None


class ContainerFailed(Report):
    kind: Literal["failed"] = "failed"
    alloc_id: str
    reason: FailureReason
    detail: str = ""


class ContainerStatus(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)  # see Event's

    alloc_id: str
    container_id: str
    running: bool
    exit_code: int | None = None
    oom_killed: bool = False


class ActualState(Report):
    """Everything hostd runs, re-sent after every (re)connect: JetStream may have lost reports."""

    kind: Literal["state"] = "state"
    # The snapshot position hostd reconciled to: allocations placed later may
    # not have their container yet, and must not be judged by this report.
    as_of_position: int = Field(ge=0)
    containers: list[ContainerStatus]
    #: Allocations with no container yet because their image is being pulled: not missing.
    pulling: list[str] = Field(default_factory=list)


class ContainerPulling(Report):
    """The allocation's image is being pulled: sent when the pull starts and every few seconds.

    `total_bytes` is what the layers being fetched announced so far (0 until known);
    both count compressed bytes as the registry sends them.
    """

    kind: Literal["pulling"] = "pulling"
    alloc_id: str
    image: str
    done_bytes: int = Field(default=0, ge=0)
    total_bytes: int = Field(default=0, ge=0)


class UsageSample(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)  # see Event's

    alloc_id: str
    cpu_total_ns: int
    memory_bytes: int
    pids: int
    disk_bytes: int | None = None


class UsageSampled(Report):
    kind: Literal["usage"] = "usage"
    samples: list[UsageSample]


class EngineStatus(Report):
    kind: Literal["engine"] = "engine"
    available: bool
    detail: str = ""


class ImagesHeld(Report):
    """Every image the engine holds, by normalised name (tags and digests); sent after each
    registration and whenever the set changes. At most MAX_IMAGES_HELD names (host_images.bounded)."""

    kind: Literal["images"] = "images"
    images: list[str] = Field(max_length=MAX_IMAGES_HELD)


AnyReport = (
    ContainerStarted
    | ContainerExited
    | ContainerFailed
    | ContainerPulling
    | ActualState
    | UsageSampled
    | EngineStatus
    | ImagesHeld
)


def report_subject(host_id: str, report: Report) -> str:
    return f"{REPORT_PREFIX}.{host_id}.{report.kind}"
