"""The gateway's read model: SSH host keys by wire blob, first come first served, and allocations.

`key_blob` is checked against keys built by hand (the SSH wire format) and a
real ed25519 key from asyncssh. `GatewayView` is checked by examples, and by a
hypothesis state machine that registers, re-registers, loses and
deregisters a few hosts presenting a few keys, against a reference model
written from the module's docstring.
"""

import base64
from datetime import UTC, datetime, timedelta

import asyncssh
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from potluck.contracts.allocation_events import (
    AllocationPlaced,
    AllocationRequested,
    AllocationRunning,
    AllocationSpec,
)
from potluck.contracts.capacity import Capacity
from potluck.contracts.engine import EngineFacts
from potluck.contracts.host_events import (
    HostDeregistered,
    HostLeft,
    HostLost,
    HostPaused,
    HostRegistered,
    HostRevoked,
)
from potluck.events import Event
from potluck.readmodels.allocations import AllocationState
from potluck.sshgateway.projection import GatewayView, HostKeyConflict, key_blob
from tests.helpers import host_registered

T0 = datetime(2025, 1, 1, tzinfo=UTC)
ENGINE = EngineFacts(
    version="27.0", cgroup_version="2", storage_driver="overlay2", disk_quota_supported=False
)
SPEC = AllocationSpec(
    resources=Capacity(cpus=1.0, memory_bytes=256 << 20, disk_bytes=1 << 30), image="debian:12"
)


def ssh_string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def key_line(algorithm: str, material: bytes, comment: str = "") -> str:
    """An OpenSSH public key line whose blob is `string algorithm, string material`."""
    blob = ssh_string(algorithm.encode()) + ssh_string(material)
    line = f"{algorithm} {base64.b64encode(blob).decode()}"
    return f"{line} {comment}" if comment else line


def blob_of(line: str) -> bytes:
    blob = key_blob(line)
    assert blob is not None, line
    return blob


KEY_A = key_line("ssh-ed25519", b"A" * 32, "hostd@laptop-a")
KEY_B = key_line("ssh-ed25519", b"B" * 32, "hostd@laptop-b")


def registered(host_id: str, key: str = "") -> HostRegistered:
    return host_registered(
        host_id=host_id,
        donated=Capacity(cpus=2.0, memory_bytes=4 << 30, disk_bytes=20 << 30),
        engine=ENGINE,
        hostd_version="test",
        ssh_host_key=key,
    )


class Feed:
    """Applies events to a view at increasing positions, as a subscriber would."""

    def __init__(self, view: GatewayView | None = None) -> None:
        self.view = view or GatewayView()
        self.position = 0

    def __call__(self, event: Event, version: int = 1) -> object:
        self.position += 1
        at = T0 + timedelta(seconds=self.position)
        return self.view.fold(event, position=self.position, version=version, at=at)


# --- key_blob ----------------------------------------------------------------------------------------


def test_a_key_line_gives_its_wire_blob() -> None:
    material = bytes(range(32))
    assert key_blob(key_line("ssh-ed25519", material)) == ssh_string(b"ssh-ed25519") + ssh_string(material)


def test_a_real_openssh_key_line_gives_the_keys_public_blob() -> None:
    key = asyncssh.generate_private_key("ssh-ed25519", comment="hostd@laptop")
    line = key.export_public_key("openssh").decode()
    assert line.startswith("ssh-ed25519 ")
    assert key_blob(line) == key.public_data


@given(
    material=st.binary(min_size=1, max_size=64),
    comment=st.text(st.characters(blacklist_categories=["Z", "C"]), max_size=20),
    lead=st.sampled_from(["", " ", "\t", "  "]),
    gap=st.sampled_from([" ", "\t", "   "]),
    trail=st.sampled_from(["", " ", "\n", "\r\n"]),
)
def test_comments_and_spacing_do_not_change_the_blob(
    material: bytes, comment: str, lead: str, gap: str, trail: str
) -> None:
    plain = key_line("ssh-ed25519", material)
    algorithm, b64 = plain.split()
    spaced = f"{lead}{algorithm}{gap}{b64}{gap}{comment}{trail}"
    assert key_blob(spaced) == key_blob(plain) == blob_of(plain)


