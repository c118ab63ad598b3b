"""W3C trace context carried through event metadata and NATS headers.

An append stores the current span's traceparent in the event's metadata; the
relay copies it into the message headers; a consumer starts its span with that
context as parent. A republished event therefore still links to the request
that caused it, whichever relay published it.

Where a process hands work to another through neither (the SSH gateway opening
a session on a host's reverse connection), the context travels as the
environment variables `TRACEPARENT` and `TRACESTATE`: the names OpenTelemetry
specifies for environment carriers, sent as SSH `env` requests.
"""

from collections.abc import Mapping
from functools import cache

from opentelemetry import propagate, trace
from opentelemetry.context import Context

TRACE_KEYS = ("traceparent", "tracestate")


def current_trace_carrier() -> dict[str, str]:
    """The current span's context as text headers (empty when no span is recording)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {k: v for k, v in carrier.items() if k in TRACE_KEYS}


#: Environment-variable carriers: the same values under the upper-case names.
ENV_TRACE_KEYS = {key: key.upper() for key in TRACE_KEYS}


def trace_env_of(span: trace.Span) -> dict[str, str]:
    """`span`'s context as TRACEPARENT / TRACESTATE variables (empty when it is not a valid span)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return {ENV_TRACE_KEYS[k]: v for k, v in carrier.items() if k in ENV_TRACE_KEYS}


def context_from_env(env: Mapping[str, str]) -> Context:
    """The remote parent named by TRACEPARENT / TRACESTATE in `env`, or an empty context."""
    return context_from({k: env[name] for k, name in ENV_TRACE_KEYS.items() if env.get(name)})


def trace_carrier_of(metadata: Mapping[str, object]) -> dict[str, str]:
    return {k: str(metadata[k]) for k in TRACE_KEYS if metadata.get(k)}


def context_from(carrier: Mapping[str, str] | None) -> Context:
    """The remote parent described by `carrier`, or an empty context."""
    return propagate.extract(dict(carrier or {}))


@cache
def tracer() -> trace.Tracer:
    # Cached: the relay asks once per event. Before a provider is installed this is
    # OpenTelemetry's proxy tracer, which turns into the real one once it is.
    return trace.get_tracer("potluck.events")
