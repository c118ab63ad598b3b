"""The version every Potluck process reports (hostd when it registers, the API, traces)."""

__version__ = "0.1.0"
