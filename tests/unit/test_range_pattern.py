"""Size and duration texts: the pattern the JSON schema publishes is exactly what the server takes.

What is tried: numerals against `integer_range` for random bounds; texts drawn from the
published patterns, and texts of the general grammar, against the fields' checks. What must
hold: a numeral matches exactly when it is in bounds; every text the pattern allows parses
to a value within the field's bounds, and every in-bounds integer is accepted.
"""

import re
from collections.abc import Callable

import jsonschema_rs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.kernel.durations import DurationBetween
from potluck.kernel.range_pattern import integer_range
from potluck.kernel.sizes import SizeBetween

MEMORY = SizeBetween(16 << 20, 1 << 44)
LIFETIME = DurationBetween(1, 7 * 86400)
QUEUE = DurationBetween(1, 86400, zero=True)


@given(st.integers(0, 10**12), st.integers(0, 10**12), st.integers(0, 3 * 10**12))
def test_integer_range_matches_exactly_the_numerals_in_bounds(a: int, b: int, n: int) -> None:
    lo, hi = min(a, b), max(a, b)
    pattern = re.compile(integer_range(lo, hi))
    for candidate in (n, lo, hi, lo - 1, hi + 1):
        if candidate >= 0:
            assert bool(pattern.fullmatch(str(candidate))) == (lo <= candidate <= hi)
    assert not pattern.fullmatch("0" + str(hi)) or (hi == 0 and lo == 0)


def published(field: SizeBetween | DurationBetween) -> Callable[[object], bool]:
    """The JSON schema's own verdict (ECMA 262 patterns), as schemathesis' validator reads it."""
    return jsonschema_rs.Draft202012Validator(field.__get_pydantic_json_schema__(None, None)).is_valid  # type: ignore[arg-type]


def accepted(field: SizeBetween | DurationBetween, value: object) -> bool:
    try:
        parsed = field.parse(value)
    except ValueError:
        return False
    zero = isinstance(field, DurationBetween) and field.zero
    assert field.lo <= parsed <= field.hi or (zero and parsed == 0)
    return True


GRAMMAR = r"[0-9]{1,15}(\.[0-9]{1,7})? ?(B|K|KiB|KB|M|MiB|MB|G|GiB|GB|T|TiB|TB|k|gib|s|m|h|d)?"


@pytest.mark.parametrize("field", [MEMORY, LIFETIME, QUEUE], ids=["memory", "lifetime", "queue_timeout"])
@given(data=st.data())
def test_the_server_accepts_a_text_exactly_when_the_published_schema_does(
    field: SizeBetween | DurationBetween, data: st.DataObject
) -> None:
    text = data.draw(
        st.one_of(
            st.from_regex(field.pattern),
            st.from_regex(GRAMMAR, fullmatch=True),
            st.from_regex(GRAMMAR),
            st.text(max_size=40),
        )
    )
    assert accepted(field, text) == published(field)(text), text


@given(st.integers(-(1 << 50), 1 << 50))
def test_an_integer_size_is_accepted_exactly_within_bounds(n: int) -> None:
    assert published(MEMORY)(n) == (MEMORY.lo <= n <= MEMORY.hi)
    if MEMORY.lo <= n <= MEMORY.hi:
        assert MEMORY.parse(n) == n
        assert MEMORY.parse(float(n)) == n  # JSON's 68719476735.0 is an integer too
    else:
        with pytest.raises(ValueError, match="size"):
            MEMORY.parse(n)


@pytest.mark.parametrize("field", [LIFETIME, QUEUE], ids=["lifetime", "queue_timeout"])
@given(
    st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.floats(min_value=0, max_value=2, allow_subnormal=True),
        st.integers(-(10**7), 10**7),
    )
)
def test_a_number_of_seconds_is_accepted_exactly_when_the_published_schema_says(
    field: DurationBetween, seconds: float
) -> None:
    """Tiny positive numbers (1e-300 s) included: nothing between 0 and the field's least is taken,
    and 0 only where it means something (no waiting, nothing kept)."""
    inside = field.lo <= seconds <= field.hi or (field.zero and seconds == 0)
    assert published(field)(seconds) == inside, seconds
    assert accepted(field, seconds) == inside, seconds


@pytest.mark.parametrize("seconds", [1e-300, 5e-324, 0.5, 0.999999])
def test_a_tiny_duration_is_refused_naming_the_bounds(seconds: float) -> None:
    with pytest.raises(ValueError, match=r"must be from 1 to 604800 seconds, not"):
        LIFETIME.parse(seconds)
    with pytest.raises(ValueError, match=r"must be 0, or from 1 to 86400 seconds, not"):
        QUEUE.parse(seconds)


@pytest.mark.parametrize(
    ("field", "text", "value"),
    [
        (MEMORY, "512M", 512 << 20),
        (MEMORY, "1.5g", 3 << 29),
        (MEMORY, "16T", 1 << 44),
        (LIFETIME, "0.5h", 1800),
        (LIFETIME, "7d", 604800),
        (LIFETIME, "1", 1),
        (LIFETIME, "0.017m", 1.02),
        (QUEUE, "0", 0),
        (QUEUE, "0.0h", 0),
        (QUEUE, "0.5m", 30),
    ],
)
def test_texts_people_write(field: SizeBetween | DurationBetween, text: str, value: float) -> None:
    assert field.parse(text) == value


@pytest.mark.parametrize(
    ("field", "text"),
    [
        (MEMORY, "15M"),
        (MEMORY, "0.5G"),
        (MEMORY, "16.0T"),
        (MEMORY, " 1G"),
        (MEMORY, "01G"),
        (MEMORY, "\u0661G"),  # an Arabic-Indic digit one: float() would take it
        (LIFETIME, "0"),
        (LIFETIME, "0.5"),
        (LIFETIME, "0.016m"),  # 0.96 s
        (LIFETIME, "0.0002h"),
        (LIFETIME, "0.000001d"),
        (LIFETIME, "7.5d"),
        (QUEUE, "0.5s"),
        (QUEUE, "0.01m"),
        (QUEUE, "1.5d"),
        (QUEUE, "1h\n"),
    ],
)
def test_texts_refused_with_a_message(field: SizeBetween | DurationBetween, text: str) -> None:
    with pytest.raises(ValueError, match=r"size|duration"):
        field.parse(text)
