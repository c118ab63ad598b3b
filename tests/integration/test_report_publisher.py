"""hostd's report sender against a real JetStream that refuses: a report that can never fit is
dropped (and the next one still goes through); a full stream is waited out, not fatal."""

import asyncio

from nats.aio.client import Client as NATS
from nats.js.api import StreamConfig

from potluck.events import REPORTS_STREAM, ensure_streams
from potluck.events.bus import STREAMS
from potluck.hostd.report_publisher import publish_until_stored


async def test_a_report_too_large_for_the_stream_is_dropped_and_the_next_one_stored(nc: NATS) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    spec = next(s for s in STREAMS if s.name == REPORTS_STREAM)
    assert spec.max_msg_size is not None
    huge = b"x" * (spec.max_msg_size + 1)
    async with asyncio.timeout(10):
        stored = await publish_until_stored(js, "potluck.report.h-a.state", huge, {}, kind="state")
    assert stored is False
    assert await publish_until_stored(js, "potluck.report.h-a.state", b"{}", {}, kind="state") is True
    info = await js.stream_info(REPORTS_STREAM)
    assert info.state.messages == 1


async def test_a_full_stream_is_retried_until_it_has_room(nc: NATS) -> None:
    """The reports stream refuses new messages while full (discard new); once room is made the
    waiting report is stored, in place, without an error reaching hostd."""
    js = nc.jetstream()
    await ensure_streams(js)
    config: StreamConfig = (await js.stream_info(REPORTS_STREAM)).config
    config.max_msgs = 1
    await js.update_stream(config)
    await js.publish("potluck.report.h-a.started", b"first")
    sending = asyncio.create_task(
        publish_until_stored(js, "potluck.report.h-a.exited", b"second", {}, kind="exited")
    )
    await asyncio.sleep(1.0)
    assert not sending.done(), "the report was neither stored nor kept waiting"
    await js.purge_stream(REPORTS_STREAM)
    async with asyncio.timeout(15):
        assert await sending is True
    assert (await js.get_last_msg(REPORTS_STREAM, "potluck.report.h-a.exited")).data == b"second"
