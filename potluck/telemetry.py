"""OpenTelemetry for every Potluck process, configured by the standard `OTEL_*` variables.

`configure_telemetry(service_name)` is called once at the start of a process
(the central services in potluck.bootstrap.serve, hostd in the CLI) and
returns the callable that flushes and shuts everything down at its end.

Where spans and metrics go, for each signal separately:

- an OTLP/HTTP exporter (protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT`, or the
  signal's own `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
  `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, is set, or when
  `OTEL_TRACES_EXPORTER` / `OTEL_METRICS_EXPORTER` says `otlp` explicitly
  (then the default endpoint, http://localhost:4318);
- otherwise a local JSON-lines file when `POTLUCK_TRACES_FILE` /
  `POTLUCK_METRICS_FILE` is set (one span, or one metrics batch, per line;
  several processes may append to one file; at POTLUCK_TELEMETRY_FILE_MAX_BYTES,
  32 MiB by default, it moves to `<file>.1`, the one old file kept). A pool
  from `potluck up` sets POTLUCK_TRACES_FILE for its processes unless OTEL_*
  names a collector (`collector_configured`);
- otherwise nothing: the API stays the no-op one and costs nothing.

`OTEL_SDK_DISABLED=true` or an exporter of `none` turns a signal off;
`console` writes it to stderr. `OTEL_SERVICE_NAME` overrides the service's
default name (`potluck-allocator`, `potluck-hostd`, ...);
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`,
`OTEL_BSP_*` and `OTEL_METRIC_EXPORT_INTERVAL` work as everywhere. Only the
`http/protobuf` protocol is installed; asking for another one names the
variable and fails at start, as any bad setting does.

Sampling is parent-based (a hostd follows the allocator's decision), with
`OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` for the roots, and one
rule of our own: a database query that is not part of any trace (a follower
polling the log, a relay checkpoint) starts none. The asyncpg instrumentation
then shows exactly the queries of a traced request (the log append among
them), and the aiohttp server instrumentation the HTTP requests (health
checks excluded).

This module only sets telemetry up. The span helpers live beside what they
trace (potluck.events.tracing for the bus, potluck.hostd.spans for Docker),
and the pool's metrics in potluck.kernel.metrics, fed by each service's own
metrics module.
"""

import contextlib
import json
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes

from potluck.kernel.version import __version__

if TYPE_CHECKING:
    pass

__all__ = [
    "DEFAULT_OTLP_ENDPOINT",
    "JsonLinesMetricExporter",
    "JsonLinesSpanExporter",
    "SignalPlan",
    "Telemetry",
    "TelemetryConfigError",
    "TelemetryPlan",
    "build_telemetry",
    "collector_configured",
    "configure_telemetry",
    "plan_telemetry",
]

T = TypeVar("T")

DEFAULT_OTLP_ENDPOINT = "http://localhost:4318"
TRACES_FILE = "POTLUCK_TRACES_FILE"
METRICS_FILE = "POTLUCK_METRICS_FILE"
#: The size at which a local traces or metrics file is moved to `<file>.1` (the one old file kept).
FILE_MAX_BYTES = "POTLUCK_TELEMETRY_FILE_MAX_BYTES"
DEFAULT_FILE_MAX_BYTES = 32 << 20
#: Health checks poll every few seconds; they would drown the traces that matter.
_DEFAULT_EXCLUDED_URLS = "/healthz,/readyz"

Destination = Literal["otlp", "file", "console", "off"]


class TelemetryConfigError(ValueError):
    """A bad OTEL_* or POTLUCK_* telemetry setting; the message names the variable."""


# --- what goes where --------------------------------------------------------------------------


@dataclass(frozen=True)
class SignalPlan:
    """Where one signal (traces or metrics) goes: an OTLP URL, a file path, the console, or nowhere."""

    destination: Destination
    target: str | None = None
    #: For a file: the size at which it rotates (None: DEFAULT_FILE_MAX_BYTES).
    max_bytes: int | None = None

    @property
    def on(self) -> bool:
        return self.destination != "off"


