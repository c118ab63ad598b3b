"""A file replaced at once: readers see the old content or the new, never part of either."""

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["replace_file"]


def replace_file(path: Path, text: str, *, mode: int, fsync: bool = False) -> None:
    """Replace `path` with `text` atomically, with `mode` from its first byte (with `fsync`, on
    the disk before it replaces). Each writer has a temporary file of its own beside it, so
    writers at the same moment never take each other's; one that fails removes its own."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # 0600
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as out:
            out.write(text)
            if fsync:
                out.flush()
                os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
