"""potluck.kernel.rejections.error_line/error_text: a validation error in the words of the check."""

from typing import Annotated

import pytest
from pydantic import AfterValidator, BaseModel, ValidationError

from potluck.kernel.rejections import error_line, error_text, first_error


def _sized(text: str) -> str:
    raise ValueError("the size must be from 16M to 16T")


def _asserted(n: int) -> int:
    assert n > 0, "must be positive"
    return n


class Body(BaseModel):
    memory: Annotated[str, AfterValidator(_sized)] = "1G"
    count: Annotated[int, AfterValidator(_asserted)] = 1


def _error(**given: object) -> ValidationError:
    with pytest.raises(ValidationError) as raised:
        Body.model_validate(given)
    return raised.value


def test_a_checks_own_words_come_without_pydantics_prefix() -> None:
    """Tried: a field whose validator raises ValueError, one whose assertion fails, and a plain
    type error. Before, a user read `memory: Value error, the size must be ...`. Must hold: the
    check's words alone, where it failed; pydantic's own messages unchanged."""
    assert first_error(_error(memory="0")) == "memory: the size must be from 16M to 16T"
    assert error_text(_error(count=-1).errors()[0]).startswith("must be positive")
    typed = _error(count="many").errors()[0]
    assert error_line(typed, "(top)") == f"count: {typed['msg']}"
    assert error_line(_error(memory="0").errors()[0], "(top)") == "memory: the size must be from 16M to 16T"
