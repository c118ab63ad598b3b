"""The registry at work: registration and control requests, heartbeats, liveness.

Commands are decided on the host's stream as it is in the log (not on the
possibly lagging read model) and appended with its expected version, so two
registry replicas never record the same transition twice.
"""

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from potluck.contracts.host_events import Actor, host_stream
from potluck.contracts.messages import ControlHost, Heartbeat, RegisterHost, Reply
from potluck.contracts.subjects import (
    CONTROL,
    HEARTBEAT,
    LIST_HOSTS,
    REGISTER,
    STATUS,
    host_consumer,
    host_event_filter,
    host_of,
)
from potluck.events import EVENTS_STREAM, Event, EventStore, LogFollower, ensure_streams, registry
from potluck.events.decide import decide_and_append as retry_on_conflict
from potluck.kernel.rejections import Rejected
from potluck.readmodels.hosts import HostState, HostsView, evolve, host_as_dict
from potluck.registry import host as aggregate
from potluck.registry.liveness import LastSeen, LivenessPolicy

log = structlog.get_logger(__name__)

Decision = Callable[[HostState | None], list[Event]]


@dataclass(frozen=True)
class Outcome:
    state: HostState | None
    events: list[Event]


async def load_host(store: EventStore, host_id: str) -> HostState | None:
    state: HostState | None = None
    for record in await store.read_stream(host_stream(host_id)):
        state = evolve(state, registry.decode_record(record), record.version, record.recorded_at)
    return state


async def decide_and_append(
    store: EventStore, host_id: str, decide: Decision, metadata: Mapping[str, Any] | None = None
) -> Outcome:
    """Load, decide, append with the expected version; again if another writer won."""

    async def attempt() -> Outcome:
        state = await load_host(store, host_id)
        events = decide(state)
        if events:
            await store.append(
                host_stream(host_id),
                events,
                expected_version=state.version if state else 0,
                metadata=metadata,
            )
            for event in events:
                log.info("host.event", host_id=host_id, type=type(event).type_name)
        return Outcome(state, events)

    return await retry_on_conflict(attempt)


async def rebuild_view(store: EventStore, view: HostsView, batch: int = 5000) -> None:
    while records := await store.read_all(view.position, batch):
        for record in records:
            if record.category == "host":
                view.apply(
                    registry.decode_record(record),
                    position=record.position,
                    version=record.version,
                    at=record.recorded_at,
                )
            else:
                view.position = record.position


