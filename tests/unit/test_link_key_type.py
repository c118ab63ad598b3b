"""The check that a key file holds a key of a type the hostd-gateway link takes."""

from pathlib import Path

import pytest

from potluck.contracts.link import LINK_SIGNATURE_ALGS
from potluck.kernel.ssh_identity import SSHIdentityError, require_key_type


def test_a_key_of_a_type_the_link_takes_passes() -> None:
    """Tried: an ed25519 key's type against the link's types. Must hold: no error."""
    require_key_type(Path("/state/key"), "ssh-ed25519", LINK_SIGNATURE_ALGS, remedy="remove it")


@pytest.mark.parametrize("kind", ["ssh-rsa", "ecdsa-sha2-nistp256", "ssh-ed25519-cert-v01@openssh.com", ""])
def test_a_key_of_another_type_is_refused_naming_the_file_its_type_and_the_fix(kind: str) -> None:
    """Tried: keys of types the link does not take (an RSA or ECDSA key put in place by hand, a
    certificate). Must hold: SSHIdentityError naming the file, the key's type, the types taken,
    and the caller's remedy."""
    with pytest.raises(SSHIdentityError) as refused:
        require_key_type(Path("/state/key"), kind, LINK_SIGNATURE_ALGS, remedy="remove it to have one made")
    said = str(refused.value)
    assert said.startswith("/state/key holds a key of type "), said
    assert f"type {kind}," in said
    assert "take ssh-ed25519 keys only" in said
    assert said.endswith("remove it to have one made")