@given(st.binary(min_size=1, max_size=64))
def test_different_material_gives_a_different_blob(material: bytes) -> None:
    other = material + b"\x00"
    assert blob_of(key_line("ssh-ed25519", material)) != blob_of(key_line("ssh-ed25519", other))


def test_the_algorithm_is_part_of_the_blob() -> None:
    ed = blob_of(key_line("ssh-ed25519", b"k" * 32))
    ecdsa = blob_of(key_line("ecdsa-sha2-nistp256", b"k" * 32))
    assert ed != ecdsa


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   ",
        "ssh-ed25519",
        "ssh-ed25519 not*base64!",
        "ssh-ed25519 AAAA=BBB",  # padding in the middle: not valid base64
        "ssh-ed25519 " + base64.b64encode(b"\x00\x00").decode(),  # shorter than a length prefix
        # The line says ssh-rsa, the blob says ssh-ed25519.
        "ssh-rsa " + key_line("ssh-ed25519", b"k" * 32).split()[1],
        # The blob's name is another algorithm's with the line's as a prefix.
        "ssh-ed25519 " + base64.b64encode(ssh_string(b"ssh-ed25519-cert") + ssh_string(b"k")).decode(),
    ],
)
def test_lines_that_are_not_a_public_key_give_none(line: str) -> None:
    assert key_blob(line) is None


def test_a_length_prefix_longer_than_the_blob_is_not_a_key() -> None:
    lying = (200).to_bytes(4, "big") + b"ssh-ed25519"  # says 200 bytes of name, holds 11
    assert key_blob("ssh-ed25519 " + base64.b64encode(lying).decode()) is None


@given(st.text(max_size=80))
def test_key_blob_never_raises_and_any_blob_names_the_lines_algorithm(line: str) -> None:
    blob = key_blob(line)
    if blob is not None:
        algorithm = line.split()[0].encode()
        assert blob[4 : 4 + len(algorithm)] == algorithm
        assert blob == base64.b64decode(line.split()[1])


# --- GatewayView: host keys ---------------------------------------------------------------------------


def test_a_registered_hosts_key_maps_to_the_host() -> None:
    feed = Feed()
    assert feed(registered("h1", KEY_A)) is None
    assert feed.view.host_for_key(blob_of(KEY_A)) == "h1"
    assert feed.view.host_keys == {"h1": blob_of(KEY_A)}
    assert feed.view.host_for_key(blob_of(KEY_B)) is None


def test_the_same_key_with_another_comment_is_the_same_key() -> None:
    feed = Feed()
    feed(registered("h1", KEY_A))
    other_comment = KEY_A.rsplit(" ", 1)[0] + "  root@elsewhere"
    assert feed.view.host_for_key(blob_of(other_comment)) == "h1"
    assert isinstance(feed(registered("h2", other_comment)), HostKeyConflict)


def test_a_second_host_with_a_taken_key_is_ignored_and_reported() -> None:
    feed = Feed()
    feed(registered("h1", KEY_A))
    assert feed(registered("h2", KEY_A)) == HostKeyConflict(host_id="h2", owner="h1")
    assert feed.view.host_for_key(blob_of(KEY_A)) == "h1"
    assert "h2" not in feed.view.host_keys


def test_a_conflicting_registration_leaves_the_hosts_own_earlier_key_alone() -> None:
    feed = Feed()
    feed(registered("h1", KEY_A))
    feed(registered("h2", KEY_B))
    assert isinstance(feed(registered("h2", KEY_A)), HostKeyConflict)
    assert feed.view.host_for_key(blob_of(KEY_B)) == "h2"
    assert feed.view.host_for_key(blob_of(KEY_A)) == "h1"


