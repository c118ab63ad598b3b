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
from typing import Any, TextIO

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


def _error_in_one_line(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A library's exception as `error` ("ConnectionRefusedError: [Errno 111] ..."), without its
    traceback: asyncpg logs one at each try to restore a pool's connections while the database
    is away, and its traceback through asyncpg's own code tells an operator nothing the line
    does not. Potluck's own lines keep theirs (format_exc_info): those are Potluck's bugs."""
    exc_info = event.pop("exc_info", None)
    if isinstance(exc_info, tuple) and exc_info[1] is not None:
        exc = exc_info[1]
        event["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return event


class _LibraryLines(logging.StreamHandler[TextIO]):
    """The handler configure_logging puts on the root logger (only its own is ever replaced)."""


def _foreign_level(level: int) -> int:
    # Libraries speak at WARNING and above, as Python's last-resort handler let them before:
    # asyncssh logs every connection at INFO, which a service's INFO must not turn into lines.
    return max(level, logging.WARNING)


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
    # The libraries' own lines (asyncpg, nats, asyncssh, aiohttp log through `logging`) in the
    # same form: unconfigured, Python's last-resort handler wrote them as bare text with
    # tracebacks into every service's JSON log while the database was away.
    handler = _LibraryLines(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                _trace_ids,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _error_in_one_line,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderers],
        )
    )
    root = logging.getLogger()
    for earlier in [h for h in root.handlers if isinstance(h, _LibraryLines)]:
        root.removeHandler(earlier)  # configured again (tests do): one line per record still
    root.addHandler(handler)
    root.setLevel(_foreign_level(logging.getLevelNamesMapping()[level.upper()]))
