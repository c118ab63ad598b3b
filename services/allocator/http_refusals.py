"""Requests aiohttp refuses before any handler sees them, logged as one structured line that
never quotes the request.

aiohttp answers a request its parser cannot read (a bare LF, a header too long, a smuggling
attempt) with a 400 itself, and logs it with a traceback through the `logger` its request
handler is given. Left to Python's default, that traceback lands in the allocator's log, and
its message quotes the request's head: a client's `Authorization: Bearer` token in clear, in a
file the README says holds only hashes. Anybody can also send such requests in a loop, with no
token at all, to fill the log. So the allocator hands aiohttp this logger: a refusal by the
parser becomes `api.http_refused` with its kind and status, a few a minute per address; any
other error reaching aiohttp (a bug of ours, not the client's text) keeps its traceback.
"""

import logging
import time

import structlog
from aiohttp.http_exceptions import HttpProcessingError

from potluck.kernel.key_rates import KeyRates, RatePolicy

__all__ = ["REFUSAL_LOG_RATE", "refusals_logger"]

log = structlog.get_logger(__name__)

#: Per client address: a burst, then a line now and then, saying how many came past the rate.
REFUSAL_LOG_RATE = RatePolicy(per_s=1 / 60, burst=5)


class _StructuredRefusals(logging.Handler):
    def __init__(self, rates: KeyRates) -> None:
        super().__init__(logging.INFO)
        self.rates = rates

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        # aiohttp's own messages: "Error handling request from %s" and the like, the peer first.
        remote = str(record.args[0]) if isinstance(record.args, tuple) and record.args else "unknown"
        if isinstance(exc, HttpProcessingError):
            verdict = self.rates.check(remote, time.monotonic())
            if verdict.allowed or verdict.log:
                log.info(
                    "api.http_refused",
                    remote=remote,
                    refusal=type(exc).__name__,
                    status=exc.code,
                    past_rate_in_a_row=verdict.streak,
                )
            return
        if exc is not None:
            log.error("api.http_failed", remote=remote, exc_info=record.exc_info)
        else:
            log.warning("api.http_server", message=record.getMessage())


def refusals_logger(rates: KeyRates | None = None) -> logging.Logger:
    """A logger for aiohttp's request handlers (`AppRunner(logger=...)`), writing through structlog."""
    logger = logging.Logger("potluck.allocator.http", logging.INFO)
    logger.propagate = False
    logger.addHandler(_StructuredRefusals(rates or KeyRates(REFUSAL_LOG_RATE)))
    return logger
