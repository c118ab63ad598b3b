"""Rejected commands: a stable UPPER_SNAKE code, a user-safe message, the offending field.

Aggregates raise Rejected when a command cannot be carried out; the HTTP API
and the NATS request handlers turn it into their own error replies.

What is not a refusal (a lost database, a bug) is the service's own failure: the requester
reads `internal_error`, a stable INTERNAL code, what to do, and an incident id; the exception's
text (SQL, addresses, paths, a library's words) goes only to the service's log, on the line
that carries the same id. A host or a user learns nothing of the service's insides from it.
"""

import uuid
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

#: What pydantic writes before the text of a ValueError or AssertionError a validator raised:
#: its own words, which tell the reader nothing ("memory: Value error, the size must be ...").
_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


class Rejected(Exception):
    def __init__(self, code: str, message: str, *, field: str | None = None, status: int = 409) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field = field
        self.status = status

    @classmethod
    def invalid_field(cls, field: str, message: str) -> "Rejected":
        """A request's field (a query parameter, a form's) that is not what it must be: a 400."""
        return cls("INVALID_FIELD", message, field=field, status=400)

    def as_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return error


def new_incident() -> str:
    """An id for one failure, short enough to quote, unique enough to find in the logs."""
    return uuid.uuid4().hex[:16]


def internal_error(service: str, incident: str) -> dict[str, Any]:
    """The error a requester reads when `service` failed on its request (the log has why)."""
    return {
        "code": "INTERNAL",
        "message": (
            f"the {service} failed on this request; try again in a while, and if it keeps failing "
            f"tell the pool's operator, quoting incident {incident}"
        ),
        "incident": incident,
    }


def first_error(exc: ValidationError) -> str:
    """Where a request first fails to validate and why (`nkey: String should have at most 56
    characters`), without the input pydantic's own text quotes back nor its links."""
    return error_line(exc.errors()[0], "(body)")


def error_line(err: ErrorDetails, top: str) -> str:
    """One of a ValidationError's errors as `where: why` (`top`: where, when it is the whole)."""
    return f"{'.'.join(str(p) for p in err['loc']) or top}: {error_text(err)}"


def error_text(err: ErrorDetails) -> str:
    """Why one of a ValidationError's errors failed, in the words of the check that refused it."""
    message = err["msg"]
    for prefix in _PYDANTIC_PREFIXES:
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message
