"""A gateway run's liveness on the bus: one entry per run in a JetStream key-value bucket.

Every gateway process puts an entry under its run id in the `potluck_gateways`
bucket before it accepts a session, and puts it again every `run_refresh_s`;
a clean stop deletes it, once the sessions' ends are written. The entry holds
the gateway's name and start (for an operator's `nats kv ls`), but what counts
is only that its revision changes: other gateways judge a run by how long they
have seen its entry unchanged (gateway_runs.py), never by a time written in it.

The bucket keeps one value per key, for `ENTRY_TTL_S`: enough to sweep away
the entries of runs that died, far longer than any refresh interval. It is
made with the services' stream replicas when missing and used as it is when
there; nats-py's key-value API is all it takes.
"""

import asyncio
import json
from collections.abc import Iterable
from datetime import UTC, datetime

import structlog
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import APIError, BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

__all__ = ["BUCKET", "ENTRY_TTL_S", "RunEntry"]

log = structlog.get_logger(__name__)

BUCKET = "potluck_gateways"
#: Entries of runs that stopped refreshing are dropped after this long (housekeeping only).
ENTRY_TTL_S = 3600.0


class RunEntry:
    """This gateway run's entry, kept fresh, and the revisions of other runs' entries."""

    def __init__(
        self, js: JetStreamContext, run_id: str, *, gateway: str, refresh_s: float, replicas: int | None
    ) -> None:
        self.js = js
        self.run_id = run_id
        self.refresh_s = refresh_s
        self.replicas = replicas
        self._value = json.dumps({"gateway": gateway, "started_at": datetime.now(UTC).isoformat()}).encode()
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            try:
                self._kv = await self.js.key_value(BUCKET)
            except BucketNotFoundError:
                config = KeyValueConfig(
                    bucket=BUCKET,
                    history=1,
                    ttl=ENTRY_TTL_S,
                    storage=StorageType.FILE,
                    replicas=self.replicas or 1,
                )
                try:
                    self._kv = await self.js.create_key_value(config)
                except APIError:
                    # Another gateway made it meanwhile (maybe with other settings): use theirs.
                    self._kv = await self.js.key_value(BUCKET)
        return self._kv

    async def put(self) -> None:
        try:
            await (await self._bucket()).put(self.run_id, self._value)
        except Exception:
            # The bucket may be gone (a bus that lost its state): look it up again next time.
            self._kv = None
            raise

    async def keep_fresh(self) -> None:
        """Put the entry every `refresh_s`, until cancelled; a failed put is logged and retried."""
        failing = False
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.put()
            except Exception as exc:
                if not failing:
                    log.warning("gateway.run_entry_failed", run=self.run_id, error=repr(exc))
                failing = True
            else:
                if failing:
                    log.info("gateway.run_entry_back", run=self.run_id)
                failing = False

    async def revisions(self, runs: Iterable[str]) -> dict[str, int | None]:
        """Each run's entry revision, None where it has none; raises if the bus does not answer."""
        kv = await self._bucket()
        found: dict[str, int | None] = {}
        for run in runs:
            try:
                found[run] = (await kv.get(run)).revision
            except KeyNotFoundError:
                found[run] = None
        return found

    async def withdraw(self) -> None:
        """Delete the entry (a clean stop); the sweep of others would otherwise wait it out."""
        try:
            await (await self._bucket()).delete(self.run_id)
        except Exception as exc:
            log.warning("gateway.run_entry_not_deleted", run=self.run_id, error=repr(exc))
