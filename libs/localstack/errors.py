"""Errors of the local server helpers."""


class LocalStackError(RuntimeError):
    """A local server could not be installed, started or stopped; the message says what to do."""
