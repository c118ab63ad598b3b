"""Requests the allocator answers over NATS (`potluck.rpc.allocator.<verb>.<host_id>`)."""

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from potluck.allocator.events import AllocationSpec

DESIRED = "potluck.rpc.allocator.desired"


class DesiredAllocation(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    alloc_id: str
    spec: AllocationSpec
    expires_at: datetime | None = None


class DesiredState(BaseModel):
    """What a host should run, as of log position `position`; later events follow on its consumer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    position: int
    allocations: list[DesiredAllocation]
