"""Files only their owner reads: what holds a token, a key or a database URL's password.

A file made with the default umask (0644) in a state directory any local user may enter gives
its secrets to all of them. These make the file 0600 before a byte is written, and make one an
earlier version left readable 0600 again.
"""

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

__all__ = ["append_private", "replace_private", "write_private"]

_PRIVATE = 0o600


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _PRIVATE)
    os.fchmod(fd, _PRIVATE)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def append_private(path: Path) -> BinaryIO:
    """`path` opened to append bytes (made if missing), readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, _PRIVATE)
    os.fchmod(fd, _PRIVATE)
    return os.fdopen(fd, "ab")


def replace_private(path: Path, text: str, *, fsync: bool = False) -> None:
    """Replace `path` with `text` atomically, readable by its owner only from its first byte (with
    `fsync`, on the disk before it replaces). Each writer has a temporary file of its own beside
    it, so writers at the same moment never take each other's; one that fails removes its own."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # 0600
    try:
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
