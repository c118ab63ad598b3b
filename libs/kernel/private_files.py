"""Files only their owner reads: what holds a token, a key or a database URL's password.

A file made with the default umask (0644) in a state directory any local user may enter gives
its secrets to all of them. These make the file 0600 before a byte is written, and make one an
earlier version left readable 0600 again.
"""

import os
from pathlib import Path
from typing import BinaryIO

from potluck.kernel.atomic_files import replace_file

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
    """Replace `path` with `text` atomically, readable by its owner only from its first byte
    (atomic_files.replace_file)."""
    replace_file(path, text, mode=_PRIVATE, fsync=fsync)
