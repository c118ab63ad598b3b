"""Whose code an exception came out of: the packages its traceback passed through.

An OSError or a TimeoutError says nothing of where it arose: the pool's database away (a
connection refused, a pool's acquire timed out) and a file this process could not write (a
full disk, a path that is a file) are instances of the same classes. The frames the exception
was raised through tell them apart.
"""

from collections.abc import Collection

__all__ = ["raised_in"]

#: How many `raise ... from` causes deep an exception is looked through (asyncio.timeout's
#: TimeoutError is raised from the CancelledError of the call it cut short).
_CAUSES = 4


def raised_in(exc: BaseException, packages: Collection[str]) -> bool:
    """Whether `exc`, or an exception it was raised from, passed through a frame of one of
    `packages` (top-level names: "asyncpg", "nats"). An exception never raised has no frames."""
    current: BaseException | None = exc
    for _ in range(_CAUSES):
        if current is None:
            break
        frame = current.__traceback__
        while frame is not None:
            module = frame.tb_frame.f_globals.get("__name__")
            if isinstance(module, str) and module.partition(".")[0] in packages:
                return True
            frame = frame.tb_next
        current = current.__cause__
    return False
