"""Event ids derived from message ids, so a redelivered message is logged once."""

from uuid import NAMESPACE_URL, UUID, uuid5

_NAMESPACE = uuid5(NAMESPACE_URL, "https://potluck.invalid/events")


def event_id_for(source: str, message_id: str, index: int = 0) -> UUID:
    """The id of the `index`-th event that message `message_id` from `source` causes.

    The same message always gives the same id; the store's unique event id
    then refuses the second append inside the same transaction.
    """
    return uuid5(_NAMESPACE, f"{source}/{message_id}/{index}")
