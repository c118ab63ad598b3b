"""What the allocator keeps of a host's answer to a log-tail request (real NATS; the host is a
client answering as a hostile hostd would)."""

import json

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from potluck.allocator.web.log_tail import MAX_CODE_CHARS, MAX_MESSAGE_CHARS, LogSource, LogUnavailable
from potluck.contracts.log_tail import LogTailRequest
from potluck.contracts.subjects import LOG_TAIL, host_subject


async def test_a_hosts_refusal_is_kept_only_to_its_bound(nc: NATS) -> None:
    """Tried: a host answers the allocator's log-tail request with a refusal whose code is 10,000
    characters and whose message is 500,000 (within NATS' payload). Before: both were kept
    whole, and the allocator logged the message at every poll of every viewer's page. Must
    hold: the refusal reaches the allocator as LogUnavailable, its code and message cut to
    their bounds."""

    async def hostile(msg: Msg) -> None:
        error = {"code": "C" * 10_000, "message": "m" * 500_000}
        await msg.respond(json.dumps({"ok": False, "error": error}).encode())

    await nc.subscribe(host_subject(LOG_TAIL, "h-hostile"), cb=hostile)
    with pytest.raises(LogUnavailable) as refused:
        await LogSource(nc, timeout=10).page("h-hostile", LogTailRequest(alloc_id="a-1"))
    assert refused.value.code == "C" * MAX_CODE_CHARS
    assert refused.value.message == "m" * MAX_MESSAGE_CHARS
