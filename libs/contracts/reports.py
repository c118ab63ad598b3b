"""What hostd reports about its containers (JetStream subjects `potluck.report.<host_id>.<kind>`).

Reports are not events: the allocator validates them and logs the facts they
imply. Each carries its own id, sent as Nats-Msg-Id; the allocator derives the
logged event's id from it, so a report delivered twice is logged once.

Every text a host sends is bounded: its ids and details go into the log (the report id as
the facts' causation id) and into the services' log lines, and a host is anyone who joined.
The bounds sit well above what hostd sends (a uuid4 report id, `a-` and 12 hex digits, the
engine's 64-hex container ids, a failure's detail cut at 2000 characters), so no hostd, older
or newer, is refused for them; a report past one is a dead letter naming the field.
"""

from datetime import UTC, datetime
from typing import Annotated, Literal
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
    # Placed past what the member donates (a donation lowered under running work, or a bug):
    # not the user's doing, unlike invalid_spec.
    "beyond_donation",
    "start_failed",
]


#: An id a host names: its report's own, an allocation's, a container's.
ReportedId = Annotated[str, Field(max_length=128)]
#: An image's name as a host reports it: an allocation's image (at most 512, AllocationSpec's
#: bound) as the engine normalises it, which adds a registry and a tag.
ReportedImage = Annotated[str, Field(max_length=1024)]
#: What a host says of a failure or of its engine (hostd cuts a failure's at 2000 characters).
DETAIL_CHARS = 4096
#: The containers, pulls or samples one report may list: far more than one machine runs.
MAX_LISTED = 10_000


def _now() -> datetime:
    return datetime.now(UTC)


def _id() -> str:
    return str(uuid4())


class Report(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)  # see Event's

    kind: str = Field(max_length=32)
    report_id: ReportedId = Field(default_factory=_id)
    at: datetime = Field(default_factory=_now)


class PreviousExit(BaseModel):
    """How a container had stopped before its host started it again."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    exit_code: int
    oom_killed: bool = False


class ContainerStarted(Report):
    kind: Literal["started"] = "started"
    alloc_id: ReportedId
    container_id: ReportedId
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
    alloc_id: ReportedId
    container_id: ReportedId
    exit_code: int
    oom_killed: bool
    stopped_by_host: StopReason | None = None


class ContainerFailed(Report):
    kind: Literal["failed"] = "failed"
    alloc_id: ReportedId
    reason: FailureReason
    detail: str = Field(default="", max_length=DETAIL_CHARS)


class ContainerStatus(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)  # see Event's

    alloc_id: ReportedId
    container_id: ReportedId
    running: bool
    exit_code: int | None = None
    oom_killed: bool = False


class ActualState(Report):
    """Everything hostd runs, re-sent after every (re)connect: JetStream may have lost reports."""

    kind: Literal["state"] = "state"
    # The snapshot position hostd reconciled to: allocations placed later may
    # not have their container yet, and must not be judged by this report.
    as_of_position: int = Field(ge=0)
    containers: list[ContainerStatus] = Field(max_length=MAX_LISTED)
    #: Allocations with no container yet because their image is being pulled: not missing.
    pulling: list[ReportedId] = Field(default_factory=list, max_length=MAX_LISTED)


class ContainerPulling(Report):
    """The allocation's image is being pulled: sent when the pull starts and every few seconds.

    `total_bytes` is what the layers being fetched announced so far (0 until known);
    both count compressed bytes as the registry sends them.
    """

    kind: Literal["pulling"] = "pulling"
    alloc_id: ReportedId
    image: ReportedImage
    done_bytes: int = Field(default=0, ge=0)
    total_bytes: int = Field(default=0, ge=0)


class UsageSample(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)  # see Event's

    alloc_id: ReportedId
    cpu_total_ns: int
    memory_bytes: int
    pids: int
    disk_bytes: int | None = None


class UsageSampled(Report):
    kind: Literal["usage"] = "usage"
    samples: list[UsageSample] = Field(max_length=MAX_LISTED)


class EngineStatus(Report):
    kind: Literal["engine"] = "engine"
    available: bool
    detail: str = Field(default="", max_length=DETAIL_CHARS)


class ImagesHeld(Report):
    """Every image the engine holds, by normalised name (tags and digests); sent after each
    registration and whenever the set changes. At most MAX_IMAGES_HELD names (host_images.bounded)."""

    kind: Literal["images"] = "images"
    images: list[ReportedImage] = Field(max_length=MAX_IMAGES_HELD)


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
