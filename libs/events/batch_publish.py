"""Publishing a batch to JetStream and waiting for every ack, at a fraction of nats-py's cost.

`JetStreamContext.publish_async` costs per message a semaphore, a NUID and a random token
for the reply subject, a future with a done callback, then per ack a `json.loads` and a
`PubAck` dataclass; in the relay's profile that was about half of the relay's time. JetStream
acks any message published with a reply subject to a stream's subject, so here each message
of a batch goes out as a plain publish whose reply subject is one subscription's inbox plus
the batch's number and the message's index, and the acks are counted into a bitmap. An ack
is parsed only when it is not the plain success it nearly always is.

The messages (subjects, payloads, headers, `Nats-Msg-Id` among them) are exactly those
publish_async sends: JetStream's duplicate detection and ordering are the same.
"""

import asyncio
import contextlib
import json
from itertools import count

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import Header
from nats.js.errors import APIError, NoStreamResponseError

STATUS = Header.STATUS


class BatchAckTimeout(Exception):
    """Acks of a batch did not all arrive in time."""

    def __init__(self, missing: int, total: int, timeout: float) -> None:
        super().__init__(f"{missing} of {total} acks missing after {timeout}s")
        self.missing = missing


class _Batch:
    def __init__(self, number: int, size: int) -> None:
        self.number = number
        self.acked = bytearray(size)
        self.waiting = size
        self.duplicates = 0
        self.error: Exception | None = None
        self.settled = asyncio.Event()
        if size == 0:
            self.settled.set()

    def fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self.settled.set()

    def ack(self, index: int, data: bytes) -> None:
        if not 0 <= index < len(self.acked) or self.acked[index]:
            return
        # The server writes `{"stream":"S","seq":N}`, with `"duplicate":true` for a copy it dropped.
        if b'"error"' in data or b'"duplicate"' in data:
            reply = json.loads(data)
            if "error" in reply:
                self.fail(APIError.from_error(reply["error"]))
                return
            self.duplicates += bool(reply.get("duplicate"))
        self.acked[index] = 1
        self.waiting -= 1
        if self.waiting == 0:
            self.settled.set()


class BatchPublisher:
    """Publishes batches over one NATS connection; one batch in flight at a time."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self._prefix = ""
        self._subscription: Subscription | None = None
        self._numbers = count(1)
        self._batch: _Batch | None = None

    async def start(self) -> None:
        self._prefix = self.nc.new_inbox()
        self._subscription = await self.nc.subscribe(f"{self._prefix}.*.*", cb=self._on_ack)

    async def close(self) -> None:
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            # A closed or lost connection has dropped the subscription already.
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    async def _on_ack(self, msg: Msg) -> None:
        batch = self._batch
        number, _, index = msg.subject[len(self._prefix) + 1 :].partition(".")
        # An ack of an earlier batch (one given up on) arriving late counts for nothing.
        if batch is None or number != str(batch.number):
            return
        if (msg.headers and msg.headers.get(STATUS)) or not msg.data:
            # Not an ack: the server's own reply that nothing took the message (503, no
            # stream on that subject), which publish_async reports the same way.
            batch.fail(NoStreamResponseError())
            return
        batch.ack(int(index), msg.data)

    def begin(self, size: int) -> "_Batch":
        """A new batch of `size` messages, the one acks now count for; `send` each, then `wait`."""
        if self._subscription is None:
            raise RuntimeError("BatchPublisher.start() first")
        self._batch = _Batch(next(self._numbers), size)
        return self._batch

    async def send(
        self, batch: "_Batch", index: int, subject: str, payload: bytes, headers: dict[str, str]
    ) -> None:
        await self.nc.publish(
            subject, payload, reply=f"{self._prefix}.{batch.number}.{index}", headers=headers
        )

    async def wait(self, batch: "_Batch", timeout: float) -> int:
        """Wait until JetStream acked every message of the batch. Returns how many were
        duplicates it dropped; raises APIError (a message refused), NoStreamResponseError (a
        subject no stream takes) or BatchAckTimeout."""
        try:
            try:
                async with asyncio.timeout(timeout):
                    await batch.settled.wait()
            except TimeoutError:
                raise BatchAckTimeout(batch.waiting, len(batch.acked), timeout) from None
            if batch.error is not None:
                raise batch.error
            return batch.duplicates
        finally:
            if self._batch is batch:
                self._batch = None
