"""The bound on host labels (potluck.contracts.host_labels), and the sides that hold to it.

The bound is pure; hostd's configuration (load_config), the Host aggregate's registration and
enrollment apply it. Each test says what is tried and what must hold.
"""

import json
import re
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from potluck.allocator.schemas import CreateAllocation
from potluck.contracts.capacity import Capacity
from potluck.contracts.compatibility import CONTRACT_VERSION
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import (
    HostEnrolled,
    HostJoined,
    HostJoinTokenIssued,
    HostLeft,
    HostRegistered,
    HostRevoked,
)
from potluck.contracts.host_labels import (
    BAD_LABELS,
    HOLLOW_LABEL,
    LABEL_NAME,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    InvalidLabels,
    check_labels,
    label_problems,
    value_problem,
)
from potluck.contracts.join_token import JoinToken
from potluck.contracts.messages import RegisterHost
from potluck.hostd.config import ConfigError, load_config
from potluck.kernel.rejections import Rejected
from potluck.member.join import JoinSettings, host_settings
from potluck.readmodels.hosts import evolve
from potluck.registry import host

H = "h-3f2a9c1e7b40"
T0 = datetime(2025, 1, 1, tzinfo=UTC)
ENGINE = EngineFacts(
    version="27.0", cgroup_version="2", storage_driver="overlay2", disk_quota_supported=False
)

names = st.from_regex(LABEL_NAME, fullmatch=True)
#: Visible text: letters, digits, punctuation, symbols, marks and inner spaces of any script.
visible = st.text(st.characters(categories=("L", "M", "N", "P", "S", "Zs")), max_size=MAX_LABEL_VALUE).filter(
    lambda v: v == v.strip()
)


@given(st.dictionaries(names, visible, max_size=MAX_LABELS))
def test_labels_within_the_bound_pass_unchanged(labels: dict[str, str]) -> None:
    """Tried: up to MAX_LABELS labels, names from LABEL_NAME, values of visible text of any
    script up to MAX_LABEL_VALUE. Must hold: no problem, and check_labels gives them back."""
    assert label_problems(labels) == []
    assert check_labels(labels) is labels


def test_the_labels_potluck_sets_itself_are_within_the_bound() -> None:
    """Tried: what `potluck up` (`name=local`), `potluck join` (`name` from the token), the
    test pool and hollow hosts (`hollow=true`) register with. Must hold: all within the bound."""
    token = JoinToken.model_validate(
        {
            "host_id": H,
            "name": "Ann's laptop (kitchen)",
            "nats_url": "nats://pool.example:4222",
            "join_seed": "SU" + "A" * 56,
            "secret": "s" * 32,
            "expires_at": "2030-01-01T00:00:00Z",
        }
    )
    settings = JoinSettings(
        cpus=1, memory="1G", disk="1G", docker_url="unix:///d.sock", config_path=Path("/tmp/h.toml")
    )
    joined = host_settings(token, settings, Path("/tmp/c.creds"))
    for labels in (
        {"name": "local"},
        joined["labels"],
        {"name": "hollow-7", HOLLOW_LABEL[0]: HOLLOW_LABEL[1]},
    ):
        assert check_labels(labels) is labels


@given(names)
def test_a_name_a_request_may_constrain_is_a_name_a_host_may_carry(name: str) -> None:
    """Tried: any name LABEL_NAME matches, as a constraint of an allocation request and as a
    host's label. Must hold: both accept it; the allocator publishes this very pattern."""
    published = CreateAllocation.model_json_schema()["properties"]["constraints"]["propertyNames"]
    assert published == {"pattern": LABEL_NAME}
    body = {"cpus": 1, "memory": "64M", "image": "debian:12", "constraints": {name: "x"}}
    assert CreateAllocation.model_validate(body).constraints == {name: "x"}
    assert label_problems({name: "x"}) == []


