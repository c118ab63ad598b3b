"""The registry process: folds the log into its view of the hosts, answers requests, watches liveness.

One concern per module: the view is HostsView fed by potluck.events' Fold
(projection.py); registration, controls and queries are requests.py;
heartbeats and silence are heartbeats.py; hostd's engine reports are
engine_reports.py; a command on a host is decided on
the host's stream and appended (repository.py); registrations the gate admits
are taken a few at a time, and dropped once their sender stopped waiting
(admission.py). This module starts them in
order: the view catches up with the log before any request is answered, and
silence is counted only once the subscriptions are in place.

Hosts' requests pass one gate (replies.py): within the host's rate, and
answered only into the host's own inbox; LIST_HOSTS, which only services may
send, is answered only into the services' inbox, one page of hosts at a time
(`next`: the host id to ask after), or with digests of the hosts model for
`potluck ops replay --check` (potluck.readmodels.state_pages). What was refused is counted
per host in every LIST_HOSTS answer (`refused`). A host that left or was
revoked is refused whatever it asks but its status (`refused.gone_hosts`). The events
consumer of a host that deregistered, left or was revoked is removed from NATS once its
hostd acknowledged that, or after a grace (consumer_sweep.py).

An event the registry cannot decode (a newer writer's type) is skipped and
counted (`skipped`, also in every LIST_HOSTS answer), and the registry keeps
serving.
"""

import asyncio
import json
from collections.abc import Sequence

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from potluck.contracts.messages import Reply
from potluck.contracts.subjects import (
    CONTROL,
    HEARTBEAT,
    JOIN,
    LIST_HOSTS,
    POLICY,
    REGISTER,
    SERVICE_INBOX,
    SLEEP,
    STATUS,
)
from potluck.events import EventStore, SkippedEvents, ensure_streams
from potluck.events.checkpoints import Checkpointer, checkpoint_policy
from potluck.events.replies import ReplyGuard
from potluck.kernel.key_rates import KeyRates, RatePolicy
from potluck.kernel.rejections import Rejected
from potluck.readmodels.hosts import HostsView
from potluck.readmodels.state_pages import BadStateRequest
from potluck.registry import host as aggregate
from potluck.registry.admission import Admission
from potluck.registry.connection_caps import CapPolicy
from potluck.registry.connection_watch import ConnectionWatch
from potluck.registry.consumer_sweep import ConsumerSweep
from potluck.registry.engine_reports import EngineReports
from potluck.registry.heartbeats import LivenessWatch
from potluck.registry.joining import JoinHandler
from potluck.registry.liveness import LastSeen, LivenessPolicy
from potluck.registry.nats_auth import public_key_of
from potluck.registry.policy_requests import PolicyRequests
from potluck.registry.projection import READER, host_checkpoints, hosts_fold
from potluck.registry.replies import HostRequestGate, answer
from potluck.registry.requests import HostRequests
from potluck.registry.sleep_requests import SleepRequests
from potluck.registry.users_file import NatsAuthFiles, UsersFileKeeper

__all__ = ["REQUEST_RATE", "RegistryService"]

#: Requests (register, control, status) per host: hostd registers at start and after each
#: reconnect, a member's controls are typed by hand; 30 at once then 2 a second is ample.
REQUEST_RATE = RatePolicy(per_s=2.0, burst=30)

log = structlog.get_logger(__name__)


