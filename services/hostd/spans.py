"""hostd's own spans: one CLIENT span around each call to the Docker engine.

The Docker SDK has no OpenTelemetry instrumentation, so hostd opens these by
hand; the exec bridge's and the gateway link's spans use the same tracer.
"""

import contextlib
from collections.abc import Iterator

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from potluck.kernel.version import __version__

__all__ = ["docker_span", "tracer"]


def tracer() -> trace.Tracer:
    return trace.get_tracer("potluck", __version__)


@contextlib.contextmanager
def docker_span(
    operation: str, *, alloc_id: str, image: str | None = None, container_id: str | None = None
) -> Iterator[trace.Span]:
    """A CLIENT span around one call to the Docker engine, e.g. `docker_span("create+start", ...)`.

    An exception leaving the block marks the span as failed. Spans opened in
    the worker thread of `asyncio.to_thread` inside it become its children.
    """
    attributes: dict[str, str] = {"potluck.alloc_id": alloc_id, "peer.service": "docker"}
    if image is not None:
        attributes["container.image.name"] = image
    if container_id is not None:
        attributes["container.id"] = container_id
    with tracer().start_as_current_span(
        f"docker {operation}", kind=SpanKind.CLIENT, attributes=attributes
    ) as span:
        yield span