@pytest.mark.parametrize(
    "name",
    ["", "a" * 64, "<svg onload=alert(1)>", "zone name", "zone=a", "zöne", "a\u202eb", "a\x00", "x\n"],
)
def test_a_name_no_constraint_can_name_is_refused_saying_what_a_name_is(name: str) -> None:
    """Tried: empty, too long, markup, spaces, `=`, non-ASCII, control and format characters in
    a label's name. Must hold: refused, the name quoted escaped and cut to 40 characters, and
    the message says what a name is made of; a request cannot constrain it either."""
    [problem] = label_problems({name: "1"})
    assert problem.startswith(f"label {name[:40]!r}"), problem
    assert "1 to 63 letters (A-Z, a-z), digits, '_', '.' or '-'" in problem
    assert not any(c in problem for c in "\x00\u202e\n")
    assert not re.fullmatch(LABEL_NAME, name)
    body = {"cpus": 1, "memory": "64M", "image": "debian:12", "constraints": {name: "1"}}
    with pytest.raises(ValueError, match="label name"):
        CreateAllocation.model_validate(body)


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("\x00", "U+0000, a control"),
        ("home\u202eemoh", "U+202E RIGHT-TO-LEFT OVERRIDE"),
        ("a\u200bb", "U+200B ZERO WIDTH SPACE"),
        ("a\nb", "U+000A"),
        ("a\tb", "U+0009"),
        ("\x1b[31mred", "U+001B"),
        ("a\u2028b", "U+2028 LINE SEPARATOR"),
        ("\ud800", "U+D800"),
        ("\ufeffhome", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
        ("x" * (MAX_LABEL_VALUE + 1), f"is {MAX_LABEL_VALUE + 1} characters long; at most {MAX_LABEL_VALUE}"),
        (" home", "starts or ends with white space"),
        ("home\u00a0", "starts or ends with white space"),
    ],
)
def test_a_value_with_control_or_invisible_characters_or_too_long_is_refused_naming_why(
    value: str, said: str
) -> None:
    """Tried: NUL, bidirectional override, zero-width characters, newline, tab, an escape
    sequence, a line separator, a lone surrogate, a byte order mark, one character too many,
    white space at an end. Must hold: refused, naming the label and the character (by code
    point and Unicode name, never the character itself) or the length."""
    [problem] = label_problems({"zone": value})
    assert problem.startswith("label 'zone': its value "), problem
    assert said in problem, problem
    assert all(unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in problem)


def test_values_may_be_empty_or_visible_text_of_any_script_up_to_the_limit() -> None:
    """Tried: an empty value, the longest one, other scripts, inner spaces, emoji and a
    combining accent. Must hold: accepted, as requests may match them exactly."""
    for value in ["", "x" * MAX_LABEL_VALUE, "東京", "Ann's laptop", "🍲 potluck", "cafe\u0301"]:
        assert value_problem(value) is None, value


def test_too_many_labels_are_refused_and_one_message_says_a_few_problems_and_counts_the_rest() -> None:
    """Tried: the audit's host, 600 labels of 1000 characters. Must hold: InvalidLabels (a
    ValueError) saying the count and the limit, then two labels' problems, then how many
    more; the message stays short (not the 600 KB the labels are)."""
    labels = {f"l{i}": "x" * 1000 for i in range(600)}
    with pytest.raises(InvalidLabels) as refused:
        check_labels(labels)
    said = str(refused.value)
    assert isinstance(refused.value, ValueError)
    assert said.startswith(f"600 labels; at most {MAX_LABELS} are allowed; label 'l0': its value is 1000"), (
        said
    )
    assert said.endswith("(and 598 more)"), said
    assert len(said) < 400
    assert label_problems({f"l{i}": "x" for i in range(MAX_LABELS)}) == []


