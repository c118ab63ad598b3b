"""The member's controls, sent with the host's own NATS identity (no database, no open port),
and what the running hostd reads on this machine (its status file in the state_dir).

`leave` is the one control that takes a while: it drains the machine (the
running work gets its grace), waits until nothing of the pool's is desired
here any more (or the grace and a margin passed), then records the leave
for good: the host never registers again until an operator enrolls it anew.
"""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS

from potluck.contracts.messages import ControlHost, DesiredState, Reply
from potluck.contracts.subjects import CONTROL, DESIRED, STATUS, inbox_prefix
from potluck.events.connection import IdentityRefused, connect_bus
from potluck.hostd.config import HostdConfig
from potluck.hostd.policy_runner import status_path
from potluck.hostd.shut_out import ShutOut
from potluck.hostd.state_lock import Holder, holder

#: After the drain's grace, how long `leave` still waits for hostd to stop the work and report it.
LEAVE_MARGIN_S = 30.0

Say = Callable[[str], None]


@contextlib.asynccontextmanager
async def _bus(config: HostdConfig) -> AsyncIterator[NATS]:
    try:
        nc = await connect_bus(
            config.nats_url,
            name=f"member-{config.host_id}",
            seed=config.nats_seed(),
            inbox_prefix=inbox_prefix(config.host_id),
            # A revoked machine's key is refused at once, and would be forever: say so instead.
            refused_after=3,
        )
    except IdentityRefused as exc:
        # Refused for a while, not for good: the registry capped the key's connections, as
        # hostd noted in the state directory (shut_out.py). Say that, not "revoked?".
        shut_out = ShutOut(config.state_dir)
        shut_out.load()
        if (why := shut_out.reason()) is not None:
            raise IdentityRefused(f"{why}; this machine's commands are refused until then too") from exc
        raise
    try:
        yield nc
    finally:
        await nc.close()


async def _request(nc: NATS, config: HostdConfig, subject: str, payload: bytes) -> Reply:
    try:
        msg = await nc.request(f"{subject}.{config.host_id}", payload, timeout=10)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
        raise ConnectionError(f"nobody answered on {subject} at {config.nats_url}: {exc!r}") from exc
    return Reply.model_validate_json(msg.data)


async def _ask(config: HostdConfig, subject: str, payload: bytes) -> Reply:
    async with _bus(config) as nc:
        return await _request(nc, config, subject, payload)


def _command(action: str, grace_s: float) -> bytes:
    return ControlHost.model_validate({"action": action, "grace_s": grace_s}).model_dump_json().encode()


async def control(config: HostdConfig, action: str, grace_s: float = 300.0) -> Reply:
    return await _ask(config, CONTROL, _command(action, grace_s))


async def status(config: HostdConfig) -> Reply:
    return await _ask(config, STATUS, b"{}")


@dataclass(frozen=True)
class Left:
    """How `leave` went: the registry's answer to the leave itself, and what was still here."""

    reply: Reply
    drained: bool
    still_here: int


async def leave(config: HostdConfig, grace_s: float, say: Say, *, poll_s: float = 0.5) -> Left:
    """Drain with `grace_s`, wait until no allocation is desired here (at most the grace and
    LEAVE_MARGIN_S), then leave for good."""
    async with _bus(config) as nc:
        drain = await _request(nc, config, CONTROL, _command("drain", grace_s))
        error = drain.error or {}
        if not drain.ok and error.get("code") != "NOT_REGISTERED":
            # Left or revoked already (HOST_LEFT, HOST_REVOKED), or refused: the leave would be too.
            return Left(drain, False, 0)
        if drain.ok:
            say(f"draining: running work gets {grace_s:g}s to finish")
        still_here = await _wait_for_no_work(nc, config, grace_s + LEAVE_MARGIN_S, say, poll_s)
        reply = await _request(nc, config, CONTROL, _command("leave", 0))
        return Left(reply, drain.ok, still_here)


async def _wait_for_no_work(nc: NATS, config: HostdConfig, timeout_s: float, say: Say, poll_s: float) -> int:
    """Until the allocator wants nothing to run here; how many allocations were still here."""
    deadline = time.monotonic() + timeout_s
    said = -1
    while True:
        try:
            reply = await _request(nc, config, DESIRED, b"{}")
            here = len(DesiredState.model_validate(reply.data).allocations) if reply.ok else -1
        except ConnectionError:
            here = -1  # the allocator is away: wait out the grace
        if here == 0:
            return 0
        if here != said and here > 0:
            say(f"waiting for {here} allocation(s) to end here")
            said = here
        if time.monotonic() >= deadline:
            return max(here, 0)
        await asyncio.sleep(poll_s)


def local_status(config: HostdConfig) -> dict[str, Any]:
    """hostd's own readings (donated caps, pool use, owner load, battery, temperature, the
    policy and its last transitions), with how old they are; hostd rewrites them every few
    seconds and at every change of its policy."""
    path = status_path(config)
    running = holder(config.state_dir)
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        if running is not None:
            return {"error": f"no {path} yet: {_not_written(running)}", "hostd_pid": running.pid}
        return {"error": f"no {path}: hostd has not run here with this state_dir"}
    except (OSError, ValueError) as exc:
        return {"error": f"{path}: {exc}"}
    try:
        at = datetime.fromisoformat(str(data.get("at")))
        age = (datetime.now(UTC) - at).total_seconds()
    except (TypeError, ValueError):
        at, age = None, None
    data["age_s"] = None if age is None else round(age, 1)
    data["hostd_pid"] = None if running is None else running.pid
    if running is not None and at is not None and at < running.since:
        # Kept from the hostd before (what its policy held stands until this one decides).
        data["stale"] = f"written by the hostd before this one; {_not_written(running)}"
    elif age is None or age > 10:
        data["stale"] = (
            "hostd has not updated this for a while: is it running?"
            if running is None
            else f"hostd (pid {running.pid}) runs but has not updated this for a while: see its log"
        )
    return data


def _not_written(running: Holder) -> str:
    """What a member is told of a hostd that runs and has written no status of its own yet."""
    return (
        f"hostd is running (pid {running.pid}, since {running.since.isoformat(timespec='seconds')}) "
        "and has not written its status yet: it does once it is in touch with the pool and its "
        "Docker engine answers (`engine_away` above says whether the pool has it away); its log says "
        "what it waits for"
    )
