"""W3C trace context carried through event metadata and NATS headers.

An append stores the current span's traceparent in the event's metadata; the
relay copies it into the message headers; a consumer starts its span with that
context as parent. A republished event therefore still links to the request
that caused it, whichever relay published it.
"""

from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context

TRACE_KEYS = ("traceparent", "tracestate")


def current_trace_carrier() -> dict[str, str]:
    """The current span's context as text headers (empty when no span is recording)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {k: v for k, v in carrier.items() if k in TRACE_KEYS}


def trace_carrier_of(metadata: Mapping[str, object]) -> dict[str, str]:
    return {k: str(metadata[k]) for k in TRACE_KEYS if metadata.get(k)}


def context_from(carrier: Mapping[str, str] | None) -> Context:
    """The remote parent described by `carrier`, or an empty context."""
    return propagate.extract(dict(carrier or {}))


def tracer() -> trace.Tracer:
    return trace.get_tracer("potluck.events")
