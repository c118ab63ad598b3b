"""potluck.user.known_hosts: `potluck login --gateway-key` writes the gateway's one key."""

import base64
import hashlib
import hmac
from pathlib import Path

import pytest

from potluck.user.known_hosts import host_pattern, pin_gateway_key, public_key_line
from tests.fixtures.weak_keys import ED25519_KEY, RSA_3072_KEY


def _hashed(host: str) -> str:
    salt = b"0123456789abcdefghij"
    digest = hmac.new(salt, host.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def test_pinning_replaces_every_entry_for_the_gateway_and_keeps_the_others(tmp_path: Path) -> None:
    """What is tried: a known_hosts holding the gateway's address hashed (as OpenSSH writes it on
    first use), plainly among other names, another host's entry and a comment; then a pin.
    What must hold: one line names the gateway, with the pinned key; the rest are kept."""
    known = tmp_path / "known_hosts"
    other = f"[127.0.0.1]:2200 {RSA_3072_KEY}"
    known.write_text(
        f"# a comment\n{_hashed('[127.0.0.1]:2222')} {RSA_3072_KEY}\n"
        f"gw,[127.0.0.1]:2222 {RSA_3072_KEY}\n{other}\n"
    )
    pin_gateway_key(known, "127.0.0.1:2222", public_key_line(ED25519_KEY))
    assert known.read_text().splitlines() == ["# a comment", other, f"[127.0.0.1]:2222 {ED25519_KEY}"]


def test_port_22_is_named_as_openssh_names_it() -> None:
    assert host_pattern("gw.example:22") == "gw.example"
    assert host_pattern("gw.example:2222") == "[gw.example]:2222"


@pytest.mark.parametrize(
    "given", ["", "bogus", "ssh-ed25519", "ssh-ed25519 !!!", "ssh-ed25519 " + RSA_3072_KEY.split()[1]]
)
def test_what_is_not_a_host_key_line_is_refused_saying_what_to_give(given: str) -> None:
    with pytest.raises(ValueError, match=r"--print-host-key|base64|is not a ssh-ed25519 key"):
        public_key_line(given)


def test_a_file_holding_the_key_is_read(tmp_path: Path) -> None:
    path = tmp_path / "gw.pub"
    path.write_text(ED25519_KEY + " potluck-sshgateway-host\n")
    assert public_key_line(str(path)) == ED25519_KEY
