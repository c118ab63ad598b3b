"""What hostd and the member CLI say to the registry over NATS (not logged as such).

Subjects end in the host id, and NATS permissions let a host publish only on
its own, so the registry takes the host's identity from the subject and never
from a payload field.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from potluck.registry.events import Capacity, EngineFacts

REGISTER = "potluck.rpc.registry.register"
CONTROL = "potluck.rpc.registry.control"
STATUS = "potluck.rpc.registry.status"
HEARTBEAT = "potluck.hb"
#: Operators and services only: hosts may publish solely on subjects ending in their id.
LIST_HOSTS = "potluck.rpc.registry.hosts"


def host_subject(prefix: str, host_id: str) -> str:
    return f"{prefix}.{host_id}"


def host_of(subject: str) -> str:
    """The host id NATS authorised: the subject's last token."""
    return subject.rsplit(".", 1)[-1]


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RegisterHost(Message):
    donated: Capacity
    labels: dict[str, str] = Field(default_factory=dict)
    allowed_images: list[str] = Field(default_factory=list)
    engine: EngineFacts
    hostd_version: str
    ssh_host_key: str = ""


class ControlHost(Message):
    action: Literal["pause", "resume", "drain", "deregister"]
    grace_s: float = Field(default=300.0, ge=0, le=7 * 86400)


class Heartbeat(Message):
    hostd_version: str = ""
    containers: int = Field(default=0, ge=0)


class Reply(Message):
    ok: bool
    error: dict[str, Any] | None = None
    data: dict[str, Any] = Field(default_factory=dict)
