"""What of an event's data a person is shown in a history (the web page's timeline, `potluck
alloc show`): its facts, never its secrets (the spec's environment) nor what every event of
the stream repeats (the allocation's id and user, its spec and keys)."""

from collections.abc import Mapping
from typing import Any

__all__ = ["event_facts"]

QUIET = frozenset({"spec", "ssh_keys", "env", "alloc_id", "user"})
#: Shown by their first characters, as `docker ps` shows a container's id.
SHORT = {"container_id": 12}


def event_facts(data: Mapping[str, Any], limit: int = 300) -> str:
    """`key=value` for each fact worth showing, in key order, at most `limit` characters."""
    facts = ", ".join(
        f"{key}={str(value)[: SHORT.get(key)]}"
        for key, value in sorted(data.items())
        if key not in QUIET and value is not None
    )
    return facts[:limit]
