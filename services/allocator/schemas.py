"""The HTTP API's request and response bodies; their JSON schemas feed /v1/openapi.json."""

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from potluck.allocator.conditions import ConditionCause, ConditionState, condition_of
from potluck.allocator.waiting import Standing, WaitingReason
from potluck.contracts.allocation_events import OnPreempt
from potluck.contracts.capacity import MIN_CPUS
from potluck.contracts.host_labels import LABEL_NAME, MAX_LABEL_VALUE
from potluck.contracts.image_reference import REFERENCE_PATTERN
from potluck.contracts.job_events import MAX_KEEP_FOR_S
from potluck.kernel.durations import DurationBetween
from potluck.kernel.sizes import SizeBetween
from potluck.readmodels.allocations import AllocationState, AllocationStatus
from potluck.readmodels.hosts import HostState

MAX_LIFETIME_S = 7 * 86400
# Patterns are published in the JSON schema as they are checked here, with re.fullmatch: written
# for both dialects (ECMA 262 and Python's), so the schema and the server agree on every text.
SSH_KEY = (
    r"^(?:ssh-(?:ed25519|rsa|dss)|ecdsa-sha2-nistp(?:256|384|521)|sk-[A-Za-z0-9@.-]+)"
    r" [A-Za-z0-9+/]+={0,2}(?: [^\r\n\u0000]*)?$"
)
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,255}$"
#: Free text: anything but NUL, which neither Postgres' JSON nor a process' argv or environment holds.
TEXT = r"^[^\u0000]*$"
#: The longest OpenSSH public key line accepted (a 16384-bit RSA key is about 2.8 KB).
MAX_KEY_TEXT = 8192
# Bounds of the fields (the JSON schema publishes them; the parsers check exactly those).
Memory = Annotated[int, SizeBetween(16 << 20, 1 << 44)]
Disk = Annotated[int, SizeBetween(16 << 20, 1 << 46)]
#: The shortest duration a field takes besides 0 (which only a wait or a keep takes, meaning
#: none): anything shorter is 0 in all but name, or a lifetime that ends before its container
#: could start.
MIN_DURATION_S = 1
Lifetime = Annotated[float, DurationBetween(MIN_DURATION_S, MAX_LIFETIME_S)]
QueueTimeout = Annotated[float, DurationBetween(MIN_DURATION_S, 86400, zero=True)]
#: How long an ended allocation's or task's container may be kept: the jobs contract's bound,
#: in the whole seconds DurationBetween builds its pattern from.
KeepFor = Annotated[float, DurationBetween(MIN_DURATION_S, int(MAX_KEEP_FOR_S), zero=True)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Request(Body):
    """A request body: strict, so that what the schema calls a boolean or a number is one
    (no `0` for false, no `"1"` for 1); sizes and durations parse their own texts."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _matching(pattern: str, what: str) -> Callable[[str], str]:
    compiled = re.compile(pattern)

    def check(text: str) -> str:
        if not compiled.fullmatch(text):
            raise ValueError(f"{text[:40]!r} is not {what}")
        return text

    return check


Text = Annotated[
    str,
    AfterValidator(_matching(TEXT, "text without NUL characters")),
    WithJsonSchema({"type": "string", "pattern": TEXT}),
]


#: A program to run (a command's first word): not empty, no white space at either end, no NUL
#: (TEXT). An argv[0] of "" or " python3" would pass Docker's checks and fail only when the
#: container starts. The white space is spelled out: ECMA 262's `\s` and Python's differ.
_BLANK = r" \t\n\r\u000b\u000c"
PROGRAM = rf"^[^{_BLANK}\u0000](?:[^\u0000]*[^{_BLANK}\u0000])?$"
_PROGRAM = re.compile(PROGRAM)


def _runs_something(words: list[str]) -> list[str]:
    # Docker runs the image's own CMD for an empty command: not what someone who wrote one meant,
    # and for an allocation, leaving it out (interactive) is how to ask for something else.
    if not words:
        raise ValueError("give the program to run and its arguments, or leave `command` out")
    if not _PROGRAM.fullmatch(words[0]):
        raise ValueError(
            f"the command's first word, the program to run ({words[0][:40]!r}), is empty or has "
            'white space at an end: name the program first, e.g. ["python3", "train.py"] or '
            '["sh", "-c", "make && ./run"]'
        )
    return words


#: A command as Docker's argv: the program first, then its arguments (which may be empty).
Command = Annotated[
    list[Text],
    Field(
        max_length=256,
        json_schema_extra={"minItems": 1, "prefixItems": [{"type": "string", "pattern": PROGRAM}]},
    ),
    AfterValidator(_runs_something),
]


SshKey = Annotated[
    str,
    # Only its form: whether it holds a usable key is ssh_key_check's (a 422).
    AfterValidator(_matching(SSH_KEY, "one OpenSSH public key line, e.g. 'ssh-ed25519 AAAA... me'")),
    WithJsonSchema({"type": "string", "maxLength": MAX_KEY_TEXT, "pattern": SSH_KEY}),
    Field(max_length=MAX_KEY_TEXT),
]
ImageReference = Annotated[
    str,
    AfterValidator(
        _matching(
            REFERENCE_PATTERN,
            "an image reference: [registry[:port]/]repository[:tag][@digest], the repository in "
            "lowercase letters and digits separated by '/', '.', '_' or '-'",
        )
    ),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 255, "pattern": REFERENCE_PATTERN}),
    Field(min_length=1, max_length=255),
]


def _names_match(pattern: str, what: str) -> Callable[[dict[str, str]], dict[str, str]]:
    compiled = re.compile(pattern)

    def check(names: dict[str, str]) -> dict[str, str]:
        for name in names:
            if not compiled.fullmatch(name):
                raise ValueError(f"{what} {name[:40]!r} must match {pattern}")
        return names

    return check


#: Environment variables by name, and host labels by name, as request bodies take them (a
#: label's name as hosts carry it: potluck.contracts.host_labels, which bounds hosts' labels).
EnvVars = Annotated[
    dict[str, Text],
    AfterValidator(_names_match(ENV_NAME, "environment variable name")),
    Field(json_schema_extra={"propertyNames": {"pattern": ENV_NAME}}),
]

#: A constraint's value: at most as long as a host's label value may be (a longer one could
#: never match).
LabelValue = Annotated[
    str,
    Field(max_length=MAX_LABEL_VALUE),
    AfterValidator(_matching(TEXT, "text without NUL characters")),
    WithJsonSchema({"type": "string", "maxLength": MAX_LABEL_VALUE, "pattern": TEXT}),
]
HostLabels = Annotated[
    dict[str, LabelValue],
    AfterValidator(_names_match(LABEL_NAME, "label name")),
    Field(json_schema_extra={"propertyNames": {"pattern": LABEL_NAME}}),
]


class CreateAllocation(Request):
    cpus: float = Field(
        ge=MIN_CPUS, le=256, description=f"CPU cores, fractions allowed down to {MIN_CPUS} (Docker's floor)."
    )
    memory: Memory = Field(description="Memory: bytes, or e.g. 512M, 4G.")
    disk: Disk = Field(
        default=1 << 30,
        description="Disk: bytes, or e.g. 1G. Its files may take all of it but its output log's "
        "part (a 16th, at most 30 MiB).",
    )
    image: ImageReference = Field(
        description="An image reference as `docker pull` takes it: [registry/]repository[:tag][@digest]."
    )
    ssh_keys: list[SshKey] = Field(default_factory=list, max_length=16, description="OpenSSH public keys.")
    lifetime: Lifetime = Field(default=3600.0, description="Seconds (at least 1), or e.g. 2h.")
    command: Command | None = Field(
        default=None,
        description=(
            "The program and its arguments: a task, which ends when it ends. "
            "Absent: interactive, up until released or expired."
        ),
    )
    env: EnvVars = Field(default_factory=dict, max_length=128)
    constraints: HostLabels = Field(
        default_factory=dict, max_length=16, description="Host labels that must match."
    )
    network: bool = Field(default=False, description="Outbound network, where the member allows it.")
    queue_timeout: QueueTimeout = Field(
        default=600.0,
        description="How long to wait as pending for capacity: 0 (refused at once if no host has "
        "room now), or at least 1 second.",
    )
    on_preempt: OnPreempt = Field(
        default="wait",
        description=(
            "When its host's owner policy keeps it frozen longer than the member allows "
            "(`frozen_too_long`): `wait` stays frozen until the host resumes, `release` ends it."
        ),
    )
    keep_for: KeepFor = Field(
        default=0.0,
        description=(
            "Seconds (or e.g. 1h) its stopped container is kept once its command exited, for "
            "`potluck cp ALLOC:PATH` and `potluck logs`; its disk stays reserved until then. "
            "0: removed at once; else at least 1 second."
        ),
    )


class ExtendAllocation(Request):
    by: Lifetime = Field(description="Seconds to add (at least 1), or e.g. 1h.")


class PullProgress(Body):
    """How far the host's pull of the image has come, as last logged (compressed bytes)."""

    done_bytes: int = Field(description="Bytes fetched so far.")
    total_bytes: int = Field(description="Bytes the layers being fetched announced so far; 0: not yet known.")


class PullFailureView(Body):
    """A host the allocation was sent back from because it could not get the image."""

    host_id: str
    reason: str = Field(description="`image_pull_failed`.")
    detail: str = Field(description="What the host said: which image, which registry, what went wrong.")


class Condition(Body):
    """What its host does to an active allocation now (absent when the host runs it normally)."""

    state: ConditionState = Field(
        description=(
            "`waiting_for_host`: the host is asleep or unreachable; the container resumes as it was "
            "when it returns; or its Docker engine stopped answering (cause `engine`): the container "
            "may have stopped with it, and is taken up again when the engine returns. "
            "`draining`: the host's member is taking it out of the pool; the "
            "container is stopped at `until`. `throttled`: the host's owner policy gives the pool "
            "less CPU there. `frozen`: the member paused the host, or the owner policy paused the "
            "pool's containers there."
        )
    )
    cause: ConditionCause = Field(
        description=(
            "`asleep`, `unreachable` or `engine` (waiting); `member` (the member drains or paused the host); "
            "`owner` (the owner uses the machine), `battery`, `heat` or `window` (the member's "
            "hours) for throttled and frozen."
        )
    )
    reason: str = Field(description="Why, for people (the owner policy's own words when it gave some).")
    since: datetime | None = Field(description="Since when the host is in this state.")
    share_cpus: float | None = Field(
        description="While throttled: the CPUs the pool keeps on that host, all its allocations together."
    )
    until: datetime | None = Field(
        default=None,
        description="While draining: when the container is stopped (the end of the drain's grace).",
    )


class Waiting(Body):
    """Why a pending allocation waits, as placing it would decide now (waiting.py)."""

    reason: WaitingReason = Field(
        description=(
            "`no_free_capacity`: a host that takes work could hold it once it frees capacity. "
            "`no_schedulable_host`: only hosts that are away, paused, draining or frozen by their "
            "owner, or whose Docker engine stopped answering (or whose hostd awaits an upgrade), "
            "could. `no_host_registered`: the pool has no "
            "host at all; it waits for one to join. `placing`: a host has room now; the "
            "allocator's next look places it. "
            "`refusing`: no host could hold it any more; the allocator's next look refuses it."
        )
    )
    message: str = Field(description="The same, for people.")
    position: int = Field(
        description=(
            "Its place in the fair queue, 1 first: users are served in turn, each user's requests in "
            "the order asked; a request that does not fit lets the next one go."
        )
    )
    queue_length: int = Field(description="How many allocations wait, everyone's.")


class FrozenTooLong(Body):
    """Its host's owner policy kept it frozen past the member's limit (the last time it did)."""

    frozen_since: datetime = Field(description="When the host froze.")
    frozen_s: float = Field(description="How long it had been frozen when this was noticed.")
    max_frozen_s: float = Field(description="The member's limit.")
    marked_at: datetime = Field(description="When this was noticed.")


class Allocation(Body):
    id: str
    user: str
    state: AllocationStatus
    host_id: str | None
    host_name: str | None = Field(
        default=None,
        description="Its host's name, as the host was enrolled (what `--constraint name=...` selects); "
        "null while it has no host.",
    )
    cpus: float
    memory: int
    disk: int
    image: str
    command: list[str] | None
    ssh_keys: list[str]
    network: bool
    constraints: dict[str, str]
    created_at: datetime | None
    expires_at: datetime | None
    exit_code: int | None
    oom_killed: bool
    reason: str | None = Field(
        description=(
            "Why it ended, when it was refused, failed, lost (e.g. `host lost`, or who revoked the "
            "host and why), released by the allocator (frozen too long) or stopped by its host "
            "(exited, `host drained`)."
        )
    )
    detail: str | None = Field(default=None, description="What went wrong, when it failed or was refused.")
    pull: PullProgress | None = Field(
        default=None, description="Set once the host began pulling the image (state `pulling`)."
    )
    failed_on: list[PullFailureView] = Field(
        default_factory=list,
        description="Hosts that could not get the image, oldest first; it is placed on none of them again.",
    )
    on_preempt: OnPreempt = Field(
        default="wait", description="What happens when it is frozen too long: `wait` or `release`."
    )
    condition: Condition | None = Field(
        default=None,
        description="Set while it is active on a host that is away, throttled or frozen; null otherwise.",
    )
    frozen_too_long: FrozenTooLong | None = Field(
        default=None,
        description="Set once its host kept it frozen past the member's limit (kept in the record).",
    )
    waiting: Waiting | None = Field(
        default=None, description="Set while it is pending: why it waits, and where it stands in the queue."
    )
    kept_until: datetime | None = Field(
        default=None,
        description=(
            "Its command exited and its stopped container (files, logs) is kept until then (`keep_for`); "
            "null once it is removed, or when it was not kept."
        ),
    )

    @classmethod
    def of(
        cls, state: AllocationState, host: HostState | None = None, standing: Standing | None = None
    ) -> "Allocation":
        """The allocation as its user sees it; `host`, its host's state, gives its condition, and
        `standing`, while it is pending, why it waits."""
        spec = state.spec
        condition = condition_of(state, host)
        mark = state.frozen_too_long
        return cls(
            id=state.alloc_id,
            user=state.user,
            state=state.status,
            host_id=state.host_id,
            host_name=host.name if host is not None else None,
            cpus=spec.resources.cpus,
            memory=spec.resources.memory_bytes,
            disk=spec.resources.disk_bytes,
            image=spec.image,
            command=spec.command,
            ssh_keys=list(spec.ssh_keys),
            network=spec.network,
            constraints=dict(state.constraints),
            created_at=state.requested_at,
            expires_at=state.expires_at,
            exit_code=state.exit_code,
            oom_killed=state.oom_killed,
            reason=state.reason,
            detail=state.detail,
            pull=None
            if state.pull_done_bytes is None
            else PullProgress(done_bytes=state.pull_done_bytes, total_bytes=state.pull_total_bytes or 0),
            failed_on=[
                PullFailureView(host_id=f.host_id, reason=f.reason, detail=f.detail)
                for f in state.pull_failures
            ],
            on_preempt=spec.on_preempt,
            condition=None
            if condition is None
            else Condition(
                state=condition.state,
                cause=condition.cause,
                reason=condition.reason,
                since=condition.since,
                share_cpus=condition.share_cpus,
                until=condition.until,
            ),
            frozen_too_long=None
            if mark is None
            else FrozenTooLong(
                frozen_since=mark.frozen_since,
                frozen_s=mark.frozen_s,
                max_frozen_s=mark.max_frozen_s,
                marked_at=mark.marked_at,
            ),
            kept_until=state.kept_until,
            waiting=None if standing is None else Waiting.model_validate(standing, from_attributes=True),
        )


class AllocationList(Body):
    """One page of the caller's allocations, oldest request first (paging.py)."""

    allocations: list[Allocation]
    next: str | None = Field(description="Send as `after` for the following page; null on the last page")


class HistoryEntry(Body):
    position: int
    version: int
    type: str
    recorded_at: datetime
    data: dict[str, object]


class History(Body):
    allocation_id: str
    events: list[HistoryEntry]


class CapacityFigures(Body):
    cpus: float
    memory: int
    disk: int


class PoolHost(Body):
    host_id: str
    name: str
    status: str
    labels: dict[str, str]
    donated: CapacityFigures
    reserved: CapacityFigures
    free: CapacityFigures


class Pool(Body):
    hosts: list[PoolHost]
    total: dict[Literal["donated", "reserved", "free"], CapacityFigures]


class PoolImage(Body):
    name: str = Field(description="Repository, as --image names it without the tag.")
    tags: list[str]


class PoolImages(Body):
    registry: str = Field(description="The pool registry's address, as image references write it.")
    prefix: str = Field(description="Your namespace: push and run images under this prefix.")
    images: list[PoolImage]
    library: list[PoolImage] = Field(
        default_factory=list,
        description="The pool's own images, which every user may run: `name` is what --image takes "
        "with a tag (NAME:TAG); every host gets them from the pool registry.",
    )


class Error(Body):
    code: str = Field(description="Stable UPPER_SNAKE code for programs.")
    message: str = Field(description="What went wrong and what to do, for people.")
    field: str | None = Field(
        default=None,
        description="The body's field (or the query parameter) the error is about, when there is one: "
        "also for a value the JSON parser cannot read as written (MALFORMED_JSON: NaN, a number a "
        "float cannot hold, a name given twice), the top-level field that holds it.",
    )


class ErrorBody(Body):
    error: Error
