"""The HTTP API's request and response bodies; their JSON schemas feed /v1/openapi.json."""

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from potluck.contracts.capacity import MIN_CPUS
from potluck.kernel.durations import Duration
from potluck.kernel.sizes import Size
from potluck.readmodels.allocations import AllocationState, AllocationStatus

MAX_LIFETIME_S = 7 * 86400
_SSH_KEY = re.compile(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-\S+) [A-Za-z0-9+/=]+( .*)?$")
_LABEL = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CreateAllocation(Body):
    cpus: float = Field(
        ge=MIN_CPUS, le=256, description=f"CPU cores, fractions allowed down to {MIN_CPUS} (Docker's floor)."
    )
    memory: Size = Field(ge=16 << 20, le=1 << 44, description="Memory: bytes, or e.g. 512M, 4G.")
    disk: Size = Field(
        default=1 << 30, ge=16 << 20, le=1 << 46, description="Writable disk: bytes, or e.g. 1G."
    )
    image: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")
    ssh_keys: list[str] = Field(default_factory=list, max_length=16, description="OpenSSH public keys.")
    lifetime: Duration = Field(default=3600.0, gt=0, le=MAX_LIFETIME_S, description="Seconds, or e.g. 2h.")
    command: list[str] | None = Field(default=None, max_length=256)
    env: dict[str, str] = Field(default_factory=dict, max_length=128)
    constraints: dict[str, str] = Field(
        default_factory=dict, max_length=16, description="Host labels that must match."
    )
    network: bool = Field(default=False, description="Outbound network, where the member allows it.")
    queue_timeout: Duration = Field(
        default=600.0, ge=0, le=86400, description="How long to wait as pending for capacity."
    )

    @field_validator("ssh_keys")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if not _SSH_KEY.match(key.strip()):
                raise ValueError(
                    "each key must be one OpenSSH public key line, e.g. 'ssh-ed25519 AAAA... me'"
                )
        return [k.strip() for k in keys]

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, labels: dict[str, str]) -> dict[str, str]:
        for key in labels:
            if not _LABEL.match(key):
                raise ValueError(f"label name {key!r} must be 1-63 of [A-Za-z0-9_.-]")
        return labels

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        for key in env:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                raise ValueError(f"environment variable name {key!r} is not valid")
        return env


class ExtendAllocation(Body):
    by: Duration = Field(gt=0, le=MAX_LIFETIME_S, description="Seconds to add, or e.g. 1h.")


class Allocation(Body):
    id: str
    user: str
    state: AllocationStatus
    host_id: str | None
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
    reason: str | None

    @classmethod
    def of(cls, state: AllocationState) -> "Allocation":
        spec = state.spec
        return cls(
            id=state.alloc_id,
            user=state.user,
            state=state.status,
            host_id=state.host_id,
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
        )


class AllocationList(Body):
    allocations: list[Allocation]


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


class Error(Body):
    code: str = Field(description="Stable UPPER_SNAKE code for programs.")
    message: str = Field(description="What went wrong and what to do, for people.")
    field: str | None = None


class ErrorBody(Body):
    error: Error
