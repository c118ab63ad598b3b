"""The registry's admission of requests (services/registry/admission.py): a few at a time, and
those that waited longer than their sender waits dropped rather than served too late."""

import asyncio
from typing import Any, cast

from nats.aio.msg import Msg

from potluck.registry.admission import Admission, expired


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def message(n: int) -> Msg:
    return Msg(_client=cast(Any, None), subject=f"potluck.register.h-{n}")


def test_expired_is_strictly_past_the_wait() -> None:
    """Tried: waits below, at and past the sender's. Holds: only past it is expired."""
    assert not expired(3.9, 4.0)
    assert not expired(4.0, 4.0)
    assert expired(4.1, 4.0)


async def test_runs_a_few_at_a_time_and_drops_what_waited_too_long() -> None:
    """Tried: five requests at once through two slots, the clock moved past the wait while
    the first two run. Holds: never more than two run together; the first two are served,
    the three that waited too long are dropped and counted, and nothing is left waiting."""
    clock = Clock()
    admission = Admission("register", limit=2, max_wait_s=4.0, clock=clock)
    release = asyncio.Event()
    served: list[str] = []
    running = 0
    most = 0

    async def handle(msg: Msg) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        served.append(msg.subject)
        running -= 1

    take = admission.admit(handle)
    for n in range(5):
        await take(message(n))
    await asyncio.sleep(0.01)
    assert running == 2
    assert admission.waiting == 5
    clock.now = 5.0
    release.set()
    while admission.waiting:
        await asyncio.sleep(0.01)
    assert served == ["potluck.register.h-0", "potluck.register.h-1"]
    assert admission.dropped == 3
    assert most == 2


async def test_serves_all_in_arrival_order_when_none_waits_too_long() -> None:
    """Tried: ten requests through three slots with the clock still. Holds: all ten served,
    in arrival order, none dropped; a handler's error does not stop the ones after it."""
    admission = Admission("register", limit=3, max_wait_s=4.0, clock=Clock())
    served: list[str] = []

    async def handle(msg: Msg) -> None:
        await asyncio.sleep(0)
        if msg.subject.endswith("h-4"):
            raise RuntimeError("a bug")
        served.append(msg.subject)

    take = admission.admit(handle)
    for n in range(10):
        await take(message(n))
    while admission.waiting:
        await asyncio.sleep(0.01)
    assert served == [f"potluck.register.h-{n}" for n in range(10) if n != 4]
    assert admission.dropped == 0
