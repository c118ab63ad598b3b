"""A database URL as errors show it (libs/kernel/redacted_urls.py)."""

from potluck.kernel.redacted_urls import redacted


def test_a_urls_password_is_never_shown_and_the_rest_is() -> None:
    """Tried: a URL with a password, one without, and one that does not parse (a bad port).
    Must hold: the password is `***` and the rest as given; without one the URL as given; an
    unparsable one is named by the caller's words, never echoed (its text may hold the secret)."""
    assert (
        redacted("postgresql://potluck:s3cret@db:5432/potluck") == "postgresql://potluck:***@db:5432/potluck"
    )
    assert redacted("postgresql://potluck@db/potluck") == "postgresql://potluck@db/potluck"
    assert redacted("postgresql://u:s3cret@[::1", "the database URL") == "the database URL"
