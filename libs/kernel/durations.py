"""Durations as people write them: `90`, `90s`, `15m`, `2h`, `1d` (seconds when bare).

As sizes.py: linear, bounded parsing of text from strangers (at most MAX_TEXT
characters, 9 digits and 6 decimals, one space before the unit), and numbers
must be finite.
"""

import math
import re
from typing import Annotated

from pydantic import BeforeValidator

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d{1,9}(?:\.\d{1,6})?) ?([smhd]?)")
#: The longest duration text accepted (anything longer is refused before it is matched).
MAX_TEXT = 24


def parse_duration(value: str | float | int) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError("a duration in seconds must be a finite number") from None
        if not math.isfinite(seconds):
            raise ValueError("a duration in seconds must be a finite number")
        return seconds
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like 90s, 15m or 2h, not {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise ValueError(f"a duration is at most {MAX_TEXT} characters, e.g. 2h; this one has {len(value)}")
    match = _DURATION.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value.strip()!r} is not a duration; write e.g. 90s, 15m, 2h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2)]


Duration = Annotated[float, BeforeValidator(parse_duration)]