class RegistryService:
    def __init__(self, store: EventStore, nc: NATS, policy: LivenessPolicy) -> None:
        self.store = store
        self.nc = nc
        self.js = nc.jetstream()
        self.policy = policy
        self.view = HostsView()
        self.last_seen = LastSeen()

    async def run(self) -> None:
        await ensure_streams(self.js)
        await rebuild_view(self.store, self.view)
        log.info("registry.loaded", hosts=len(self.view.hosts), position=self.view.position)
        subs = [
            await self.nc.subscribe(f"{REGISTER}.*", queue="registry", cb=self._on_register),
            await self.nc.subscribe(f"{CONTROL}.*", queue="registry", cb=self._on_control),
            await self.nc.subscribe(f"{HEARTBEAT}.*", cb=self._on_heartbeat),
            await self.nc.subscribe(LIST_HOSTS, queue="registry", cb=self._on_list),
            await self.nc.subscribe(f"{STATUS}.*", queue="registry", cb=self._on_status),
        ]
        # Only once the server has our subscriptions can beats arrive; silence is counted from
        # then, not from before the restart, so every host gets a fresh grace period.
        await self.nc.flush()
        self.last_seen = LastSeen()
        try:
            await asyncio.gather(self._follow(), self._watch_liveness())
        finally:
            for sub in subs:
                await sub.unsubscribe()

    async def _follow(self) -> None:
        follower = LogFollower(self.store, after_position=self.view.position)
        async for record in follower.events():
            if record.category == "host":
                self.view.apply(
                    registry.decode_record(record),
                    position=record.position,
                    version=record.version,
                    at=record.recorded_at,
                )
            else:
                self.view.position = record.position

    async def _respond(self, msg: Msg, handler: Callable[[str, bytes], Any]) -> None:
        host_id = host_of(msg.subject)
        try:
            data = await handler(host_id, msg.data)
            reply = Reply(ok=True, data=data)
        except ValidationError as exc:
            reply = Reply(ok=False, error={"code": "BAD_REQUEST", "message": _first_error(exc)})
        except Rejected as exc:
            reply = Reply(ok=False, error=exc.as_dict())
        except Exception as exc:
            log.exception("registry.request_failed", subject=msg.subject)
            reply = Reply(ok=False, error={"code": "INTERNAL", "message": f"registry failed: {exc!r}"})
        if msg.reply:
            await msg.respond(reply.model_dump_json().encode())

    async def _on_status(self, msg: Msg) -> None:
        await self._respond(msg, self.status)

    async def status(self, host_id: str, payload: bytes) -> dict[str, Any]:
        state = self.view.hosts.get(host_id)
        if state is None:
            raise Rejected("NOT_ENROLLED", f"host {host_id} is not enrolled", status=404)
        row = host_as_dict(state)
        seen = self.last_seen.seen_ago().get(host_id)
        row["last_seen_s_ago"] = None if seen is None else round(seen, 3)
        return row

    async def _on_list(self, msg: Msg) -> None:
        seen_ago = self.last_seen.seen_ago()
        hosts = []
        for state in sorted(self.view.hosts.values(), key=lambda h: h.host_id):
            row = host_as_dict(state)
            row["last_seen_s_ago"] = round(seen_ago[state.host_id], 3) if state.host_id in seen_ago else None
            hosts.append(row)
        reply = Reply(ok=True, data={"position": self.view.position, "hosts": hosts})
        if msg.reply:
            await msg.respond(reply.model_dump_json().encode())

    async def _on_register(self, msg: Msg) -> None:
        await self._respond(msg, self.register)

    async def _on_control(self, msg: Msg) -> None:
        await self._respond(msg, self.control_from_member)

    async def register(self, host_id: str, payload: bytes) -> dict[str, Any]:
        req = RegisterHost.model_validate_json(payload)
        outcome = await decide_and_append(
            self.store,
            host_id,
            lambda s: aggregate.register(s, host_id, req),
            {"actor": f"host:{host_id}"},
        )
        await self._ensure_host_consumer(host_id)
        self.last_seen.beat(host_id)
        state = await load_host(self.store, host_id)
        assert state is not None
        return {
            "host_id": host_id,
            "admin": state.admin,
            "consumer": host_consumer(host_id),
            "heartbeat_interval_s": self.policy.heartbeat_interval_s,
            "recorded": [type(e).type_name for e in outcome.events],
        }

    async def control_from_member(self, host_id: str, payload: bytes) -> dict[str, Any]:
        return await self.control(host_id, ControlHost.model_validate_json(payload), by="member")

    async def control(self, host_id: str, cmd: ControlHost, *, by: Actor) -> dict[str, Any]:
        outcome = await decide_and_append(
            self.store, host_id, lambda s: aggregate.control(s, host_id, cmd, by), {"actor": by}
        )
        return {"host_id": host_id, "recorded": [type(e).type_name for e in outcome.events]}

    async def _ensure_host_consumer(self, host_id: str) -> None:
        """The host's one consumer: its own events only. Hosts may not create consumers."""
        await self.js.add_consumer(
            EVENTS_STREAM,
            config=ConsumerConfig(
                durable_name=host_consumer(host_id),
                filter_subject=host_event_filter(host_id),
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=30,
                max_ack_pending=256,
            ),
        )

    async def _on_heartbeat(self, msg: Msg) -> None:
        host_id = host_of(msg.subject)
        try:
            Heartbeat.model_validate_json(msg.data)
        except ValidationError as exc:
            log.warning("registry.bad_heartbeat", host_id=host_id, error=_first_error(exc))
            return
        self.last_seen.beat(host_id)
        state = self.view.hosts.get(host_id)
        if state is not None and state.liveness in ("suspect", "lost"):
            await decide_and_append(
                self.store,
                host_id,
                lambda s: aggregate.beat_returned(s) if s else [],
                {"actor": "registry"},
            )

    async def _watch_liveness(self) -> None:
        interval = min(1.0, self.policy.heartbeat_interval_s / 2)
        while True:
            await asyncio.sleep(interval)
            for host_id, state in list(self.view.hosts.items()):
                if not state.registered or state.liveness == "lost":
                    continue
                if self.last_seen.silent_for(host_id) < self.policy.suspect_after_s:
                    continue
                # The silence is measured again when deciding, after the stream is read: a beat
                # (and its HostRecovered) may have come in meanwhile, and a figure taken before
                # it would declare lost a host that has just recovered.
                await decide_and_append(
                    self.store,
                    host_id,
                    lambda s, host_id=host_id: (
                        aggregate.went_silent(  # type: ignore[misc]
                            s,
                            self.last_seen.silent_for(host_id),
                            suspect_after_s=self.policy.suspect_after_s,
                            lost_after_s=self.policy.lost_after_s,
                        )
                        if s
                        else []
                    ),
                    {"actor": "registry"},
                )


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(body)"
    return f"{loc}: {err['msg']}"
