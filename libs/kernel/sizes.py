"""Sizes as people write them: `512M` and `4G` mean MiB and GiB, as in `docker run --memory`.

`K M G T` and `KiB MiB GiB TiB` are powers of 1024; `KB MB GB TB` powers of 1000;
a bare number is bytes.

Text from strangers is parsed in time linear in its length and bounded before
any matching: at most MAX_TEXT characters, a number of at most 15 digits (and 6
decimals), at most one space before the unit. The pattern has no two ways to
match the same text, so it cannot backtrack.
"""

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from potluck.kernel.json_values import shown
from potluck.kernel.range_pattern import amount_in_range

_UNITS = {
    "": 1,
    "B": 1,
    "K": 1 << 10,
    "KIB": 1 << 10,
    "KB": 10**3,
    "M": 1 << 20,
    "MIB": 1 << 20,
    "MB": 10**6,
    "G": 1 << 30,
    "GIB": 1 << 30,
    "GB": 10**9,
    "T": 1 << 40,
    "TIB": 1 << 40,
    "TB": 10**12,
}
_SIZE = re.compile(r"([0-9]{1,15}(?:\.[0-9]{1,6})?) ?([A-Za-z]{0,3})")
#: A number with more digits than a size may have, and maybe a unit: told apart from text that
#: is no size at all, so that its writer learns what is wrong with it.
_TOO_LONG = re.compile(r"[0-9]{16,}(?:\.[0-9]*)? ?[A-Za-z]{0,3}")
#: The longest size text accepted (anything longer is refused before it is matched).
MAX_TEXT = 32


def parse_size(value: str | int | float) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON's 68719476735.0 is an integer too
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size like 512M or 4G, not {shown(value)}")
    if len(value) > MAX_TEXT:
        raise ValueError(
            f"a size is at most {MAX_TEXT} characters, e.g. 512M or 4G; this one has {len(value)}"
        )
    match = _SIZE.fullmatch(value.strip())
    unit = match.group(2).upper() if match else ""
    if match is None and _TOO_LONG.fullmatch(value.strip()):
        raise ValueError(
            f"{shown(value)} is too large for a size: at most 15 digits before a unit; write e.g. 512G or 4T"
        )
    if match is None or unit not in _UNITS:
        raise ValueError(f"{shown(value)} is not a size; write e.g. 512M, 4G or 1073741824")
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(n: int) -> str:
    for unit, factor in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= factor and n % (factor // 1024 or 1) == 0:
            value = n / factor
            return f"{value:g}{unit}"
    return str(n)


Size = Annotated[int, BeforeValidator(parse_size)]


def _spelled(unit: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" for c in unit)


#: What may follow a number worth each factor, as a pattern: units in any case, one space before.
_SUFFIXES = {
    factor: "(?: ?(?:" + "|".join(_spelled(u) for u in units) + "))" + ("?" if factor == 1 else "")
    for factor, units in (
        (1, ["B"]),
        (1 << 10, ["K", "KiB"]),
        (10**3, ["KB"]),
        (1 << 20, ["M", "MiB"]),
        (10**6, ["MB"]),
        (1 << 30, ["G", "GiB"]),
        (10**9, ["GB"]),
        (1 << 40, ["T", "TiB"]),
        (10**12, ["TB"]),
    )
}


_WRITTEN = (
    "write a size as e.g. 512M or 1.5G: no spaces around it, no leading zeros,"
    " a fraction only above one whole unit (512M, not 0.5G) and not on the largest amount"
)


class SizeBetween:
    """Pydantic metadata for a size of lo..hi bytes: `Annotated[int, SizeBetween(lo, hi)]`.

    An integer, or a text of at most MAX_TEXT characters matching a pattern
    (range_pattern.py) that the JSON schema publishes as the server checks it, so a
    text is accepted exactly when the schema says it is valid.
    """

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi
        self.pattern = amount_in_range(lo, hi, _SUFFIXES)
        self._compiled = re.compile(self.pattern)

    def parse(self, value: object) -> int:
        if isinstance(value, str) and len(value) <= MAX_TEXT and self._compiled.fullmatch(value):
            return parse_size(value)
        size = parse_size(value)  # type: ignore[arg-type]  # refuses what is not a size at all
        if not self.lo <= size <= self.hi:
            raise ValueError(
                f"the size must be from {format_size(self.lo)} to {format_size(self.hi)}"
                f" ({self.lo} to {self.hi} bytes), not {shown(value)}"
            )
        if isinstance(value, str):
            raise ValueError(f"{shown(value)}: {_WRITTEN}")
        return size

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_before_validator_function(self.parse, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "anyOf": [
                {"type": "integer", "minimum": self.lo, "maximum": self.hi},
                {"type": "string", "maxLength": MAX_TEXT, "pattern": self.pattern},
            ]
        }
