"""Whether the SSH keys a request registers can ever log in: each must hold a whole key of its
type (potluck.kernel.ssh_key_shape) that the gateway does not refuse as weak
(potluck.kernel.ssh_key_strength).

A 422, not the 400 of a body that breaks the published schema: the schema says what a key line
looks like (`TYPE BASE64 [comment]`), and a line that looks so but holds no usable key is well
formed and cannot be carried out, like a request no host could hold. Said when the key is given,
rather than as the gateway's "Permission denied" on an allocation no one can reach.
"""

from collections.abc import Sequence

from potluck.kernel.rejections import Rejected
from potluck.kernel.ssh_key_shape import shape_problem
from potluck.kernel.ssh_key_strength import line_weakness

__all__ = ["INVALID_SSH_KEY", "check_ssh_keys"]

INVALID_SSH_KEY = "INVALID_SSH_KEY"


def check_ssh_keys(keys: Sequence[str]) -> None:
    """Rejected (422 INVALID_SSH_KEY, naming the key) for the first key no one could log in with."""
    for n, line in enumerate(keys):
        broken = shape_problem(line)
        if broken is not None:
            why = f"{broken}; give the whole line of the key's .pub file"
        else:
            weak = line_weakness(line)
            if weak is None:
                continue
            why = f"{weak}; make an ed25519 key (ssh-keygen -t ed25519)"
        raise Rejected(INVALID_SSH_KEY, f"ssh_keys.{n}: {line[:40]!r}: {why}", field="ssh_keys", status=422)
