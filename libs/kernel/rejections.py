"""Rejected commands: a stable UPPER_SNAKE code, a user-safe message, the offending field.

Aggregates raise Rejected when a command cannot be carried out; the HTTP API
and the NATS request handlers turn it into their own error replies.
"""

from typing import Any


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
