"""hostd's reports of its Docker engine (EngineStatus on `potluck.report.<host_id>.engine`)
into the host's facts: HostEngineLost while the engine does not answer, HostEngineReturned
when it does again (host.engine_reported decides; the same state again records nothing).

hostd keeps running when its engine stops, and keeps beating: without these facts the pool
saw a live, active host and placed work there that could never start. A host whose engine is
away is not schedulable (HostState.schedulable), and its member, the operator and the users of
its allocations read why.

The reports come through the reports stream, as every report does, read here by a durable
consumer of the registry's own (the allocator reads the same reports for its log lines). The
host is the one NATS authorised on the subject, never a field of the report: a host may
publish only on its own report subjects (nats_auth.host_permissions), so no host can say
another's engine is away. The events' ids derive from the report's id, so a redelivered
report is recorded once.

A host that reports transitions faster than ENGINE_RECORD_RATE is in a loop (or hostile):
its latest report past the rate is held back, superseded by any later one, and decided once
the rate allows, so the log keeps the engine's last word without one host filling it.
"""

import asyncio
import time

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pydantic import ValidationError

from potluck.contracts.messages import unstorable_field
from potluck.contracts.reports import EngineStatus
from potluck.events import REPORTS_STREAM, EventStore, PoisonMessage, Subscriber
from potluck.events.bus import REPORT_PREFIX
from potluck.kernel.key_rates import KeyRates, RatePolicy
from potluck.readmodels.hosts import HostsView
from potluck.registry import host as aggregate
from potluck.registry.repository import decide_on_host

__all__ = ["ENGINE_RECORD_RATE", "EngineReports", "engine_report_decoder"]

log = structlog.get_logger(__name__)

#: The registry's consumer of engine reports.
DURABLE = "registry-engine-reports"
#: Engine transitions recorded per host: a real engine stops and starts a few times a day at
#: most; past this a host is in a loop (or hostile), and its latest word waits for the rate.
ENGINE_RECORD_RATE = RatePolicy(per_s=0.2, burst=20)
#: How often held-back reports are looked at again.
HELD_BACK_TICK_S = 1.0


def engine_report_decoder(msg: Msg) -> tuple[str, EngineStatus]:
    """The host NATS authorised on the subject (`potluck.report.<host_id>.engine`), and its report."""
    parts = msg.subject.split(".")
    if len(parts) != 4 or f"{parts[0]}.{parts[1]}" != REPORT_PREFIX or parts[3] != "engine":
        raise PoisonMessage(f"unexpected engine report subject {msg.subject}")
    try:
        report = EngineStatus.model_validate_json(msg.data)
    except ValidationError as exc:
        raise PoisonMessage(f"engine report from {parts[2]}: {exc}") from exc
    problem = unstorable_field(report)
    if problem is not None:
        raise PoisonMessage(f"engine report from {parts[2]}: {problem}")
    return parts[2], report


class EngineReports:
    def __init__(self, store: EventStore, view: HostsView, *, rate: RatePolicy = ENGINE_RECORD_RATE) -> None:
        self.store = store
        self.view = view
        self.rates = KeyRates(rate)
        #: Per host, the latest report the rate held back.
        self.held_back: dict[str, EngineStatus] = {}

    def subscriber(self, nc: NATS) -> Subscriber[tuple[str, EngineStatus]]:
        return Subscriber(
            nc,
            durable=DURABLE,
            stream=REPORTS_STREAM,
            subjects=[f"{REPORT_PREFIX}.*.engine"],
            decode=engine_report_decoder,
            handle=self.handle,
        )

    async def run(self, nc: NATS) -> None:
        await asyncio.gather(self.subscriber(nc).run(), self._held_back_loop())

    async def handle(self, item: tuple[str, EngineStatus]) -> None:
        host_id, report = item
        self.held_back.pop(host_id, None)  # this one is newer
        if not self._admitted(host_id, report):
            self.held_back[host_id] = report
            return
        await self._record(host_id, report)

    def _admitted(self, host_id: str, report: EngineStatus) -> bool:
        """Would `report` change the host (as the view has it), and is that within the rate?
        One that changes nothing costs no rate."""
        if not aggregate.engine_reported(self.view.hosts.get(host_id), report.available, report.detail):
            return True
        verdict = self.rates.check(host_id, time.monotonic())
        if not verdict.allowed and verdict.log:
            log.warning(
                "registry.engine_reports_held_back",
                host_id=host_id,
                held_back_in_a_row=verdict.streak,
                hint="a hostd reports its engine only when it stops or starts answering: look at "
                "that host; its latest report is recorded once it reports slower",
            )
        return verdict.allowed

    async def _record(self, host_id: str, report: EngineStatus) -> None:
        outcome = await decide_on_host(
            self.store,
            host_id,
            lambda s: aggregate.engine_reported(s, report.available, report.detail),
            {"actor": f"host:{host_id}", "causation_id": report.report_id},
            known=lambda: self.view.hosts.get(host_id),
            source_id=f"engine-report/{host_id}/{report.report_id}",
        )
        for event in outcome.events:
            (log.info if report.available else log.warning)(
                "registry.host_engine",
                host_id=host_id,
                recorded=type(event).type_name,
                detail=report.detail[:200],
            )

    async def _held_back_loop(self) -> None:
        while True:
            await asyncio.sleep(HELD_BACK_TICK_S)
            for host_id, report in list(self.held_back.items()):
                if self.held_back.get(host_id) is not report or not self._admitted(host_id, report):
                    continue
                del self.held_back[host_id]
                try:
                    await self._record(host_id, report)
                except Exception as exc:  # tried again at its next tick
                    self.held_back.setdefault(host_id, report)
                    log.warning("registry.engine_report_not_recorded", host_id=host_id, error=str(exc))
