"""Host labels: the bound on what a member may label a host with, and the labels Potluck sets itself.

A member may label a host as they like (`arch=arm64`, `gpu=yes`) and requests pick hosts by
those labels. Labels are the member's text, and every user reads them: each host's labels
go into every user's pool list and web page and into the host's HostRegistered event. So
they are bounded once, here, and both sides hold to it: hostd refuses a configuration
outside it at start, and the registry refuses a registration outside it (BAD_LABELS) from a
hostd of another version or one that skipped the check.

- At most MAX_LABELS labels.
- A name matches LABEL_NAME, the pattern the allocator's requests name labels by in their
  constraints (and publish in their JSON schema): a name outside it could never be asked for.
- A value is at most MAX_LABEL_VALUE characters (code points), may be empty, and holds no
  control, format, surrogate or line/paragraph separator character (Unicode categories Cc,
  Cf, Cs, Zl, Zp): no NUL (Postgres' JSON cannot hold it), no newline or escape sequence
  for a terminal, no right-to-left override or invisible character to make one text look
  like another. It neither starts nor ends with white space: requests match values exactly,
  and a user cannot see a trailing space.

Events already logged are not held to the bound (events are never rewritten, and old ones
still replay): it is checked where a registration is decided, not where one is read.

The labels set by Potluck's own tools (`name`, from the enrolled name, which the registry
bounds the same way; HOLLOW_LABEL below) are within it.
"""

import re
import unicodedata
from collections.abc import Mapping

__all__ = [
    "BAD_LABELS",
    "HOLLOW_LABEL",
    "LABEL_NAME",
    "MAX_LABELS",
    "MAX_LABEL_VALUE",
    "InvalidLabels",
    "check_labels",
    "label_problems",
    "value_problem",
]

#: What a label's name must match; the allocator's request schemas publish the same pattern
#: for constraints (written for both ECMA 262 and Python's dialect, checked with fullmatch).
LABEL_NAME = r"^[A-Za-z0-9_.-]{1,63}$"
#: The most labels one host may carry (a request may constrain at most 16).
MAX_LABELS = 32
#: The longest label value, in characters.
MAX_LABEL_VALUE = 128
#: Unicode categories a value may not hold: control (NUL included), format (bidirectional
#: overrides, zero-width characters), lone surrogates, line and paragraph separators.
UNSEEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
#: The registry's code for a registration refused for its labels (hostd stops on it: only the
#: member's configuration can change them).
BAD_LABELS = "BAD_LABELS"
#: Problems said in one message; the rest are counted.
_SAID = 3

_NAME = re.compile(LABEL_NAME)

#: What a hollow host (`potluck ops hollow`: an in-memory engine that accepts work and runs
#: none of it, for scale tests) registers with. The scheduler places a request on such a host
#: only when the request is constrained to this label: otherwise a user's work would "run" on
#: nothing (services/allocator/scheduler.py, "Hollow hosts").
HOLLOW_LABEL: tuple[str, str] = ("hollow", "true")


class InvalidLabels(ValueError):
    """Labels outside the bound; the message names the labels at fault and what to change."""


def _shown(text: str) -> str:
    """`text` as a message may quote it: escaped (repr), and cut short."""
    return repr(text[:40]) + ("..." if len(text) > 40 else "")


def _character(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" {name}" if name else "")


def value_problem(value: str) -> str | None:
    """What is wrong with `value` as a label's value (and as a host's enrolled name), or None."""
    if len(value) > MAX_LABEL_VALUE:
        return f"is {len(value)} characters long; at most {MAX_LABEL_VALUE} are allowed"
    for ch in value:
        if unicodedata.category(ch) in UNSEEN_CATEGORIES:
            return f"holds {_character(ch)}, a control or invisible character; use visible text only"
    if value != value.strip():
        return "starts or ends with white space; remove it (requests match values exactly)"
    return None


def label_problems(labels: Mapping[str, str]) -> list[str]:
    """Everything wrong with `labels`, one line each, in the order the labels come; [] when
    they are within the bound."""
    problems: list[str] = []
    if len(labels) > MAX_LABELS:
        problems.append(f"{len(labels)} labels; at most {MAX_LABELS} are allowed")
    for name, value in labels.items():
        if not _NAME.fullmatch(name):
            problems.append(
                f"label {_shown(name)}: a name is 1 to 63 letters (A-Z, a-z), digits, '_', '.' or '-', "
                "as requests' constraints name labels; rename it"
            )
            continue
        problem = value_problem(value)
        if problem is not None:
            problems.append(f"label {name!r}: its value {problem}")
    return problems


def check_labels(labels: Mapping[str, str]) -> Mapping[str, str]:
    """`labels` if they are within the bound; else InvalidLabels saying the first few problems."""
    problems = label_problems(labels)
    if not problems:
        return labels
    said = "; ".join(problems[:_SAID])
    more = len(problems) - _SAID
    raise InvalidLabels(said + (f" (and {more} more)" if more > 0 else ""))
