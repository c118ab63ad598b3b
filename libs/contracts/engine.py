"""The facts of a member's Docker engine that the pool records and decides on."""

from typing import Literal

from pydantic import BaseModel, ConfigDict

#: Whose root a container's root is: "off", the machine's; "remap" (dockerd's `userns-remap`)
#: and "rootless" (Docker run as a user), an unprivileged uid's; "unreported", a hostd older
#: than the field, which did not say.
UserNamespaces = Literal["unreported", "off", "remap", "rootless"]


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
    #: Whether root in a container is root on the machine (see UserNamespaces).
    user_namespaces: UserNamespaces = "unreported"


def user_namespaces(security_options: list[str]) -> UserNamespaces:
    """What `docker info`'s SecurityOptions (`name=seccomp,profile=builtin`, `name=userns`,
    `name=rootless`, ...) say of user namespaces: rootless first, since a rootless engine that
    also remaps still has no root of the machine's to give."""
    names = {
        part.partition("=")[2]
        for option in security_options
        for part in option.split(",")
        if part.startswith("name=")
    }
    if "rootless" in names:
        return "rootless"
    return "remap" if "userns" in names else "off"
