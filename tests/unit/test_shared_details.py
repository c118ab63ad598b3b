"""What of a failure's detail leaves the member's machine (services/hostd/shared_details.py)."""

import pytest

from potluck.hostd.shared_details import MEMBERS_ADDRESS, named_by, without_local_addresses


@pytest.mark.parametrize(
    ("detail", "shared"),
    [
        (
            'Get "https://localtest.me:55432/v2/": dial tcp: lookup localtest.me on 10.255.255.53:53: '
            "no such host",
            f'Get "https://localtest.me:55432/v2/": dial tcp: lookup localtest.me on {MEMBERS_ADDRESS}:53: '
            "no such host",
        ),
        (
            "read udp 192.168.1.20:46321->[fe80::1%wlan0]:53: i/o timeout",
            f"read udp {MEMBERS_ADDRESS}:46321->[{MEMBERS_ADDRESS}]:53: i/o timeout",
        ),
        (
            "dial tcp 127.0.0.1:5000: connect: connection refused",
            f"dial tcp {MEMBERS_ADDRESS}:5000: connect: connection refused",
        ),
        (
            "lookup x on [::1]:53: server misbehaving",
            f"lookup x on [{MEMBERS_ADDRESS}]:53: server misbehaving",
        ),
        # A registry's global address, versions, times and digests are the user's to read.
        ("dial tcp 93.184.215.14:443: i/o timeout", "dial tcp 93.184.215.14:443: i/o timeout"),
        ("manifest for busybox:1.36.1 not found", "manifest for busybox:1.36.1 not found"),
        ("at 12:30:45 the pull of sha256:ab12:cd failed", "at 12:30:45 the pull of sha256:ab12:cd failed"),
        ("version 10.2.3.4.5 is not 1.2.3", "version 10.2.3.4.5 is not 1.2.3"),
    ],
)
def test_the_members_addresses_are_taken_out_and_nothing_else(detail: str, shared: str) -> None:
    assert without_local_addresses(detail) == shared


def test_the_registry_the_users_image_names_stays() -> None:
    """Tried: a pull from a registry on the member's network that the member allows and the
    user named; the engine's error names it and the member's resolver. Must hold: the user's own
    registry address stays, the resolver's goes."""
    named = named_by("192.168.1.5:5000/team/tool:1")
    assert named == ("192.168.1.5",)
    detail = 'Get "http://192.168.1.5:5000/v2/": dial tcp: lookup x on 10.0.0.53:53: timeout'
    assert without_local_addresses(detail, named=named) == (
        f'Get "http://192.168.1.5:5000/v2/": dial tcp: lookup x on {MEMBERS_ADDRESS}:53: timeout'
    )
    assert named_by("[fd00::5]:5000/x:1") == ("fd00::5",)
    assert named_by("busybox:1") == ("docker.io",)
    assert named_by("not a reference") == ()
