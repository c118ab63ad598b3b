"""What a login to the users' port may cost and present, beyond what asyncssh checks itself.

asyncssh takes any signature a key can make; that is the gateway's to hold.
What a connection may send before login, and how many authentication requests
(`auth_requests_allowed`), are bounded by potluck.kernel.ssh_bounds, which
hostd's end of the link shares.

- Signatures and keys (`signature_refusal`, `weak_key_refusal`): a login is
  signed with one of `SIGNATURE_ALGS`, the algorithms OpenSSH's sshd accepts
  by default: not `ssh-rsa` (RSA with SHA-1, off in OpenSSH since 8.8), nor
  DSA keys, nor RSA keys under 2048 bits (potluck.kernel.ssh_key_strength,
  the rule the allocator holds new allocations' keys to). The gateway
  advertised `ssh-rsa` and `ssh-dss` in its `server-sig-algs` and verified
  either, and so admitted a key that was registered on an allocation whatever
  its type or size.
"""

import asyncssh
from asyncssh.packet import PacketDecodeError, SSHPacket

from potluck.kernel.ssh_key_strength import weakness

__all__ = [
    "SIGNATURE_ALGS",
    "auth_requests_allowed",
    "signature_algorithm",
    "signature_refusal",
    "weak_key_refusal",
]

#: Signature algorithms a user's login may be signed with (OpenSSH's PubkeyAcceptedAlgorithms
#: without the certificates, which the gateway refuses anyway).
SIGNATURE_ALGS = (
    "ssh-ed25519",
    "sk-ssh-ed25519@openssh.com",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "webauthn-sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
)


def auth_requests_allowed(max_keys: int) -> int:
    """Authentication requests one connection may send: `none` first, then each of `max_keys`
    keys queried and then signed, and the same again for the key that is let in."""
    return 2 * max_keys + 3


def signature_algorithm(signature: bytes) -> str:
    """The algorithm an SSH signature names (its first string), or "" if it names none."""
    try:
        return SSHPacket(signature).get_string().decode("ascii", "replace")
    except PacketDecodeError:
        return ""


def signature_refusal(signature: bytes) -> str | None:
    """Why a login signed so is refused, or None."""
    algorithm = signature_algorithm(signature)
    if algorithm in SIGNATURE_ALGS:
        return None
    if algorithm == "ssh-rsa":
        return "RSA signatures with SHA-1 (ssh-rsa) are refused; OpenSSH 7.2 or later signs with SHA-2"
    return f"signatures of type {algorithm[:64]!r} are refused"


def weak_key_refusal(key: asyncssh.SSHKey) -> str | None:
    """Why `key` is too weak to log in with (potluck.kernel.ssh_key_strength), or None."""
    why = weakness(bytes(key.public_data))
    return None if why is None else f"{why}; register an ed25519 key on the allocation"
