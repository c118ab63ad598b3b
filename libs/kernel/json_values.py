"""A value a client sent, shown in an error as JSON writes it.

Errors quote what the client wrote. Python's own words for it (`True`, `None`, `NoneType`) are
not what a JSON body holds: `{"memory": true}` is refused for `true`, `{"by": null}` for `null`.
"""

import json

#: The longest quote of a value in an error; the rest is cut to "...".
SHOWN_CHARS = 40


def shown(value: object) -> str:
    """`value` as JSON writes it (Python's repr for what JSON cannot hold), at most SHOWN_CHARS."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."
