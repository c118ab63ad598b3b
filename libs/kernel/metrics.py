"""The pool's metrics as OpenTelemetry instruments, sampled from each service's own read models.

The instruments are made once per process (`pool_metrics()`); each service
adds the sources it can see, so no module here reaches into a service. With no
SDK meter provider installed (metrics off) sampling does nothing.
"""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider

from potluck.kernel.version import __version__

__all__ = ["PoolMetrics", "Sample", "pool_metrics"]

_LATENCY_BUCKETS = [
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
]

Sample = list[tuple[str, float, dict[str, str]]]


class PoolMetrics:
    """The numbers an operator and a member watch, as OpenTelemetry instruments.

    Gauges (sampled every `interval` seconds by `run()` on the event loop, so
    the exporter's thread never reads a model while the loop changes it):

        potluck.capacity.cpus / .memory / .disk   {host_id, kind=donated|reserved|free}
        potluck.allocations                       {state}
        potluck.hosts                             {status}
        potluck.host.heartbeats_missed            {host_id}
        potluck.relay.lag                         {relay}: head position minus checkpoint

    and the histogram `potluck.placement.latency` (seconds from a request to
    its placement), recorded as the allocator follows the log. A service adds
    the sources it has: potluck.allocator.metrics, potluck.registry.metrics,
    potluck.events.relay's `watch_relay_lag`.
    """

    GAUGES = (
        ("potluck.capacity.cpus", "{cpu}", "CPUs donated, reserved and free per host"),
        ("potluck.capacity.memory", "By", "Memory donated, reserved and free per host"),
        ("potluck.capacity.disk", "By", "Disk donated, reserved and free per host"),
        ("potluck.allocations", "{allocation}", "Allocations by state"),
        ("potluck.hosts", "{host}", "Hosts by status"),
        ("potluck.host.heartbeats_missed", "{heartbeat}", "Heartbeats missed in a row per registered host"),
        ("potluck.relay.lag", "{event}", "Events in the log the relay has not published yet"),
    )

    def __init__(self, meter: metrics.Meter | None = None) -> None:
        self.meter = meter or metrics.get_meter("potluck", __version__)
        self._values: dict[str, list[Observation]] = {name: [] for name, _, _ in self.GAUGES}
        self._sync: list[Callable[[], Sample]] = []
        self._async: list[Callable[[], Awaitable[Sample]]] = []
        for name, unit, description in self.GAUGES:
            self.meter.create_observable_gauge(
                name, callbacks=[self._callback(name)], unit=unit, description=description
            )
        self.placement_latency = self.meter.create_histogram(
            "potluck.placement.latency",
            unit="s",
            description="Time from an allocation's request to its placement",
            explicit_bucket_boundaries_advisory=_LATENCY_BUCKETS,
        )

    def _callback(self, name: str) -> Callable[[CallbackOptions], list[Observation]]:
        def observe(options: CallbackOptions) -> list[Observation]:
            return list(self._values[name])

        return observe

    # Sources: each service adds what it can see (its own metrics module says what).

    def add_source(self, sample: Callable[[], Sample]) -> None:
        """Call `sample` at every sampling; it reads the caller's models on the event loop."""
        self._sync.append(sample)

    def add_async_source(self, sample: Callable[[], Awaitable[Sample]]) -> None:
        """As add_source, for a source that must await (a database query); a failure keeps its last values."""
        self._async.append(sample)

    def record_placement(self, requested_at: datetime, placed_at: datetime) -> None:
        self.placement_latency.record(max((placed_at - requested_at).total_seconds(), 0.0))

    async def sample(self) -> None:
        """Take every gauge's values now."""
        values: dict[str, list[Observation]] = {name: [] for name in self._values}
        samples: list[Sample] = [source() for source in self._sync]
        for source in self._async:
            try:
                samples.append(await source())
            except Exception:  # the database is away: keep the last value rather than stop
                values["potluck.relay.lag"] = list(self._values["potluck.relay.lag"])
        for sample in samples:
            for name, value, attrs in sample:
                values[name].append(Observation(value, attrs))
        self._values = values

    async def run(self, interval: float = 5.0) -> None:
        """Sample until cancelled; idle when metrics are off (no SDK meter provider installed)."""
        if not isinstance(metrics.get_meter_provider(), MeterProvider):
            await asyncio.Event().wait()
        while True:
            await self.sample()
            await asyncio.sleep(interval)


_pool_metrics: PoolMetrics | None = None


def pool_metrics() -> PoolMetrics:
    """This process's one PoolMetrics (instruments must be made once per process)."""
    global _pool_metrics
    if _pool_metrics is None:
        _pool_metrics = PoolMetrics()
    return _pool_metrics
