"""How a user reaches an allocation: the `potluck ssh` line, and the plain `ssh` one through the gateway.

The allocator does not run the gateway and cannot see its address; the
operator gives it as POTLUCK_GATEWAY_ADDRESS (`host:port`, what users give
`potluck login --gateway`), which `potluck up` sets for the pool it starts.
Without it the plain line shows placeholders to fill in.
"""

import os
from collections.abc import Mapping

from potluck.kernel.digits import is_digits

__all__ = ["GATEWAY_ADDRESS", "plain_ssh_line"]

GATEWAY_ADDRESS = "POTLUCK_GATEWAY_ADDRESS"


def plain_ssh_line(alloc_id: str, env: Mapping[str, str] = os.environ) -> str:
    """`ssh -p PORT ID@HOST` for the gateway the operator named, or with placeholders."""
    host, sep, port = env.get(GATEWAY_ADDRESS, "").strip().rpartition(":")
    if not sep or not host or not is_digits(port):
        return f"ssh -p GATEWAY_PORT {alloc_id}@GATEWAY_HOST"
    return f"ssh -p {port} {alloc_id}@{host}"