@dataclass(frozen=True)
class TelemetryPlan:
    service_name: str
    traces: SignalPlan
    metrics: SignalPlan
    sampler: Sampler = field(default_factory=lambda: ParentBased(ALWAYS_ON))


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _exporters(environ: Mapping[str, str], variable: str) -> set[str]:
    raw = environ.get(variable, "").strip().lower()
    if not raw:
        return set()
    names = {part.strip() for part in raw.split(",") if part.strip()}
    unknown = names - {"otlp", "console", "none"}
    if unknown:
        raise TelemetryConfigError(
            f"{variable}={raw!r}: only otlp, console and none are supported, not {', '.join(sorted(unknown))}"
        )
    return names


def _check_protocol(environ: Mapping[str, str], signal: str) -> None:
    for variable in (f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = environ.get(variable, "").strip().lower()
        if value:
            if value != "http/protobuf":
                raise TelemetryConfigError(
                    f"{variable}={value!r}: potluck exports OTLP over http/protobuf only "
                    "(a collector's port 4318); set it to http/protobuf or unset it"
                )
            return


def _otlp_url(environ: Mapping[str, str], signal: str, explicit: bool) -> str | None:
    own = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT", "").strip()
    if own:
        return own
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if not base and not explicit:
        return None
    return f"{(base or DEFAULT_OTLP_ENDPOINT).rstrip('/')}/v1/{signal.lower()}"


def _signal(
    environ: Mapping[str, str], signal: Literal["traces", "metrics"], file_variable: str
) -> SignalPlan:
    exporters = _exporters(environ, f"OTEL_{signal.upper()}_EXPORTER")
    if "none" in exporters and len(exporters) == 1:
        return SignalPlan("off")
    url = _otlp_url(environ, signal, explicit="otlp" in exporters)
    if url is not None:
        _check_protocol(environ, signal.upper())
        if not url.startswith(("http://", "https://")):
            raise TelemetryConfigError(
                f"the OTLP {signal} endpoint {url!r} (from OTEL_EXPORTER_OTLP_ENDPOINT or "
                f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT) must be an http:// or https:// URL"
            )
        return SignalPlan("otlp", url)
    path = environ.get(file_variable, "").strip()
    if path:
        parent = Path(path).expanduser().parent
        if not parent.is_dir():
            raise TelemetryConfigError(f"{file_variable}={path!r}: the directory {parent} does not exist")
        return SignalPlan("file", str(Path(path).expanduser()), _file_max_bytes(environ))
    if "console" in exporters:
        return SignalPlan("console")
    return SignalPlan("off")


