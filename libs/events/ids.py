"""Event ids: derived from message ids, so a redelivered message is logged once; random ones
for events that come without."""

import os
from uuid import NAMESPACE_URL, UUID, uuid5

from asyncpg.pgproto.pgproto import UUID as RowUUID

_NAMESPACE = uuid5(NAMESPACE_URL, "https://potluck.invalid/events")


def event_id_for(source: str, message_id: str, index: int = 0) -> UUID:
    """The id of the `index`-th event that message `message_id` from `source` causes.

    The same message always gives the same id; the store's unique event id
    then refuses the second append inside the same transaction.
    """
    return uuid5(_NAMESPACE, f"{source}/{message_id}/{index}")


def random_ids(count: int) -> list[UUID]:
    """`count` random (version 4) UUIDs, as uuid4() makes, about eight times faster in bulk.

    One read of the OS's random source for all of them, and asyncpg's own UUID type (a
    `uuid.UUID`, the type every id read from the log has) built from the bytes.
    """
    raw = bytearray(os.urandom(16 * count))
    for i in range(0, 16 * count, 16):
        raw[i + 6] = (raw[i + 6] & 0x0F) | 0x40  # version 4
        raw[i + 8] = (raw[i + 8] & 0x3F) | 0x80  # RFC 4122 variant
    data = bytes(raw)
    return [RowUUID(data[i : i + 16]) for i in range(0, 16 * count, 16)]
