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


#: A fraction of 1..6 digits, at least one of them not zero.
_NONZERO_FRACTION = (
    "(?:" + "|".join("0" * n + "[1-9]" + (f"[0-9]{{0,{5 - n}}}" if n < 5 else "") for n in range(6)) + ")"
)
_FRACTION = "(?:\\.[0-9]{1,6})?"


def amount_in_range(lo: int, hi: int, suffixes: dict[int, str], *, exclusive_lo: bool = False) -> str:
    """An anchored pattern for `<number><suffix>` texts worth lo..hi base units.

    `suffixes` maps each factor to the pattern of what may follow a number worth
    that many base units (its unit's spellings, the space before them). A number
    is a whole numeral without leading zeros, or with a fraction of up to 6
    digits where the whole part alone is in bounds and below the top: `1.5G` is
    in, `0.5G` (write `512M`) is not. `exclusive_lo` (lo being 0) leaves out
    zero but lets in fractions of one unit, e.g. `0.5h`.
    """
    if exclusive_lo and lo != 0:
        raise ValueError("exclusive_lo is for a lower bound of 0")
    alternatives = []
    for factor, suffix in sorted(suffixes.items()):
        first, top = -(-lo // factor), hi // factor
        numbers = []
        if exclusive_lo:
            first = 1
            numbers.append("0\\." + _NONZERO_FRACTION)
        if first <= top - 1:
            numbers.append(integer_range(first, top - 1) + _FRACTION)
        if first <= top:
            numbers.append(str(top))
        if numbers:
            alternatives.append("(?:" + "|".join(numbers) + ")" + suffix)
    return "^(?:" + "|".join(alternatives) + ")$"