def _registration(labels: dict[str, str]) -> RegisterHost:
    return RegisterHost(
        donated=Capacity(cpus=2, memory_bytes=1 << 30, disk_bytes=1 << 30),
        labels=labels,
        engine=ENGINE,
        hostd_version="1.0",
        contract=CONTRACT_VERSION,
    )


def test_the_registry_refuses_a_registration_outside_the_bound_with_bad_labels() -> None:
    """Tried: an enrolled host registers with an escape in a value and a name no request can
    name. Must hold: Rejected BAD_LABELS, field `labels`, status 400, naming both labels and what
    to change; the same host with good labels registers. (A NUL never gets this far: no message
    may hold one, test_messages_hold_nothing_the_log_cannot_store.)"""
    state = evolve(None, HostEnrolled(host_id=H, name="laptop", nkey="UKEY"), 1, T0)
    with pytest.raises(Rejected) as refused:
        host.register(state, H, _registration({"zone": "a\x1b", "<b>": "1"}))
    assert (refused.value.code, refused.value.field, refused.value.status) == (BAD_LABELS, "labels", 400)
    said = refused.value.message
    assert "label 'zone': its value holds U+001B" in said, said
    assert "label '<b>': a name is 1 to 63" in said, said
    assert "change [labels] in hostd.toml" in said
    [registered] = host.register(state, H, _registration({"zone": "home"}))
    assert isinstance(registered, HostRegistered)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"labels": {"zone": "home\x00"}}, "labels: holds a NUL character"),
        ({"hostd_version": "1.0\x00"}, "hostd_version: holds a NUL character"),
        # pydantic's JSON parser refuses one before any field is read.
        ({"allowed_images": ["library/*", "x\ud800"]}, "Invalid JSON"),
        ({"hostd_version": "1" * 65}, "at most 64 characters"),
        ({"allowed_images": ["x"] * 257}, "at most 256 items"),
        ({"ssh_host_key": "k" * 16_385}, "at most 16384 characters"),
        ({"engine": {**ENGINE.model_dump(), "storage_driver": "o" * 129}}, "engine.storage_driver: at most"),
    ],
)
def test_messages_hold_nothing_the_log_cannot_store(change: dict[str, Any], said: str) -> None:
    """Tried: a registration as JSON off the bus, with a NUL or a lone surrogate somewhere, or a
    text past its bound. Must hold: it does not validate, and the error names the field (the
    registry answers BAD_REQUEST with it, where the append would have failed as INTERNAL)."""
    body = {**_registration({}).model_dump(mode="json"), **change}
    with pytest.raises(ValidationError, match=re.escape(said)):
        RegisterHost.model_validate_json(json.dumps(body))


def test_a_host_registered_before_the_bound_still_replays() -> None:
    """Tried: a HostRegistered outside the bound, as the log may already hold one, folded and
    decoded again. Must hold: the event reads and folds as before (the bound is checked where a
    registration is decided, never where events are read)."""
    labels = {"<svg>": "\x00", **{f"l{i}": "x" * 1000 for i in range(40)}}
    old = HostRegistered(
        host_id=H, donated=Capacity(cpus=1, memory_bytes=1 << 30, disk_bytes=1 << 30), labels=labels,
        engine=ENGINE, hostd_version="0.9",
    )  # fmt: skip
    assert HostRegistered.model_validate_json(old.model_dump_json()).labels == labels
    state = evolve(evolve(None, HostEnrolled(host_id=H, name="laptop", nkey="U"), 1, T0), old, 2, T0)
    assert state is not None
    assert state.labels == labels


@pytest.mark.parametrize(
    ("name", "said"),
    [("", "is empty"), ("n" * 129, "is 129 characters long"), ("lap\u202etop", "U+202E"), ("top ", "white")],
)
def test_a_machine_is_enrolled_only_under_a_name_its_name_label_can_hold(name: str, said: str) -> None:
    """Tried: enrolling under an empty name, a too long one, one with a format character, one
    ending in a space (`potluck join` writes the name into hostd.toml as the `name` label).
    Must hold: Rejected BAD_NAME, field `name`, saying why; nothing is enrolled."""
    with pytest.raises(Rejected) as refused:
        host.enroll(None, H, name, "UKEY")
    assert (refused.value.code, refused.value.field, refused.value.status) == ("BAD_NAME", "name", 400)
    assert said in refused.value.message, refused.value.message


