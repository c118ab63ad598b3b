"""Giving freed heap back to the member's machine.

Importing hostd's modules (compiled from source where no bytecode is cached) and its start-up
allocate and free far more than hostd then keeps; glibc's malloc holds the freed pages until
told otherwise, and they count in hostd's resident memory for its whole life (9 MB measured,
bench/README.md's footprint section). `malloc_trim(0)` returns them. Elsewhere than glibc
there is nothing to call and nothing is done.
"""

import asyncio
import ctypes
import ctypes.util
import gc
from collections.abc import Callable

import structlog

__all__ = ["release_freed_memory", "trim_heap_periodically"]

log = structlog.get_logger(__name__)


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_TRIM = _malloc_trim()


def release_freed_memory() -> bool:
    """Collect cycles, then hand malloc's free pages back to the system; False if it cannot."""
    gc.collect()
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


async def trim_heap_periodically(first_after_s: float = 30.0, every_s: float = 600.0) -> None:
    """Release freed memory once start-up has settled, then every `every_s` (sessions come and go)."""
    await asyncio.sleep(first_after_s)
    while True:
        if not release_freed_memory():
            log.debug("heap.trim_unavailable")
            return
        await asyncio.sleep(every_s)
