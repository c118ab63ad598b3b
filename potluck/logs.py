"""Structured logs: one JSON object per line on stderr (or key=value for people).

structlog's `dev` and `tracebacks` modules, which `import structlog` loads, import rich (and
through it pygments) whenever it is installed, for their exception formatters: ~3 MB that
would stay resident in every service, a member's hostd among them (issue 20). Potluck never
uses them: `format_exc_info` turns an exception into text before the renderer sees it. So
structlog is imported here with rich hidden from it (potluck.kernel.hidden_modules), and the
potluck command imports this module before anything else that imports structlog
(tests/unit/test_hostd_lazy_imports.py checks both).
"""

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

from potluck.kernel.hidden_modules import hidden
from potluck.kernel.terminal_text import shown

with hidden("rich"):
    import structlog


def _shown_on_a_terminal(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Every text of a log line escaped for a person's terminal: a line may quote other parties'
    text (a user's command, a member's host name, a container's failure), which must not drive
    the terminal of whoever reads the log. The console renderer writes a value raw unless it
    quotes it, so each is escaped here (potluck.kernel.terminal_text); a traceback keeps its
    line breaks."""
    for key, value in event.items():
        if isinstance(value, str):
            lines = value.split("\n") if key == "exception" else [value]
            event[key] = "\n".join(shown(line) for line in lines)
    return event


def _trace_ids(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The current span's `trace_id` and `span_id` on the line (hex, as `potluck ops trace` and
    OTLP viewers show them), so that an operator goes from a log line to its trace. Only when a
    span is recording: a process that never loaded OpenTelemetry pays a dictionary lookup, and a
    line logged outside any trace carries neither."""
    otel = sys.modules.get("opentelemetry.trace")
    if otel is None or "trace_id" in event:
        return event
    context = otel.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format(context.trace_id, "032x")
        event["span_id"] = format(context.span_id, "016x")
    return event


def configure_logging(level: str = "INFO", *, json: bool | None = None) -> None:
    as_json = (not sys.stderr.isatty()) if json is None else json
    # JSON escapes control characters itself; the key=value lines for people need it done.
    renderers: list[structlog.typing.Processor] = (
        [structlog.processors.JSONRenderer()]
        if as_json
        else [_shown_on_a_terminal, structlog.dev.ConsoleRenderer(colors=False)]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _trace_ids,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            *renderers,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