def _file_max_bytes(environ: Mapping[str, str]) -> int | None:
    raw = environ.get(FILE_MAX_BYTES, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 4096:
        raise TelemetryConfigError(f"{FILE_MAX_BYTES}={raw!r} must be a whole number of bytes, at least 4096")
    return value


def collector_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether OTEL_* sends traces to a collector (then a local pool keeps no spans file of its own)."""
    env = os.environ if environ is None else environ
    if _truthy(env.get("OTEL_SDK_DISABLED")):
        return False
    exporters = {part.strip().lower() for part in env.get("OTEL_TRACES_EXPORTER", "").split(",")}
    return (
        "otlp" in exporters
        or bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip())
        or bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip())
    )


def _root_sampler(environ: Mapping[str, str]) -> Sampler:
    name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower() or "parentbased_always_on"
    base = name.removeprefix("parentbased_")
    if base == "always_on":
        return ALWAYS_ON
    if base == "always_off":
        return ALWAYS_OFF
    if base == "traceidratio":
        raw = environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0").strip() or "1.0"
        try:
            ratio = float(raw)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            raise TelemetryConfigError(f"OTEL_TRACES_SAMPLER_ARG={raw!r} must be a ratio between 0 and 1")
        return TraceIdRatioBased(ratio)
    raise TelemetryConfigError(
        f"OTEL_TRACES_SAMPLER={name!r}: use always_on, always_off, traceidratio "
        "(parentbased_ variants are the same here: sampling always follows the parent)"
    )


def plan_telemetry(service_name: str, environ: Mapping[str, str] | None = None) -> TelemetryPlan:
    """Read the environment; raise TelemetryConfigError naming the variable on a bad value."""
    env = os.environ if environ is None else environ
    name = env.get("OTEL_SERVICE_NAME", "").strip() or _resource_service_name(env) or service_name
    if _truthy(env.get("OTEL_SDK_DISABLED")):
        return TelemetryPlan(name, SignalPlan("off"), SignalPlan("off"))
    return TelemetryPlan(
        service_name=name,
        traces=_signal(env, "traces", TRACES_FILE),
        metrics=_signal(env, "metrics", METRICS_FILE),
        sampler=ParentBased(NoOrphanQueries(_root_sampler(env))),
    )


def _resource_service_name(environ: Mapping[str, str]) -> str | None:
    for item in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, _, value = item.partition("=")
        if key.strip() == "service.name" and value.strip():
            return value.strip()
    return None


# --- sampling ---------------------------------------------------------------------------------


class NoOrphanQueries(Sampler):
    """A root sampler that starts no trace for a database query outside any trace.

    Followers poll the log and relays write checkpoints all the time; each
    query would otherwise be a trace of its own. Queries inside a trace are
    decided by the parent (ParentBased), so they are kept.
    """

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        if (
            kind == SpanKind.CLIENT
            and attributes
            and ("db.system" in attributes or "db.system.name" in attributes)
        ):
            return SamplingResult(Decision.DROP)
        return self.delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"NoOrphanQueries{{{self.delegate.get_description()}}}"


# --- local files ------------------------------------------------------------------------------


class _LineFile:
    """Appends whole lines to a file, one write per line, shared safely by threads and processes.

    The file is bounded: once it holds `max_bytes`, the writer that notices
    renames it to `<path>.1` (replacing the previous old file) and starts a new
    one, so at most about twice `max_bytes` stays on disk. An flock on the file
    being rotated, and a check that the path still names it, let only one of
    several processes rotate it; a writer still holding the old file writes its
    lines there, where readers find them too.
    """

    def __init__(self, path: str, max_bytes: int = DEFAULT_FILE_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def write(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        data = "".join(line + "\n" for line in lines).encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                if os.fstat(fd).st_size + len(data) > self.max_bytes and self._rotate(fd):
                    os.close(fd)
                    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                os.write(fd, data)
            finally:
                os.close(fd)

    def _rotate(self, fd: int) -> bool:
        """Move the full file aside unless another writer already did; True when the path changed."""
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            mine = os.fstat(fd)
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                return True
            if (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino):
                return True
            if mine.st_size == 0:
                # One batch larger than the bound: write it rather than rotate forever.
                return False
            os.replace(self.path, self.path + ".1")
            return True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def _span_line(span: ReadableSpan) -> str:
    line = json.loads(span.to_json(indent=None))
    line["start_time_unix_nano"] = span.start_time
    line["end_time_unix_nano"] = span.end_time
    return json.dumps(line, separators=(",", ":"), default=str)


class JsonLinesSpanExporter(SpanExporter):
    """Each finished span as one JSON object per line: the SDK's own JSON form of a span, plus its
    exact start and end (`start_time_unix_nano`, `end_time_unix_nano`; the SDK's times stop at the
    microsecond). potluck.kernel.trace_spans reads them back."""

    def __init__(self, path: str, max_bytes: int = DEFAULT_FILE_MAX_BYTES) -> None:
        self._file = _LineFile(path, max_bytes)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self._file.write([_span_line(span) for span in spans])
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class JsonLinesMetricExporter(MetricExporter):
    """Each metrics collection as one JSON object per line."""

    def __init__(self, path: str, max_bytes: int = DEFAULT_FILE_MAX_BYTES) -> None:
        super().__init__()
        self._file = _LineFile(path, max_bytes)

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        try:
            self._file.write([json.dumps(json.loads(metrics_data.to_json(indent=None)))])
        except OSError:
            return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


# --- building and installing ------------------------------------------------------------------


@dataclass
class Telemetry:
    plan: TelemetryPlan
    tracer_provider: TracerProvider | None
    meter_provider: MeterProvider | None
    _closers: list[Callable[[], object]] = field(default_factory=list)
    _closed: bool = False

    def shutdown(self) -> None:
        """Flush what is pending and stop; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                close()
        if self.tracer_provider is not None:
            with contextlib.suppress(Exception):
                self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            with contextlib.suppress(Exception):
                self.meter_provider.shutdown()


def _span_exporter(plan: SignalPlan) -> SpanExporter:
    if plan.destination == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=plan.target)
    if plan.destination == "file":
        assert plan.target is not None
        return JsonLinesSpanExporter(plan.target, plan.max_bytes or DEFAULT_FILE_MAX_BYTES)
    return ConsoleSpanExporter(out=sys.stderr)


