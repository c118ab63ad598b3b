"""Sizes and durations as users write them: what is accepted, and that hostile text is refused.

What is tried: the forms people write, integral floats, and text built to make a
backtracking parser slow or a float overflow. What must hold: the right number, or
a ValueError that says what to write; long text is refused by its length alone.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potluck.kernel.durations import parse_duration
from potluck.kernel.sizes import MAX_TEXT, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512M", 512 << 20),
        (" 4 G ", 4 << 30),
        ("1.5G", 3 << 29),
        ("2KB", 2000),
        ("1TiB", 1 << 40),
        ("1073741824", 1 << 30),
        (68719476735.0, 68719476735),
        (42, 42),
    ],
)
def test_sizes_people_write(text: str | int | float, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text",
    [
        "lots",
        "1e10",
        "-1",
        "1  G",
        "1.5.5G",
        "4 GG",
        "9" * 300,
        "1" + " " * 32_000 + "x",
        1.5,
        True,
        None,
        [],
    ],
)
def test_what_is_not_a_size_is_refused_saying_what_to_write(text: object) -> None:
    with pytest.raises(ValueError, match=r"size"):
        parse_size(text)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["1" * 23, "99999999999999999999G", "1234567890123456.5 TB", "9" * 32])
def test_a_number_with_too_many_digits_is_refused_as_too_large(text: str) -> None:
    with pytest.raises(ValueError, match=r"too large for a size: at most 15 digits"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("90s", 90.0), (" 15 m ", 900.0), ("2h", 7200.0), (1.5, 1.5)]
)
def test_durations_people_write(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["soon", "2 hours", "9" * 100, "1" + " " * 32_000, 10**400, float("inf"), float("nan")]
)
def test_what_is_not_a_duration_is_refused(text: object) -> None:
    with pytest.raises(ValueError, match=r"duration"):
        parse_duration(text)  # type: ignore[arg-type]


@given(st.text(alphabet="0123456789 .kKmMgGtTbBiI", min_size=MAX_TEXT + 1, max_size=200_000))
def test_any_text_longer_than_the_bound_is_refused_by_its_length(text: str) -> None:
    with pytest.raises(ValueError, match=f"at most {MAX_TEXT} characters"):
        parse_size(text)


@given(st.text(alphabet="0123456789 .smhd", max_size=MAX_TEXT))
def test_short_text_parses_or_is_refused_never_anything_else(text: str) -> None:
    for parse in (parse_size, parse_duration):
        try:
            value = parse(text)
        except ValueError:
            continue
        assert value >= 0
