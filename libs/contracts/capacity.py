"""CPU, memory and disk as one value: donated by a member, asked for by a user, reserved on a host."""

from pydantic import BaseModel, ConfigDict, Field

#: The smallest CPU share Docker can enforce. Less reads back as NanoCpus=0: no limit at all.
MIN_CPUS = 0.01
#: The most memory or disk a host may donate: 8 PiB, far past any member's machine, and exact
#: as a float, which the scheduler's scores and the pages' sizes turn bytes into. A hostd
#: that claimed 10**400 bytes made every placement of the pool fail (OverflowError in the
#: scheduler's score) and the pool's pages with it.
MAX_DONATED_BYTES = 1 << 53


class Capacity(BaseModel):
    """CPU, memory and disk: what a member donates, or what an allocation asks for."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)  # see Event's

    cpus: float = Field(gt=0, le=1024)
    memory_bytes: int = Field(gt=0)
    disk_bytes: int = Field(gt=0)

    def fits_in(self, other: "Capacity") -> bool:
        return (
            self.cpus <= other.cpus + 1e-9
            and self.memory_bytes <= other.memory_bytes
            and self.disk_bytes <= other.disk_bytes
        )

    def __add__(self, other: "Capacity") -> "Capacity":
        return Capacity.model_construct(
            cpus=round(self.cpus + other.cpus, 6),
            memory_bytes=self.memory_bytes + other.memory_bytes,
            disk_bytes=self.disk_bytes + other.disk_bytes,
        )

    def __sub__(self, other: "Capacity") -> "Capacity":
        return Capacity.model_construct(
            cpus=round(self.cpus - other.cpus, 6),
            memory_bytes=self.memory_bytes - other.memory_bytes,
            disk_bytes=self.disk_bytes - other.disk_bytes,
        )


def donation_problem(donated: Capacity) -> str | None:
    """Why `donated` is more than a host may donate (MAX_DONATED_BYTES), or None."""
    for name in ("memory_bytes", "disk_bytes"):
        if getattr(donated, name) > MAX_DONATED_BYTES:
            return f"donated.{name}: at most {MAX_DONATED_BYTES} bytes (8 PiB) may be donated"
    return None


def bounded_donation(donated: Capacity) -> Capacity:
    """`donated` cut to what a host may donate: a registration logged before the bound was
    checked (the log is never rewritten) must not break the folds that read it."""
    if donation_problem(donated) is None:
        return donated
    return donated.model_copy(
        update={
            "memory_bytes": min(donated.memory_bytes, MAX_DONATED_BYTES),
            "disk_bytes": min(donated.disk_bytes, MAX_DONATED_BYTES),
        }
    )
