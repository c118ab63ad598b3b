"""What a history shows of an event's data (web timeline, `potluck alloc show`)."""

from hypothesis import given
from hypothesis import strategies as st

from potluck.contracts.event_facts import QUIET, event_facts


def test_facts_in_key_order_without_what_every_event_repeats_or_nothing() -> None:
    data = {
        "host_id": "h-1",
        "alloc_id": "a-1",
        "exit_code": 143,
        "reason": None,
        "container_id": "d0f297caea215a41242a6c6f5f5767886e737baa92860a5806d089e6ce9b0f99",
    }
    assert event_facts(data) == "container_id=d0f297caea21, exit_code=143, host_id=h-1"


@given(st.text(min_size=1, max_size=40))
def test_a_secret_in_the_spec_or_env_is_never_shown(secret: str) -> None:
    env = {"TOKEN": secret}
    data = {"spec": {"env": env}, "env": env, "ssh_keys": [secret], "host_id": "h"}
    assert event_facts(data) == "host_id=h"
    assert {"spec", "env", "ssh_keys"} <= QUIET


def test_a_long_history_line_is_cut_at_the_limit() -> None:
    assert event_facts({"detail": "x" * 1000}, limit=50) == ("detail=" + "x" * 1000)[:50]
