"""The pages' live updates (services/allocator/web/live.py) without a server.

What must hold: a waiter wakes when the fold moves, and at once when the app
closes (else shutting down would wait for every open page); a fragment of
several lines goes out as one server-sent event whose data lines rejoin to it.
"""

import asyncio

import pytest

from potluck.allocator.web.live import Changes, _event


async def test_a_waiter_wakes_on_a_fold_and_at_once_on_close() -> None:
    changes = Changes()
    waiting = asyncio.ensure_future(changes.after(0, timeout=30))
    await asyncio.sleep(0)
    changes.folded([])
    async with asyncio.timeout(5):
        assert await waiting == 1

    waiting = asyncio.ensure_future(changes.after(1, timeout=30))
    await asyncio.sleep(0)
    changes.close()
    async with asyncio.timeout(5):
        assert await waiting == 1
    assert changes.closed


async def test_a_quiet_wait_ends_at_its_timeout_with_the_count_unchanged() -> None:
    assert await Changes().after(0, timeout=0.01) == 0


def test_a_fragment_goes_out_as_one_event_of_data_lines() -> None:
    raw = _event("fragment", "<p>a</p>\n<p>b</p>").decode()
    lines = raw.split("\n")
    assert lines[0] == "event: fragment"
    assert [line.removeprefix("data: ") for line in lines if line.startswith("data: ")] == [
        "<p>a</p>",
        "<p>b</p>",
    ]
    assert raw.endswith("\n\n")


async def test_a_wait_cancelled_as_its_change_lands_is_cancelled_all_the_same() -> None:
    """The change and the cancellation arrive in the same turn of the loop: the wait must end
    cancelled. Python 3.11's asyncio.wait_for returned the result instead, losing the
    cancellation (bpo-42130), which kept loops around it running after their task was stopped;
    ruff now bans it (TID251)."""
    changes = Changes()
    waiting = asyncio.ensure_future(changes.after(0, timeout=30))
    await asyncio.sleep(0)
    changes.folded([])
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
