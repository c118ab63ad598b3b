"""Regular expressions for whole numbers in a range, written without leading zeros.

`integer_range(lo, hi)` matches exactly the decimal numerals of lo..hi. Sizes and
durations (sizes.py, durations.py) build from it the pattern a field publishes
in its JSON schema and checks on the server alike, so the two cannot disagree on
which text is in bounds. Each alternative is a fixed run of digit classes: no
two ways to match a text, nothing to backtrack over.
"""

__all__ = ["amount_in_range", "integer_range"]


def _digit_class(low: int, high: int) -> str:
    if low == high:
        return str(low)
    return f"[{low}-{high}]"


def _same_length(lo: str, hi: str) -> list[str]:
    """Alternatives for lo..hi, two numerals of one length (lo <= hi)."""
    if lo == hi:
        return [lo]
    if len(lo) == 1:
        return [_digit_class(int(lo), int(hi))]
    # Split at the first digit where they differ: a common prefix, then three parts.
    prefix = 0
    while lo[prefix] == hi[prefix]:
        prefix += 1
    common = lo[:prefix]
    lo_rest, hi_rest = lo[prefix:], hi[prefix:]
    tail = len(lo_rest) - 1
    out: list[str] = []
    low, high = int(lo_rest[0]), int(hi_rest[0])
    if lo_rest[1:] != "0" * tail:
        # lo_rest[0] followed by lo_rest[1:]..99..9
        out += [common + lo_rest[0] + alt for alt in _same_length(lo_rest[1:], "9" * tail)]
        low += 1
    upper = hi_rest[1:] != "9" * tail
    if upper:
        high -= 1
    if low <= high:  # the first digits in between, followed by anything
        out.append(common + _digit_class(low, high) + "[0-9]" * tail)
    if upper:
        # hi_rest[0] followed by 00..0..hi_rest[1:]
        out += [common + hi_rest[0] + alt for alt in _same_length("0" * tail, hi_rest[1:])]
    return out


def integer_range(lo: int, hi: int) -> str:
    """A regular expression (no anchors, one group of alternatives) for the numerals lo..hi."""
    if lo < 0 or hi < lo:
        raise ValueError(f"need 0 <= lo <= hi, not {lo}..{hi}")
    alternatives: list[str] = []
    low = lo
    while low <= hi:
        # Up to the largest numeral with as many digits as `low`.
        top = min(hi, 10 ** len(str(low)) - 1)
        alternatives += _same_length(str(low), str(top))
        low = top + 1
    return "(?:" + "|".join(alternatives) + ")"


_FRACTION = "(?:\\.[0-9]{1,6})?"
_ZERO = "0(?:\\.0{1,6})?"
#: The most digits a fraction may have.
_FRACTION_DIGITS = 6


def _digits_at_least(least: int, width: int) -> list[str]:
    """Alternatives for the strings of `width` digits (leading zeros allowed) worth `least` or more."""
    bound = str(least).zfill(width)
    out = []
    for i, digit in enumerate(bound):
        if digit != "9":
            out.append(bound[:i] + _digit_class(int(digit) + 1, 9) + "[0-9]" * (width - i - 1))
    return [*out, bound]


def _fraction_at_least(least: int) -> str | None:
    """A pattern for the fractions of 1..6 digits worth at least `least` millionths; None if
    none is (`least` past 999999)."""
    if least >= 10**_FRACTION_DIGITS:
        return None
    alternatives = []
    for width in range(1, _FRACTION_DIGITS + 1):
        scale = 10 ** (_FRACTION_DIGITS - width)
        smallest = -(-least // scale)  # the least `width`-digit fraction worth `least` millionths
        if smallest < 10**width:
            alternatives += _digits_at_least(smallest, width)
    return "(?:" + "|".join(alternatives) + ")"


def amount_in_range(
    lo: int, hi: int, suffixes: dict[int, str], *, zero: bool = False, below_one_unit: bool = False
) -> str:
    """An anchored pattern for `<number><suffix>` texts worth lo..hi base units (lo >= 1).

    `suffixes` maps each factor to the pattern of what may follow a number worth
    that many base units (its unit's spellings, the space before them). A number
    is a whole numeral without leading zeros, or with a fraction of up to 6
    digits where the whole part alone is in bounds and below the top: `1.5G` is
    in, `0.5G` (write `512M`) is not. `below_one_unit` lets in fractions of one
    unit worth lo or more too (`0.5h`, not `0.0001h`); `zero` lets in a zero
    (`0`, `0.0`, `0m`) besides lo..hi.
    """
    if lo < 1:
        raise ValueError(f"the lower bound is at least 1 (`zero` adds 0), not {lo}")
    alternatives = []
    for factor, suffix in sorted(suffixes.items()):
        first, top = -(-lo // factor), hi // factor
        numbers = [_ZERO] if zero else []
        if below_one_unit and first == 1:
            # 0.F units, worth lo or more: F millionths of `factor` at least lo.
            fraction = _fraction_at_least(-(-lo * 10**_FRACTION_DIGITS // factor))
            if fraction is not None:
                numbers.append("0\\." + fraction)
        if first <= top - 1:
            numbers.append(integer_range(first, top - 1) + _FRACTION)
        if first <= top:
            numbers.append(str(top))
        if numbers:
            alternatives.append("(?:" + "|".join(numbers) + ")" + suffix)
    return "^(?:" + "|".join(alternatives) + ")$"
