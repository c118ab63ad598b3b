"""Whether root in a container is root on the machine, read off `docker info`'s SecurityOptions."""

import pytest

from potluck.contracts.engine import EngineFacts, user_namespaces

SECCOMP = "name=seccomp,profile=builtin"
CGROUPNS = "name=cgroupns"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ([SECCOMP, CGROUPNS], "off"),
        ([], "off"),
        ([SECCOMP, "name=userns", CGROUPNS], "remap"),
        (["name=seccomp,profile=builtin", "name=rootless", CGROUPNS], "rootless"),
        (["name=rootless", "name=userns"], "rootless"),
        # A profile or option merely mentioning the word is not the engine remapping.
        (["name=seccomp,profile=/etc/userns.json"], "off"),
    ],
)
def test_security_options_name_the_user_namespaces(options: list[str], expected: str) -> None:
    """Tried: the SecurityOptions engines give (plain, userns-remap, rootless, a profile path
    holding the word). Must hold: only a `name=userns` or `name=rootless` entry says root is
    remapped, and rootless wins over a remap."""
    assert user_namespaces(options) == expected


def test_facts_from_a_hostd_older_than_the_field_say_it_was_unreported() -> None:
    """Tried: engine facts as a hostd before user namespaces were reported sent them (also in
    HostRegistered events already logged). Must hold: they decode, as `unreported`, not `off`:
    nobody asked that engine."""
    old = EngineFacts.model_validate_json(
        '{"version": "27", "cgroup_version": "2", "storage_driver": "overlay2",'
        ' "disk_quota_supported": false, "seccomp": true}'
    )
    assert old.user_namespaces == "unreported"
