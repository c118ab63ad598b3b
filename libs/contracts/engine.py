"""The facts of a member's Docker engine that the pool records and decides on."""

from pydantic import BaseModel, ConfigDict


class EngineFacts(BaseModel):
    """What hostd reads off its Docker engine at start and sends when it registers."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)  # see Event's

    version: str
    api_version: str = ""
    cgroup_version: str
    storage_driver: str
    disk_quota_supported: bool
    #: Whether the engine applies its default seccomp profile (older hostds did not say).
    seccomp: bool = False
