"""Whole numbers as people and programs write them: ASCII digits.

`str.isdigit()` is true of "²" (which `int()` refuses, so a check with it lets a ValueError
through) and of the Arabic-Indic "٣" (which `int()` reads as 3): a value that passed it is not yet a
number in the form the rest of the system writes, and a check that uses it lets through text
that fails further on, far from where it came in.
"""

__all__ = ["is_digits"]


def is_digits(text: str) -> bool:
    """One or more of 0-9 and nothing else."""
    return text.isascii() and text.isdigit()
