"""Durations as people write them: `90`, `90s`, `15m`, `2h`, `1d` (seconds when bare).

As sizes.py: linear, bounded parsing of text from strangers (at most MAX_TEXT
characters, 9 digits and 6 decimals, one space before the unit), and numbers
must be finite.
"""

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from potluck.kernel.range_pattern import amount_in_range

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"([0-9]{1,9}(?:\.[0-9]{1,6})?) ?([smhd]?)")
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


#: What may follow a number worth each factor of seconds, as a pattern.
_SUFFIXES = {1: "(?: ?s)?", 60: " ?m", 3600: " ?h", 86400: " ?d"}
_WRITTEN = (
    "write a duration as e.g. 90s, 15m or 1.5h: no spaces around it, no leading zeros,"
    " no fraction on the largest amount (7d, not 7.0d)"
)


class DurationBetween:
    """Pydantic metadata for a duration of lo..hi seconds (above lo, when `exclusive_lo`):
    `Annotated[float, DurationBetween(lo, hi)]`. A number, or a text of at most MAX_TEXT
    characters whose pattern the JSON schema publishes as the server checks it."""

    def __init__(self, lo: int, hi: int, *, exclusive_lo: bool = False) -> None:
        self.lo, self.hi, self.exclusive_lo = lo, hi, exclusive_lo
        self.pattern = amount_in_range(lo, hi, _SUFFIXES, exclusive_lo=exclusive_lo)
        self._compiled = re.compile(self.pattern)

    def parse(self, value: object) -> float:
        if isinstance(value, str) and len(value) <= MAX_TEXT and self._compiled.fullmatch(value):
            return parse_duration(value)
        seconds = parse_duration(value)  # type: ignore[arg-type]  # refuses what is not a duration at all
        if seconds < self.lo or seconds > self.hi or (self.exclusive_lo and seconds == self.lo):
            above = "more than" if self.exclusive_lo else "at least"
            raise ValueError(
                f"the duration must be {above} {self.lo:g} and at most {self.hi:g} seconds, not {value!r}"
            )
        if isinstance(value, str):
            raise ValueError(f"{value!r}: {_WRITTEN}")
        return seconds

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_before_validator_function(self.parse, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        low = {"exclusiveMinimum": self.lo} if self.exclusive_lo else {"minimum": self.lo}
        return {
            "anyOf": [
                {"type": "number", **low, "maximum": self.hi},
                {"type": "string", "maxLength": MAX_TEXT, "pattern": self.pattern},
            ]
        }
