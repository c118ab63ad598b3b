"""CPU, memory and disk as one value: donated by a member, asked for by a user, reserved on a host."""

from pydantic import BaseModel, ConfigDict, Field

#: The smallest CPU share Docker can enforce. Less reads back as NanoCpus=0: no limit at all.
MIN_CPUS = 0.01


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