class RegistryService:
    def __init__(
        self,
        store: EventStore,
        nc: NATS,
        policy: LivenessPolicy,
        *,
        request_rate: RatePolicy = REQUEST_RATE,
        nats_auth: NatsAuthFiles | None = None,
        consumer_grace_s: float = 60.0,
        nats_monitor_urls: Sequence[str] = (),
        connection_caps: CapPolicy | None = None,
        connection_watch_s: float = 2.0,
    ) -> None:
        """`nats_monitor_urls` (nats-server's monitoring endpoints, one per node) turn on the
        watch on each host key's connections (connection_watch.py); it needs `nats_auth`."""
        self.store = store
        self.nc = nc
        self.js = nc.jetstream()
        self.policy = policy
        self.view = HostsView()
        self.fold = hosts_fold(self.view, reader=READER)
        self.watch = LivenessWatch(store, self.view, policy)
        self.replies = ReplyGuard("registry")
        self.gate = HostRequestGate(self.replies, KeyRates(request_rate), gone=self._gone)
        self.requests = HostRequests(store, self.js, self.fold, self.view, self.watch)
        #: Renders the NATS users file at start, for joins and as join keys' time ends
        #: (users_file.py); None without --nats-auth-file.
        self.users_file = (
            UsersFileKeeper(store, self.view, nats_auth, fresh_view=self._view_caught_up)
            if nats_auth is not None
            else None
        )
        #: Shuts out a host whose key holds too many NATS connections (connection_caps.py);
        #: None without monitoring URLs.
        self.connections: ConnectionWatch | None = None
        if nats_monitor_urls:
            if self.users_file is None or nats_auth is None:
                raise ValueError("the connection watch needs the NATS users file (nats_auth)")
            self.connections = ConnectionWatch(
                store,
                self._view_caught_up,
                self.users_file,
                nats_monitor_urls,
                [public_key_of(seed) for seed in nats_auth.service_seeds()],
                policy=connection_caps,
                interval_s=connection_watch_s,
            )
        self.joining = JoinHandler(store, self.view, self.users_file, self.requests.claims)
        self.sleep = SleepRequests(store, self.view, self.watch)
        #: hostd's reports of its Docker engine into HostEngineLost / HostEngineReturned.
        self.engines = EngineReports(store, self.view)
        #: The position of the checkpoint the view was loaded from (0: folded from zero).
        self.resumed_from = 0
        #: Registrations a few at a time: thousands at once are served, not timed out (admission.py).
        self.registrations = Admission("register")
        #: Removes the consumers of hosts that are out of the pool (consumer_sweep.py).
        self.consumers = ConsumerSweep(self.js, self.view, grace_s=consumer_grace_s)
        self.fold.after_batch.append(self.consumers.notice)

    @property
    def last_seen(self) -> LastSeen:
        return self.watch.last_seen

    @property
    def skipped(self) -> SkippedEvents:
        """The events of the log the view could not decode."""
        return self.fold.skipped

    async def run(self) -> None:
        await ensure_streams(self.js)
        checkpoints = host_checkpoints(self.store)
        checkpoint = await checkpoints.load()
        if checkpoint is not None:
            view, skipped = checkpoint.state
            self.view.hosts = view.hosts
            self.view.position = view.position
            self.fold.position = self.resumed_from = checkpoint.position
            self.fold.skipped = skipped
        await self.fold.catch_up(self.store)
        self.view.position = max(self.view.position, self.fold.position)
        if self.users_file is not None:
            await self.users_file.render_at_start()
        checkpointer = Checkpointer(
            checkpoints,
            lambda: (self.view, self.fold.skipped),
            lambda: self.fold.position,
            **checkpoint_policy(),
            saved_at=self.resumed_from,
        )
        log.info(
            "registry.loaded",
            hosts=len(self.view.hosts),
            position=self.fold.position,
            resumed_from=self.resumed_from,
            skipped=self.fold.skipped.count,
        )
        queue = "registry"
        subs = [
            await self.nc.subscribe(
                f"{REGISTER}.*",
                queue=queue,
                cb=self.gate.on_request(self.requests.register, queue=self.registrations.admit),
            ),
            await self.nc.subscribe(
                f"{CONTROL}.*", queue=queue, cb=self.gate.on_request(self.requests.control_from_member)
            ),
            await self.nc.subscribe(f"{HEARTBEAT}.*", cb=self.watch.on_heartbeat),
            await self.nc.subscribe(
                f"{POLICY}.*", queue=queue, cb=self.gate.on_request(PolicyRequests(self.requests).changed)
            ),
            await self.nc.subscribe(LIST_HOSTS, queue=queue, cb=self._on_list),
            await self.nc.subscribe(
                f"{STATUS}.*", queue=queue, cb=self.gate.on_request(self.requests.status, gone_too=True)
            ),
            await self.nc.subscribe(
                f"{JOIN}.*", queue=queue, cb=self.gate.on_request(self.joining.join, joining=True)
            ),
            await self.nc.subscribe(f"{SLEEP}.*", queue=queue, cb=self.gate.on_request(self.sleep.notice)),
        ]
        # Only once the server has our subscriptions can beats arrive; silence is counted from
        # then, not from before the restart, so every host gets a fresh grace period.
        await self.nc.flush()
        self.watch.start_clock()
        try:
            await asyncio.gather(
                self.fold.follow(self.store),
                self.watch.run(),
                checkpointer.run(),
                self.consumers.run(),
                self.engines.run(self.nc),
                *([self.users_file.run()] if self.users_file is not None else []),
                *([self.connections.run()] if self.connections is not None else []),
            )
        finally:
            for sub in subs:
                await sub.unsubscribe()
            await self.registrations.close()

    def refused(self) -> dict[str, dict[str, int]]:
        """Refused per host since start: requests over the rate, beats over the rate, messages on
        a heartbeat subject that are no beat, bad reply subjects, requests of hosts that left or
        were revoked, registrations with labels outside the bound."""
        return {
            "requests_over_rate": dict(sorted(self.gate.rates.refused.items())),
            "beats_over_rate": dict(sorted(self.watch.rates.refused.items())),
            "bad_beats": dict(sorted(self.watch.bad_beats.items())),
            "reply_subjects": self.replies.as_dict(),
            "gone_hosts": dict(sorted(self.gate.refused_gone.items())),
            "bad_labels": dict(sorted(self.requests.refused_labels.items())),
        }

    async def _view_caught_up(self) -> HostsView:
        """The view once it has folded everything committed before this call: a render of the
        NATS users file reads it rather than the whole log again."""
        await self.fold.caught_up_with(self.store)
        return self.view

    def _gone(self, host_id: str) -> Rejected | None:
        """Why a host that left or was revoked is refused, as the view has folded it."""
        state = self.view.hosts.get(host_id)
        return None if state is None else aggregate.gone_refusal(state)

    async def _on_list(self, msg: Msg) -> None:
        try:
            request = json.loads(msg.data) if msg.data.strip() else {}
            if not isinstance(request, dict):
                raise BadStateRequest('the request must be a JSON object, e.g. {} or {"after": "h-..."}')
            reply = Reply(ok=True, data={**self.requests.list_hosts(request), "refused": self.refused()})
        except (ValueError, BadStateRequest) as exc:
            log.info("registry.list_request_refused", error=str(exc))
            reply = Reply(ok=False, error={"code": "BAD_REQUEST", "message": str(exc)})
        await answer(msg, reply, self.replies, SERVICE_INBOX, requester="services")
