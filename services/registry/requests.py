"""What hosts and operators ask the registry: register, control, a host's status, the list.

Registration and controls are commands: decided on the host's stream and
appended (repository.py), answered with what was recorded. Status and the
list are queries: answered from the read model the registry folds, with the
last-seen clock that only the running registry has, and the log position the
model has reached, so an answer and its position belong together.
"""

import contextlib
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from potluck.contracts.host_events import Actor
from potluck.contracts.host_labels import BAD_LABELS
from potluck.contracts.messages import ControlHost, RegisterHost
from potluck.contracts.subjects import host_consumer, host_event_filter
from potluck.events import EVENTS_STREAM, EventStore, Fold
from potluck.kernel.rejections import Rejected
from potluck.readmodels.digests import Keyed
from potluck.readmodels.hosts import HostsView, host_as_dict
from potluck.readmodels.state_pages import BadStateRequest, answer_state_request, page_after
from potluck.registry import host as aggregate
from potluck.registry.claims import Claims
from potluck.registry.heartbeats import LivenessWatch
from potluck.registry.repository import Known, decide_on_host, load_host
from potluck.registry.ssh_keys import SshKeyHolders

__all__ = ["STATE_REQUESTS", "HostRequests"]

log = structlog.get_logger(__name__)

#: The requests on LIST_HOSTS that ask for the read model rather than a page of the list.
STATE_REQUESTS = ("digests", "bucket", "rows", "page")


class HostRequests:
    def __init__(
        self, store: EventStore, js: JetStreamContext, fold: Fold, view: HostsView, watch: LivenessWatch
    ) -> None:
        self.store = store
        self.js = js
        self.fold = fold
        self.view = view
        self.watch = watch
        #: Registrations refused per host for their labels (BAD_LABELS), since start.
        self.refused_labels: Counter[str] = Counter()
        #: Who holds each SSH host key: one host cannot take another's (ssh_keys.py).
        self.ssh_keys = SshKeyHolders(view)
        fold.after_batch.append(self.ssh_keys.notice)
        #: Each key checked against the whole log, one claim of it at a time (claims.py).
        self.claims = Claims(fold, store)

    async def register(self, host_id: str, payload: bytes) -> dict[str, Any]:
        req = RegisterHost.model_validate_json(payload)
        key = self.ssh_keys.blob(req.ssh_host_key)
        try:
            async with self.claims.claiming("ssh_host_key", key) if key else contextlib.nullcontext():
                if key:
                    self.ssh_keys.refuse_taken(host_id, key)
                outcome = await decide_on_host(
                    self.store,
                    host_id,
                    lambda s: aggregate.register(s, host_id, req),
                    {"actor": f"host:{host_id}"},
                    known=self._known(host_id),
                )
        except Rejected as exc:
            if exc.code == BAD_LABELS:
                # Logged at the pace the host's requests are let through (its rate, replies.py).
                self.refused_labels[host_id] += 1
                log.warning(
                    "registry.labels_refused",
                    host_id=host_id,
                    labels=len(req.labels),
                    error=exc.message,
                    refused=self.refused_labels[host_id],
                )
            raise
        await self._ensure_host_consumer(host_id)
        self.watch.last_seen.beat(host_id)
        state = await load_host(self.store, host_id, known=self.view.hosts.get(host_id))
        assert state is not None
        return {
            "host_id": host_id,
            "admin": state.admin,
            # While it drains, hostd stops its work when this is up, though it restarted meanwhile.
            "drain_left_s": state.drain_left_s(datetime.now(UTC)),
            "consumer": host_consumer(host_id),
            "heartbeat_interval_s": self.watch.policy.heartbeat_interval_s,
            "recorded": [type(e).type_name for e in outcome.events],
        }

    async def control_from_member(self, host_id: str, payload: bytes) -> dict[str, Any]:
        return await self.control(host_id, ControlHost.model_validate_json(payload), by="member")

    async def control(self, host_id: str, cmd: ControlHost, *, by: Actor) -> dict[str, Any]:
        outcome = await decide_on_host(
            self.store,
            host_id,
            lambda s: aggregate.control(s, host_id, cmd, by, now=datetime.now(UTC)),
            {"actor": by},
            known=self._known(host_id),
        )
        return {"host_id": host_id, "recorded": [type(e).type_name for e in outcome.events]}

    async def status(self, host_id: str, payload: bytes) -> dict[str, Any]:
        state = self.view.hosts.get(host_id)
        if state is None:
            raise Rejected("NOT_ENROLLED", f"host {host_id} is not enrolled", status=404)
        row = host_as_dict(state)
        seen = self.watch.last_seen.seen_ago().get(host_id)
        row["last_seen_s_ago"] = None if seen is None else round(seen, 3)
        return row

    def _known(self, host_id: str) -> Known:
        """The host as the view has folded it: a command reads only the host's events after it."""
        return lambda: self.view.hosts.get(host_id)

    def list_hosts(self, request: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One page of hosts by id (`{"after": HOST}` for the next; `next` says where to go on),
        the position the view has folded, and the events the fold could not read.

        `{"digests": true}` and the other read-model requests of replay --check
        (potluck.readmodels.state_pages) are answered over the `hosts` model instead."""
        request = request or {}
        base = {
            "position": self.fold.position,
            "event_id": self.fold.last_event_id,
            "skipped": self.fold.skipped.as_dict(),
        }
        hosts = self.view.hosts
        if any(k in request for k in STATE_REQUESTS):
            model = Keyed(list(hosts), lambda h: host_as_dict(hosts[h]))
            return {**base, **answer_state_request(request, {"hosts": model})}
        after = request.get("after")
        if after is not None and not isinstance(after, str):
            raise BadStateRequest(f"after must be a host id or null, not {after!r}")
        seen_ago = self.watch.last_seen.seen_ago()

        def row(host_id: str) -> dict[str, Any]:
            out = host_as_dict(hosts[host_id])
            seen = seen_ago.get(host_id)
            out["last_seen_s_ago"] = None if seen is None else round(seen, 3)
            return out

        page, next_key = page_after(Keyed(list(hosts), row), after)
        return {**base, "hosts": list(page.values()), "next": next_key}

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
