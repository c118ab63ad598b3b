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

from potluck.kernel.hidden_modules import hidden

with hidden("rich"):
    import structlog


def configure_logging(level: str = "INFO", *, json: bool | None = None) -> None:
    as_json = (not sys.stderr.isatty()) if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