def _metric_reader(plan: SignalPlan) -> MetricReader:
    exporter: MetricExporter
    if plan.destination == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        exporter = OTLPMetricExporter(endpoint=plan.target)
    elif plan.destination == "file":
        assert plan.target is not None
        exporter = JsonLinesMetricExporter(plan.target, plan.max_bytes or DEFAULT_FILE_MAX_BYTES)
    else:
        exporter = ConsoleMetricExporter(out=sys.stderr)
    return PeriodicExportingMetricReader(exporter)


def build_telemetry(
    service_name: str,
    *,
    environ: Mapping[str, str] | None = None,
    resource_attributes: Mapping[str, str] | None = None,
) -> Telemetry:
    """Providers as the environment asks, without installing them globally (tests use this)."""
    plan = plan_telemetry(service_name, environ)
    attributes: dict[str, str] = {
        "service.namespace": "potluck",
        "service.version": __version__,
        **(resource_attributes or {}),
        "service.name": plan.service_name,
    }
    resource = Resource.create(attributes)
    tracer_provider = None
    if plan.traces.on:
        tracer_provider = TracerProvider(resource=resource, sampler=plan.sampler)
        tracer_provider.add_span_processor(BatchSpanProcessor(_span_exporter(plan.traces)))
    meter_provider = None
    if plan.metrics.on:
        meter_provider = MeterProvider(resource=resource, metric_readers=[_metric_reader(plan.metrics)])
    return Telemetry(plan, tracer_provider, meter_provider)


class _NoClientContext(Getter[Any]):
    """A getter that finds no trace context in any request."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        return None

    def keys(self, carrier: Any) -> list[str]:
        return []


_NO_CLIENT_CONTEXT = _NoClientContext()


def _instrument(telemetry: Telemetry) -> None:
    """The aiohttp server and asyncpg instrumentations, where traces are on."""
    if telemetry.tracer_provider is None:
        return
    import opentelemetry.instrumentation.aiohttp_server as aiohttp_server
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    # Read by the instrumentation when it is switched on.
    os.environ.setdefault("OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS", _DEFAULT_EXCLUDED_URLS)
    # A request's trace starts at the allocator, whatever the client sends: a client's
    # `traceparent` would graft the request onto any trace id it names, or mark it unsampled
    # and keep it out of the operators' traces. Nothing of Potluck's sends one over HTTP. The
    # instrumentation has no setting for it; its middleware reads the module's `getter` at
    # each request (tests/e2e/test_tracing.py fails if that changes).
    aiohttp_server.getter = _NO_CLIENT_CONTEXT  # type: ignore[assignment]  # extract() takes any Getter
    for instrumentor in (AioHttpServerInstrumentor(), AsyncPGInstrumentor()):  # type: ignore[no-untyped-call]
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
            telemetry._closers.append(instrumentor.uninstrument)


def configure_telemetry(
    service_name: str, *, resource_attributes: Mapping[str, str] | None = None
) -> Callable[[], None]:
    """Install tracing and metrics for this process as OTEL_* says; returns the shutdown callable.

    Call it before the aiohttp application is made (the instrumentation
    replaces `aiohttp.web.Application`) and call the result once at exit, so
    that buffered spans are sent.
    """
    telemetry = build_telemetry(service_name, resource_attributes=resource_attributes)
    if telemetry.tracer_provider is not None:
        trace.set_tracer_provider(telemetry.tracer_provider)
    if telemetry.meter_provider is not None:
        metrics.set_meter_provider(telemetry.meter_provider)
    _instrument(telemetry)
    return telemetry.shutdown
