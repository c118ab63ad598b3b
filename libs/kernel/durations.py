"""Durations as people write them: `90`, `90s`, `15m`, `2h`, `1d` (seconds when bare)."""

import re
from typing import Annotated

from pydantic import BeforeValidator

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(value: str | float | int) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like 90s, 15m or 2h, not {value!r}")
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a duration; write e.g. 90s, 15m, 2h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2)]


Duration = Annotated[float, BeforeValidator(parse_duration)]
