"""W3C trace context carried through event metadata and NATS headers.

An append stores the current span's traceparent in the event's metadata; the
relay copies it into the message headers; a consumer starts its span with that
context as parent. A republished event therefore still links to the request
that caused it, whichever relay published it.

Where a process hands work to another through neither (the SSH gateway opening
a session on a host's reverse connection), the context travels as the
environment variables `TRACEPARENT` and `TRACESTATE`: the names OpenTelemetry
specifies for environment carriers, sent as SSH `env` requests.

A process that makes a message inside one span and publishes it later from
another task (hostd's reports) keeps the context with it in a `TracedQueue`
and publishes it inside `publish_span`, so the consumer joins the trace.
"""

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Generic, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

TRACE_KEYS = ("traceparent", "tracestate")

T = TypeVar("T")


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


@contextlib.contextmanager
def continuing(carrier: Mapping[str, str] | None) -> Iterator[None]:
    """Run the block in the trace `carrier` names, as a consumer of its message would (an empty
    carrier changes nothing): for work that reached this process some other way than the message."""
    if not carrier:
        yield
        return
    token = otel_context.attach(context_from(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


@cache
def tracer() -> trace.Tracer:
    # Cached: the relay asks once per event. Before a provider is installed this is
    # OpenTelemetry's proxy tracer, which turns into the real one once it is.
    return trace.get_tracer("potluck.events")


class TracedQueue(Generic[T]):
    """An asyncio queue that remembers the trace context each item was put in.

    hostd makes a report inside the span of the event that caused it and
    sends it later from another task; `get()` hands back that context for
    `publish_span`.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple[T, Context]] = asyncio.Queue()

    def put_nowait(self, item: T) -> None:
        self._queue.put_nowait((item, otel_context.get_current()))

    async def get(self) -> tuple[T, Context]:
        return await self._queue.get()

    def qsize(self) -> int:
        return self._queue.qsize()

    def empty(self) -> bool:
        return self._queue.empty()


@contextlib.contextmanager
def publish_span(
    subject: str, *, parent: Context | None = None, attributes: Mapping[str, str | int] | None = None
) -> Iterator[dict[str, str]]:
    """A PRODUCER span around publishing on `subject`; yields the trace headers to send with it.

    With `parent` (a context from `TracedQueue.get`) the span continues that
    trace. A message made outside any trace (a usage sample, say) gets no
    span and no headers: it would only start a trace of its own.
    """
    base = parent if parent is not None else otel_context.get_current()
    if not trace.get_current_span(base).get_span_context().is_valid:
        yield {}
        return
    with tracer().start_as_current_span(
        f"publish {subject}",
        context=base,
        kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "nats", "messaging.destination.name": subject, **(attributes or {})},
    ):
        yield current_trace_carrier()
