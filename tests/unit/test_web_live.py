"""The pages' live updates (services/allocator/web/live.py) without a server.

What must hold: a waiter wakes when the fold moves, and at once when the app
closes (else shutting down would wait for every open page); a fragment of
several lines goes out as one server-sent event whose data lines rejoin to it.
"""

import asyncio

from potluck.allocator.web.live import Changes, _event


async def test_a_waiter_wakes_on_a_fold_and_at_once_on_close() -> None:
    changes = Changes()
    waiting = asyncio.ensure_future(changes.after(0, timeout=30))
    await asyncio.sleep(0)
    changes.folded([])
    assert await asyncio.wait_for(waiting, 5) == 1

    waiting = asyncio.ensure_future(changes.after(1, timeout=30))
    await asyncio.sleep(0)
    changes.close()
    assert await asyncio.wait_for(waiting, 5) == 1
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
