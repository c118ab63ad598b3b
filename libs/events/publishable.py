"""Whether the relay can put a logged event on the bus, and why not.

The log is plain Postgres: a row may come from a newer writer, a hand-made `INSERT` or a
bug, and the relay must not stall on it. Publishing such a row as it is would fail for good,
however often it is retried: its subject is no NATS subject (a stream, type or routing key
holding white space, a dot or a wildcard), or its message is bigger than nats-server accepts
(`max_payload`, which bounds the headers and the data together; past it the server closes
the connection). (Metadata that is not a JSON object is read as none, by the relay as by every
reader: `schema.readable_metadata`.) A relay that raised on it published
nothing after it, and every service that runs a relay (the registry, the allocator, the
gateway) exited on it and was started again into the same row.

`why_unpublishable` names what is wrong; the relay logs it (`relay.skipped_unpublishable`,
with the position) and carries on with the next event. The row stays in the log, and every
service folding the log reads it as it reads any event (one it cannot decode is skipped and
listed by `potluck ops status`); only the bus never carries it.
"""

import json
import re
from collections.abc import Mapping

from potluck.events.schema import RecordedEvent

__all__ = ["subject_token_problem", "why_unpublishable"]

# What a token of a NATS subject must not hold: the separator, the wildcards, and white space or
# control characters (which nats-py refuses, and which would end the protocol line).
_NOT_IN_TOKEN = re.compile(r"[.*>\s\x00-\x1f\x7f]")
#: The NATS protocol's framing of a message's headers: "NATS/1.0\r\n", "key: value\r\n" per
#: header, and the closing "\r\n".
_HEADER_FRAMING = len("NATS/1.0\r\n") + len("\r\n")


def subject_token_problem(token: str) -> str | None:
    """Why `token` cannot be one token of a subject, or None when it can."""
    if not token:
        return "is empty"
    found = _NOT_IN_TOKEN.search(token)
    if found is not None:
        return f"holds {found.group()!r}, which a NATS subject token cannot"
    return None


def headers_size(headers: Mapping[str, str]) -> int:
    """The bytes `headers` take in a message, as the server counts them against max_payload."""
    return _HEADER_FRAMING + sum(
        len(key.encode()) + len(value.encode()) + len(": \r\n") for key, value in headers.items()
    )


def why_unpublishable(
    record: RecordedEvent, data: bytes, headers: Mapping[str, str], max_payload: int
) -> str | None:
    """What keeps `record` (its `data` and `headers` as the relay would send them) off the bus,
    or None when it can be published. The relay asks for every event: the usual answer, None,
    costs a regular expression per token and a sum of lengths, never a byte count."""
    key = record.metadata.get("routing_key")
    routing = (key if isinstance(key, str) else json.dumps(key)) if key else ""
    category, type_name = record.category, record.type
    if (
        not category
        or not type_name
        or _NOT_IN_TOKEN.search(category)
        or _NOT_IN_TOKEN.search(type_name)
        or (routing and _NOT_IN_TOKEN.search(routing))
    ):
        parts = {"stream category": category, "type": type_name, "routing key": routing}
        for what, token in parts.items():
            problem = subject_token_problem(token) if token or what != "routing key" else None
            if problem is not None:
                return f"its {what} {token[:80]!r} {problem}"
    # UTF-8 takes at most 4 bytes a character: below this bound no byte need be counted.
    characters = sum(len(k) + len(v) + 4 for k, v in headers.items())
    if len(data) + 4 * characters + _HEADER_FRAMING <= max_payload:
        return None
    size = len(data) + headers_size(headers)
    if size > max_payload:
        return (
            f"its message is {size} bytes, more than nats-server's max_payload ({max_payload}); "
            "raise max_payload in nats-server's configuration to carry it"
        )
    return None
