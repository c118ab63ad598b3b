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

from potluck.kernel.json_values import shown
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
        raise ValueError(f"expected a duration like 90s, 15m or 2h, not {shown(value)}")
    if len(value) > MAX_TEXT:
        raise ValueError(f"a duration is at most {MAX_TEXT} characters, e.g. 2h; this one has {len(value)}")
    match = _DURATION.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{shown(value.strip())} is not a duration; write e.g. 90s, 15m, 2h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2)]


Duration = Annotated[float, BeforeValidator(parse_duration)]


#: What may follow a number worth each factor of seconds, as a pattern.
_SUFFIXES = {1: "(?: ?s)?", 60: " ?m", 3600: " ?h", 86400: " ?d"}
_WRITTEN = (
    "write a duration as e.g. 90s, 15m or 1.5h: no spaces around it, no leading zeros,"
    " no fraction on the largest amount (7d, not 7.0d)"
)


class DurationBetween:
    """Pydantic metadata for a duration of lo..hi seconds (lo at least 1; `zero`: or 0):
    `Annotated[float, DurationBetween(lo, hi)]`. A number, or a text of at most MAX_TEXT
    characters whose pattern the JSON schema publishes as the server checks it.

    Nothing between 0 and lo is taken: a lifetime of 1e-300 s ends before anything could start,
    and a wait or a keep that short is 0 in all but name. A field where 0 means something (no
    waiting, nothing kept) takes `zero`."""

    def __init__(self, lo: int, hi: int, *, zero: bool = False) -> None:
        self.lo, self.hi, self.zero = lo, hi, zero
        self.pattern = amount_in_range(lo, hi, _SUFFIXES, zero=zero, below_one_unit=True)
        self._compiled = re.compile(self.pattern)

    @property
    def bounds(self) -> str:
        """The values taken, for people: `0, or from 1 to 86400 seconds`."""
        span = f"from {self.lo:g} to {self.hi:g} seconds"
        return f"0, or {span}" if self.zero else span

    def parse(self, value: object) -> float:
        if isinstance(value, str) and len(value) <= MAX_TEXT and self._compiled.fullmatch(value):
            return parse_duration(value)
        seconds = parse_duration(value)  # type: ignore[arg-type]  # refuses what is not a duration at all
        if not (self.lo <= seconds <= self.hi or (self.zero and seconds == 0)):
            raise ValueError(f"the duration must be {self.bounds}, not {shown(value)}")
        if isinstance(value, str):
            raise ValueError(f"{shown(value)}: {_WRITTEN}")
        return seconds

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_before_validator_function(self.parse, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        choices: list[JsonSchemaValue] = [{"type": "number", "const": 0}] if self.zero else []
        choices += [
            {"type": "number", "minimum": self.lo, "maximum": self.hi},
            {"type": "string", "maxLength": MAX_TEXT, "pattern": self.pattern},
        ]
        return {"anyOf": choices}