def test_the_key_is_free_again_once_its_owner_deregisters() -> None:
    feed = Feed()
    feed(registered("h1", KEY_A))
    feed(registered("h2", KEY_A))  # ignored
    feed(HostDeregistered(host_id="h1", by="member"))
    assert feed.view.host_for_key(blob_of(KEY_A)) is None  # h2's earlier attempt does not count
    assert feed(registered("h2", KEY_A)) is None
    assert feed.view.host_for_key(blob_of(KEY_A)) == "h2"


@pytest.mark.parametrize(
    "gone",
    [HostLeft(host_id="h1", by="member"), HostRevoked(host_id="h1", by="olga", reason="stolen")],
    ids=["left", "revoked"],
)
def test_a_host_that_left_or_was_revoked_loses_its_key(gone: Event) -> None:
    """A left or revoked host's key maps to no host any more: its links are refused."""
    feed = Feed()
    feed(registered("h1", KEY_A))
    feed(gone)
    assert feed.view.host_for_key(blob_of(KEY_A)) is None
    assert "h1" not in feed.view.host_keys


def test_a_lost_or_paused_host_keeps_its_key() -> None:
    feed = Feed()
    feed(registered("h1", KEY_A))
    feed(HostLost(host_id="h1", silent_for_s=120.0))
    feed(HostPaused(host_id="h1", by="member"))
    assert feed.view.host_for_key(blob_of(KEY_A)) == "h1"
    assert isinstance(feed(registered("h2", KEY_A)), HostKeyConflict)


def test_re_registering_with_a_new_key_forgets_the_old_one() -> None:
    feed = Feed()
    feed(registered("h1", KEY_A))
    feed(registered("h1", KEY_B))
    assert feed.view.host_for_key(blob_of(KEY_A)) is None
    assert feed.view.host_for_key(blob_of(KEY_B)) == "h1"
    assert feed.view.host_keys == {"h1": blob_of(KEY_B)}


@pytest.mark.parametrize("key", ["", "not a key", "ssh-ed25519 ????"])
def test_re_registering_without_a_valid_key_forgets_the_old_one(key: str) -> None:
    feed = Feed()
    feed(registered("h1", KEY_A))
    assert feed(registered("h1", key)) is None
    assert feed.view.host_for_key(blob_of(KEY_A)) is None
    assert feed.view.host_keys == {}
    assert feed.view.key_owner == {}


def test_re_registering_with_the_same_key_keeps_it() -> None:
    feed = Feed()
    feed(registered("h1", KEY_A))
    assert feed(registered("h1", KEY_A)) is None
    assert feed.view.host_for_key(blob_of(KEY_A)) == "h1"


def test_events_at_or_before_the_views_position_are_ignored() -> None:
    view = GatewayView()
    assert view.fold(registered("h1", KEY_A), position=5, version=1, at=T0) is None
    assert view.position == 5
    # A redelivered or older event changes nothing, whatever it says.
    view.fold(HostDeregistered(host_id="h1", by="member"), position=5, version=2, at=T0)
    view.fold(HostDeregistered(host_id="h1", by="member"), position=3, version=2, at=T0)
    view.fold(registered("h2", KEY_B), position=4, version=1, at=T0)
    assert view.position == 5
    assert view.host_for_key(blob_of(KEY_A)) == "h1"
    assert view.host_for_key(blob_of(KEY_B)) is None


# --- GatewayView: allocations ---------------------------------------------------------------------------


