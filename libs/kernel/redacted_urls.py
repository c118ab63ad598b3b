"""A URL as a person may read it: without its password (a database's, in an error or a log)."""

from urllib.parse import urlsplit, urlunsplit

__all__ = ["redacted"]


def redacted(url: str, unreadable: str = "the URL given") -> str:
    """`url` with its password written `***`; `unreadable` when it does not parse as a URL (its
    text may still hold the password)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return unreadable
    if password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{password}@", ":***@")))
