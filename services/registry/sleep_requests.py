"""hostd's sleep notices (SLEEP.<host>): about to sleep, or woke after so long.

A notice is a command on the host's stream like a registration: decided by the
Host aggregate (`sleep_noticed`) and appended, answered with what was recorded.
The host is the one NATS authorised on the subject, never a field of the notice.

A notice is also a sign of life: the last-seen clock moves with it, so a host
that announced its sleep counts its stranded grace from the announcement, and
one that woke is not found silent before its first beat.
"""

from typing import Any

from potluck.contracts.messages import SleepNotice
from potluck.events import EventStore
from potluck.readmodels.hosts import HostsView
from potluck.registry import host as aggregate
from potluck.registry.heartbeats import LivenessWatch
from potluck.registry.repository import decide_on_host

__all__ = ["SleepRequests"]


class SleepRequests:
    def __init__(self, store: EventStore, view: HostsView, watch: LivenessWatch) -> None:
        self.store = store
        self.view = view
        self.watch = watch

    async def notice(self, host_id: str, payload: bytes) -> dict[str, Any]:
        notice = SleepNotice.model_validate_json(payload)
        outcome = await decide_on_host(
            self.store,
            host_id,
            lambda s: aggregate.sleep_noticed(s, host_id, notice),
            {"actor": f"host:{host_id}"},
            known=lambda: self.view.hosts.get(host_id),
        )
        self.watch.last_seen.beat(host_id)
        return {"host_id": host_id, "recorded": [type(e).type_name for e in outcome.events]}
