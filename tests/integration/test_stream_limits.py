"""Potluck's JetStream streams are bounded by size and per subject, on a new server and on one
whose streams an older version made (real nats-server)."""

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError

from potluck.events import REPORTS_STREAM, ensure_streams
from potluck.events.bus import STREAMS, streams_exist


async def test_streams_made_by_an_older_version_get_the_limits_and_keep_their_messages(nc: NATS) -> None:
    """Streams exist as an older version made them: an age limit only, and a report in them.
    Before: ensure_streams left them unbounded in size and per subject. Afterwards: every stream
    has its size, message size and per-subject limits and discard policy, and the report is kept."""
    js = nc.jetstream()
    for spec in STREAMS:
        await js.add_stream(
            StreamConfig(
                name=spec.name,
                subjects=spec.subjects,
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                discard=DiscardPolicy.OLD,
                max_age=spec.max_age_s,
            )
        )
    await js.publish("potluck.report.h-old.started", b"kept")

    await ensure_streams(js)

    for spec in STREAMS:
        config = (await js.stream_info(spec.name)).config
        assert config.max_bytes == spec.max_bytes > 0
        assert config.max_msgs_per_subject == spec.max_msgs_per_subject > 0
        assert config.max_msg_size == spec.max_msg_size
        assert config.discard == spec.discard
        assert config.max_age == spec.max_age_s
    assert (await js.get_msg(REPORTS_STREAM, seq=1)).data == b"kept"


async def test_a_subject_over_its_bound_drops_only_its_own_oldest(nc: NATS) -> None:
    """One host's subject gets more reports than its bound, another host's one report is already
    there. The flooding subject keeps its newest `bound` reports; the other host's report stays;
    and a report larger than the stream's message size is refused."""
    js = nc.jetstream()
    await ensure_streams(js)
    spec = next(s for s in STREAMS if s.name == REPORTS_STREAM)
    await js.publish("potluck.report.h-calm.started", b"calm")
    for i in range(spec.max_msgs_per_subject + 20):
        await js.publish("potluck.report.h-loop.usage", str(i).encode())
    info = await js.stream_info(REPORTS_STREAM, subjects_filter="potluck.report.>")
    assert info.state.subjects == {
        "potluck.report.h-calm.started": 1,
        "potluck.report.h-loop.usage": spec.max_msgs_per_subject,
    }
    newest = await js.get_last_msg(REPORTS_STREAM, "potluck.report.h-loop.usage")
    assert newest.data == str(spec.max_msgs_per_subject + 19).encode()
    with pytest.raises(APIError, match=r"(?i)size"):
        await js.publish("potluck.report.h-loop.state", b"x" * (spec.max_msg_size + 1))


async def test_streams_exist_says_whether_each_stream_is_there(nc: NATS) -> None:
    """What the relay asks after a publish no stream took (a leaderless stream answers the same
    way): no streams, then every stream after ensure_streams, then one stream deleted."""
    js = nc.jetstream()
    assert not await streams_exist(js)
    await ensure_streams(js)
    assert await streams_exist(js)
    await js.delete_stream(REPORTS_STREAM)
    assert not await streams_exist(js)
