"""Importing a library while one of its optional dependencies is hidden from it.

Some libraries import an optional dependency at their own import whenever it is installed,
for a feature Potluck never uses: structlog loads rich and pygments for its exception
formatters, requests loads charset_normalizer to guess the encoding of answers that name
none. Each stays resident for the life of the process that imported the library, a member's
hostd included (issue 20). `None` in `sys.modules` is Python's own way to make an import
fail (ModuleNotFoundError, which such libraries catch); `hidden` puts it there for the
library's import only.
"""

import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["hidden"]


@contextmanager
def hidden(*modules: str) -> Iterator[None]:
    """`import` of each of `modules` (and of its submodules) fails inside the block; afterwards it
    works again. A module already loaded is left alone: hiding it would save nothing."""
    hid = [name for name in modules if name not in sys.modules]
    for name in hid:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in hid:
            if sys.modules.get(name) is None:
                del sys.modules[name]
