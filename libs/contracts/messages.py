"""What crosses the bus as requests and replies (not logged as such).

hostd and the member CLI ask the registry (RegisterHost, ControlHost, and
Heartbeat on its own subject); hostd asks the allocator for its desired state
(DesiredState) and for a token to pull an allocation's image from the pool
registry (ImageTokenRequest, answered with an ImageToken). Every request
subject ends in the host id (see subjects.py).
"""

from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from potluck.contracts.allocation_events import AllocationSpec
from potluck.contracts.capacity import Capacity, donation_problem
from potluck.contracts.compatibility import FIRST_CONTRACT
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import PolicyCause
from potluck.contracts.nkey import user_key_problem


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)  # see Event's


class RecordedMessage(Message):
    """A request whose texts go into the log as they are (a registration, a policy's reason).

    Postgres' JSON holds no NUL and no lone surrogate: refused here, the sender is told which
    field, where the append would have failed as the registry's own INTERNAL error. (Replies
    and the desired state are not walked: they are large, and recorded by nobody.)"""

    @model_validator(mode="after")
    def _storable_text(self) -> Self:
        problem = unstorable_field(self)
        if problem is not None:
            raise ValueError(problem)
        return self


def unstorable_field(model: BaseModel) -> str | None:
    """The first field of `model` holding text the log cannot store, and why ("detail: holds a
    NUL character"); None when the log can store all of it."""
    for name, value in model:
        problem = unstorable_text(value)
        if problem is not None:
            return f"{name}: {problem}"
    return None


def unstorable_text(value: Any) -> str | None:
    """What in `value` (a text, or texts in lists, dicts and models) the log cannot store."""
    if isinstance(value, str):
        if "\x00" in value:
            return "holds a NUL character"
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return "holds a lone surrogate"
        return None
    if isinstance(value, dict):
        items: list[Any] = [*value.keys(), *value.values()]
    elif isinstance(value, list | tuple):
        items = list(value)
    elif isinstance(value, BaseModel):
        items = [v for _, v in value]
    else:
        return None
    for item in items:
        problem = unstorable_text(item)
        if problem is not None:
            return problem
    return None


#: The longest text of an engine's facts (versions, driver names) a registration may carry.
ENGINE_FACT_CHARS = 128
#: An image pattern a member allows, as hostd.toml's `allowed_images` holds one.
ImagePattern = Annotated[str, Field(max_length=512)]


class RegisterHost(RecordedMessage):
    """What a hostd registers with; all of it goes into the HostRegistered event, so each text
    is bounded (labels by potluck.contracts.host_labels, checked where the registry decides)."""

    donated: Capacity
    labels: dict[str, str] = Field(default_factory=dict)
    allowed_images: list[ImagePattern] = Field(default_factory=list, max_length=256)
    #: The member lets containers that ask for a network run here (hostd's `allow_network`).
    allow_network: bool = False
    engine: EngineFacts
    hostd_version: str = Field(max_length=64)
    ssh_host_key: str = Field(default="", max_length=16_384)
    #: The contract hostd speaks (potluck.contracts.compatibility); hostds from before it spoke the first.
    contract: int = Field(default=FIRST_CONTRACT, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _donation_bounded(self) -> Self:
        problem = donation_problem(self.donated)
        if problem is not None:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _engine_facts_bounded(self) -> Self:
        # EngineFacts is also part of the logged HostRegistered, whose old events must still
        # decode: bounded here, where a registration is taken, not in the facts themselves.
        for name, value in self.engine:
            if isinstance(value, str) and len(value) > ENGINE_FACT_CHARS:
                raise ValueError(f"engine.{name}: at most {ENGINE_FACT_CHARS} characters")
        return self


#: The longest grace a drain (or a leave's drain) may give running work: a week.
MAX_GRACE_S = 7 * 86400


class ControlHost(Message):
    #: leave: for good (HostLeft); the host never registers again without a new enrollment.
    action: Literal["pause", "resume", "drain", "deregister", "leave"]
    grace_s: float = Field(default=300.0, ge=0, le=MAX_GRACE_S)


class SleepNotice(Message):
    """hostd's machine is about to sleep (`slept_s` None), or woke after `slept_s` seconds."""

    slept_s: float | None = Field(default=None, ge=0, le=10 * 365 * 86400)


class PolicyChanged(RecordedMessage):
    """The owner policy's new state here; the same state again records nothing."""

    state: Literal["normal", "throttled", "frozen"]
    cause: PolicyCause | None = None
    reason: str = Field(default="", max_length=500)
    share_cpus: float | None = Field(default=None, ge=0, le=1024)
    #: The member's `max_frozen_s`: allocations frozen longer are told (and released if they asked).
    #: Finite: JSON's Infinity would be decided as such here and logged as null (pydantic writes
    #: no Infinity into JSON), so the log would say other than what was decided. hostd writes
    #: a member's `inf` as null itself, so no hostd sends it.
    max_frozen_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class JoinRequest(Message):
    """A join token redeemed: `token` as `potluck ops hosts enroll` printed its secret part, and
    the public half of the NATS key pair the member's machine made for itself."""

    token: str = Field(min_length=16, max_length=256, repr=False)
    nkey: str = Field(min_length=56, max_length=56)

    @field_validator("nkey")
    @classmethod
    def _user_key(cls, nkey: str) -> str:
        # It goes into the NATS users file, which nats-server refuses whole for one bad key.
        problem = user_key_problem(nkey)
        if problem is not None:
            raise ValueError(problem)
        return nkey


class Heartbeat(Message):
    #: RegisterHost's bound: the registry logs a beat it cannot read, with what it holds.
    hostd_version: str = Field(default="", max_length=64)
    containers: int = Field(default=0, ge=0)


class Reply(Message):
    ok: bool
    error: dict[str, Any] | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class DesiredAllocation(Message):
    alloc_id: str
    spec: AllocationSpec
    expires_at: datetime | None = None
    #: The trace context its placement was logged in (traceparent, tracestate): a container that
    #: hostd starts from a snapshot (it was away when the placement was published) joins the
    #: request's trace as one started from the event does. Empty when the allocator could not say.
    trace: dict[str, str] = Field(default_factory=dict, max_length=2)


class DesiredState(Message):
    """What a host should run, as of log position `position`; later events follow on its consumer."""

    position: int
    allocations: list[DesiredAllocation]
    #: Ended allocations whose stopped containers the host keeps for their results and logs
    #: (AllocationExited.kept_until): neither started nor removed until AllocationDiscarded.
    kept: list[str] = Field(default_factory=list)


class ImageTokenRequest(Message):
    """A host asks to pull `image` for its allocation `alloc_id` from the pool registry."""

    alloc_id: str = Field(min_length=1, max_length=128)
    image: str = Field(min_length=1, max_length=512)


class ImageToken(Message):
    """A registry token that lets one host pull one repository of the pool registry, briefly.

    `reference` is what to pull when it is not the image itself: the pool library's copy of a
    Docker Hub name (`potluck-default:latest` as `<registry>/library/potluck-default:latest`),
    which the host then tags with the name the allocation asked for."""

    registry: str
    repository: str
    token: str = Field(repr=False)
    expires_in: int
    reference: str | None = None