def test_allocations_fold_as_the_allocators_and_host_events_do_not_block_them() -> None:
    feed = Feed()
    feed(registered("h1", KEY_A))  # position 1: the allocations' position must follow it
    requested = AllocationRequested(alloc_id="a1", user="ann", spec=SPEC, lifetime_s=3600)
    state = feed(requested)
    assert isinstance(state, AllocationState)
    assert state.status == "pending"
    assert feed.view.allocation("a1") == state
    feed(HostPaused(host_id="h1", by="member"))
    placed = AllocationPlaced(
        alloc_id="a1", host_id="h1", user="ann", spec=SPEC, expires_at=T0 + timedelta(hours=1)
    )
    feed(placed, version=2)
    running = feed(AllocationRunning(alloc_id="a1", host_id="h1", container_id="c1"), version=3)
    allocation = feed.view.allocation("a1")
    assert allocation is not None
    assert allocation == running
    assert (allocation.status, allocation.host_id, allocation.container_id) == ("running", "h1", "c1")
    assert feed.view.allocations.position == feed.view.position == feed.position
    assert feed.view.allocation("nope") is None


def test_a_redelivered_allocation_event_is_not_folded_twice() -> None:
    view = GatewayView()
    requested = AllocationRequested(alloc_id="a1", user="ann", spec=SPEC, lifetime_s=3600)
    placed = AllocationPlaced(
        alloc_id="a1", host_id="h1", user="ann", spec=SPEC, expires_at=T0 + timedelta(hours=1)
    )
    view.fold(requested, position=1, version=1, at=T0)
    view.fold(placed, position=2, version=2, at=T0)
    assert view.fold(requested, position=1, version=1, at=T0) is None
    allocation = view.allocation("a1")
    assert allocation is not None
    assert allocation.status == "placed"


# --- GatewayView under hypothesis ------------------------------------------------------------------------

HOSTS = ("h1", "h2", "h3")
KEYS = (
    KEY_A,
    KEY_B,
    key_line("ssh-ed25519", b"C" * 32, "c"),
    KEY_A.rsplit(" ", 1)[0] + " same-key-other-comment",
    "",  # registered without a key
    "ssh-ed25519 broken",
)


class HostKeysMachine(RuleBasedStateMachine):
    """Hosts register, re-register, get lost and deregister; the view agrees with a plain model."""

    @initialize()
    def start(self) -> None:
        self.feed = Feed()
        # The model: which host owns which key (by blob), written from the docstring's rules.
        self.owner: dict[bytes, str] = {}

    def _model_forget(self, host_id: str) -> None:
        self.owner = {k: h for k, h in self.owner.items() if h != host_id}

    @rule(host_id=st.sampled_from(HOSTS), line=st.sampled_from(KEYS))
    def register(self, host_id: str, line: str) -> None:
        result = self.feed(registered(host_id, line))
        blob = key_blob(line)
        if blob is None:
            assert result is None
            self._model_forget(host_id)
        elif self.owner.get(blob, host_id) != host_id:
            assert result == HostKeyConflict(host_id=host_id, owner=self.owner[blob])
        else:
            assert result is None
            self._model_forget(host_id)
            self.owner[blob] = host_id

    @rule(host_id=st.sampled_from(HOSTS))
    def deregister(self, host_id: str) -> None:
        assert self.feed(HostDeregistered(host_id=host_id, by="operator")) is None
        self._model_forget(host_id)

    @rule(host_id=st.sampled_from(HOSTS))
    def lose(self, host_id: str) -> None:
        assert self.feed(HostLost(host_id=host_id, silent_for_s=90.0)) is None

    @invariant()
    def agrees_with_the_model(self) -> None:
        view = self.feed.view
        assert view.key_owner == self.owner
        for line in KEYS:
            blob = key_blob(line)
            if blob is not None:
                assert view.host_for_key(blob) == self.owner.get(blob)

    @invariant()
    def one_key_per_host_and_one_host_per_key(self) -> None:
        view = self.feed.view
        assert {blob: host for host, blob in view.host_keys.items()} == view.key_owner
        assert len(set(view.host_keys.values())) == len(view.host_keys)


HostKeysMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
TestHostKeys = HostKeysMachine.TestCase
