"""Publishing batches to JetStream with counted acks (libs/events/batch_publish.py), on a real nats-server."""

import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import NoStreamResponseError

from potluck.events import EVENTS_STREAM, ensure_streams
from potluck.events.batch_publish import BatchAckTimeout, BatchPublisher


async def test_a_batch_is_stored_once_and_its_copies_are_counted_as_duplicates(nc: NATS) -> None:
    """Publish the same 20 messages (same Nats-Msg-Id) twice, then 3 to a subject no stream
    takes, then wait for acks of messages never sent. Must hold: 20 messages stored, in order;
    the second batch reports 20 duplicates; the unstored batch fails as publish_async's does
    (NoStreamResponseError, not acked); the wait times out naming the missing acks; the
    publisher still works afterwards."""
    await ensure_streams(nc.jetstream())
    publisher = BatchPublisher(nc)
    await publisher.start()
    try:

        async def publish(subject: str, count: int, timeout: float = 10.0) -> int:
            batch = publisher.begin(count)
            for i in range(count):
                await publisher.send(batch, i, subject, f"{i}".encode(), {"Nats-Msg-Id": f"m-{i}"})
            return await publisher.wait(batch, timeout)

        assert await publish("potluck.evt.thing.Tested", 20) == 0
        assert await publish("potluck.evt.thing.Tested", 20) == 20
        with pytest.raises(NoStreamResponseError):
            await publish("not.a.stream.subject", 3)
        # Acks that never come (here: the batch's messages are never sent) time out.
        with pytest.raises(BatchAckTimeout, match="2 of 2 acks missing"):
            await publisher.wait(publisher.begin(2), 0.2)
        assert await publish("potluck.evt.thing.Tested", 1) == 1
    finally:
        await publisher.close()
    js = nc.jetstream()
    assert (await js.stream_info(EVENTS_STREAM)).state.messages == 20
    assert [(await js.get_msg(EVENTS_STREAM, seq=s)).data for s in (1, 20)] == [b"0", b"19"]