def test_a_name_is_held_by_one_machine_until_it_is_gone_or_its_token_expired_unredeemed() -> None:
    """Tried: a second machine under a name held by one enrolled with a key, by one with a join
    token not yet expired, by one with a token redeemed, then by ones that left, were revoked,
    or whose token expired unredeemed.
    Must hold: the first three refuse NAME_TAKEN (409, field `name`) naming the holder and the
    command that frees it; the last three hold the name no more; another name is always free."""
    later = T0.replace(year=2026)

    def folded(*events: Any) -> Any:
        state = None
        for version, event in enumerate(events, 1):
            state = evolve(state, event, version, T0)
        return state

    token = HostJoinTokenIssued(host_id=H, token_sha256="d", join_nkey="UJ", expires_at=later)
    holding = {
        "a key": folded(HostEnrolled(host_id=H, name="desk", nkey="UKEY")),
        "a token": folded(HostEnrolled(host_id=H, name="desk", nkey=""), token),
        "a redeemed token": folded(
            HostEnrolled(host_id=H, name="desk", nkey=""), token, HostJoined(host_id=H, nkey="UN")
        ),
    }
    for how, holder in holding.items():
        with pytest.raises(Rejected) as refused:
            host.refuse_taken_name([holder], "desk", T0)
        got = refused.value
        assert (got.code, got.status, got.field) == ("NAME_TAKEN", 409, "name"), how
        assert f"held by {H} (enrolled)" in got.message, how
        assert f"potluck ops hosts revoke {H}" in got.message, how
        host.refuse_taken_name([holder], "other", T0)
    free = {
        "left": folded(HostEnrolled(host_id=H, name="desk", nkey="UKEY"), HostLeft(host_id=H, by="member")),
        "revoked": folded(HostEnrolled(host_id=H, name="desk", nkey="UKEY"), HostRevoked(host_id=H, by="op")),
        "expired": folded(HostEnrolled(host_id=H, name="desk", nkey=""), token),
    }
    for how, state in free.items():
        assert host.name_holder([state], "desk", later if how == "expired" else T0) is None, how


CONFIG = (
    'host_id = "h-3f2a9c1e7b40"\ncredentials_file = "c"\nstate_dir = "s"\n'
    '[donate]\ncpus = 1\nmemory = "1G"\ndisk = "1G"\n'
)


def test_hostd_refuses_a_config_with_a_bad_label_naming_it_and_what_to_change(tmp_path: Path) -> None:
    """Tried: hostd.toml whose [labels] hold a right-to-left override in a value, and then a
    name with markup. Must hold: ConfigError naming the file, `labels`, the label (escaped)
    and what to change; with the labels fixed the same file loads."""
    config = tmp_path / "hostd.toml"
    config.write_text(CONFIG + '[labels]\nzone = "home\\u202eemoh"\n')
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    said = str(refused.value)
    assert said.startswith(f"{config}: labels: "), said
    assert "label 'zone': its value holds U+202E RIGHT-TO-LEFT OVERRIDE" in said, said
    assert "use visible text only" in said
    assert "\u202e" not in said
    config.write_text(CONFIG + '[labels]\n"<svg onload=alert(1)>" = "1"\n')
    with pytest.raises(ConfigError, match=r"label '<svg onload=alert\(1\)>': a name is 1 to 63 .*rename it"):
        load_config(config)
    config.write_text(CONFIG + '[labels]\nzone = "home"\n"gpu.vendor" = "amd"\n')
    assert load_config(config).labels == {"zone": "home", "gpu.vendor": "amd"}
