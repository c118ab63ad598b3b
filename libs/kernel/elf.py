"""Is a file a static executable? The test image and hostd's in-container helper both need one
that runs in any root filesystem, with no loader or libraries of the image's."""

from typing import Literal

__all__ = ["is_static_elf"]

PT_INTERP = 3


def is_static_elf(data: bytes) -> bool:
    """A 64-bit ELF executable without a program interpreter (PT_INTERP), judged from its first
    bytes (the header and program headers: 64 KiB is ample)."""
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    order: Literal["little", "big"] = "little" if data[5] == 1 else "big"
    phoff = int.from_bytes(data[32:40], order)
    phentsize = int.from_bytes(data[54:56], order)
    phnum = int.from_bytes(data[56:58], order)
    for i in range(phnum):
        start = phoff + i * phentsize
        if int.from_bytes(data[start : start + 4], order) == PT_INTERP:
            return False
    return True
