"""Which hostds the pool's services work with: the contract version both sides speak.

Messages and events are read strictly (`extra="forbid"`): a field its reader does not know
is an error, not dropped, for a dropped field may be a limit the reader had to enforce. So a
change to what hostd and the central services exchange is one an older peer cannot read,
either way: an older hostd cannot read a newer allocator's desired state, an older allocator
drops a newer hostd's reports. Rather than each side failing on the first message it cannot
read, and saying so in that message's terms, both speak a numbered contract:

- hostd names its `CONTRACT_VERSION` when it registers (`RegisterHost.contract`);
- the registry refuses a hostd of another contract (`CONTRACT_MISMATCH`), saying which side to
  upgrade, and records the contract of those it accepts (`HostRegistered.contract`);
- placement skips a host registered under another contract than the allocator's (a hostd that
  kept running while the central services were upgraded): nothing is placed where it could
  not be read.

tests/unit/test_contract_version.py holds the number to the contracts' schemas: a change to
any of them fails it until the version is raised (or the change shown not to cross between
hostd and the services).
"""

from pydantic import ValidationError

__all__ = ["CONTRACT_VERSION", "FIRST_CONTRACT", "mismatch", "unknown_fields"]

#: The contracts of this code base. Raise it with any change an older peer could not read.
CONTRACT_VERSION = 4

#: The contract of hostds and registrations from before the number existed (what they spoke).
FIRST_CONTRACT = 1


def mismatch(hostd: int, pool: int) -> str:
    """Why a hostd of contract `hostd` cannot work with services of contract `pool`, and what to do."""
    if hostd < pool:
        return (
            f"this hostd speaks contract {hostd} and the pool's services {pool}: upgrade Potluck "
            "on this machine (git pull && ops/setup), then restart hostd"
        )
    return (
        f"this hostd speaks contract {hostd} and the pool's services {pool}: the pool's services "
        "are older; its operator upgrades them first (README: Upgrading), and this hostd then "
        "registers by itself"
    )


def unknown_fields(exc: ValidationError) -> list[str]:
    """The fields of a message that its reader does not know: the sign of a newer writer."""
    return [
        ".".join(str(part) for part in error["loc"])
        for error in exc.errors()
        if error["type"] == "extra_forbidden"
    ]
