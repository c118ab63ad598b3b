"""Which reply subjects a service answers on: only literal subjects under the requester's inbox."""

from hypothesis import given
from hypothesis import strategies as st
from nats.aio.msg import Msg
from structlog.testing import capture_logs

from potluck.contracts.subjects import SERVICE_INBOX, inbox_prefix
from potluck.events.replies import MAX_REPLY_LENGTH, REFUSAL_LOG_RATE, ReplyGuard, reply_within

host_ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
tokens = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1, max_size=24)


@given(host_ids, st.lists(tokens, min_size=1, max_size=3))
def test_a_hosts_own_inbox_is_answered(host_id: str, rest: list[str]) -> None:
    assert reply_within(".".join([inbox_prefix(host_id), *rest]), inbox_prefix(host_id))


@given(host_ids, host_ids, st.lists(tokens, min_size=1, max_size=3))
def test_another_hosts_inbox_is_not(host_id: str, other: str, rest: list[str]) -> None:
    reply = ".".join([inbox_prefix(other), *rest])
    assert reply_within(reply, inbox_prefix(host_id)) == (other == host_id)


@given(host_ids, tokens)
def test_a_host_inbox_is_never_a_services_inbox(host_id: str, token: str) -> None:
    assert not reply_within(f"{inbox_prefix(host_id)}.{token}", SERVICE_INBOX)
    assert not reply_within(f"{SERVICE_INBOX}.{token}", inbox_prefix(host_id))


def test_the_jetstream_api_and_other_subjects_are_not() -> None:
    inbox = inbox_prefix("h-a")
    for reply in [
        "$JS.API.STREAM.PURGE.POTLUCK_REPORTS",
        "$JS.API.CONSUMER.DELETE.POTLUCK_EVENTS.hostd-h-b",
        "potluck.hb.h-b",
        "_INBOX_h-b.x",
        "_INBOX_h-a",
        "_INBOX_h-ab.x",
        "_INBOX_h-a.*",
        "_INBOX_h-a.>",
        "_INBOX_h-a.x.>",
        "_INBOX_h-a..x",
        "_INBOX_h-a.x.",
        "_INBOX_h-a.x y",
        "",
        f"{inbox}." + "x" * MAX_REPLY_LENGTH,
    ]:
        assert not reply_within(reply, inbox), reply


def test_refusals_are_all_counted_and_logged_sparingly() -> None:
    """Tried: 1,000 messages on host A's subject naming no reply in A's inbox (as JetStream's
    answers to another host's requests do) at one instant, then one more five seconds on, then
    one with A's own inbox. Must hold: every refusal is counted; only REFUSAL_LOG_RATE's burst
    is logged at once, one more once the clock has moved on, each line with the count so far;
    A's own request is allowed and neither counted nor logged."""
    now = [100.0]
    guard = ReplyGuard("registry", clock=lambda: now[0])
    inbox = inbox_prefix("h-a")
    forged = Msg(_client=None, subject="potluck.rpc.registry.status.h-a", reply="", data=b"")  # type: ignore[arg-type]
    with capture_logs() as logged:
        assert not any(guard.allows(forged, inbox, requester="h-a") for _ in range(1000))
        now[0] += 5
        assert not guard.allows(forged, inbox, requester="h-a")
        own = Msg(_client=None, subject=forged.subject, reply=f"{inbox}.x.y", data=b"")  # type: ignore[arg-type]
        assert guard.allows(own, inbox, requester="h-a")
    assert guard.as_dict() == {"h-a": 1001}
    lines = [entry for entry in logged if entry["event"] == "bus.reply_refused"]
    assert len(lines) == int(REFUSAL_LOG_RATE.burst) + 1, len(lines)
    assert lines[-1]["refused"] == 1001
