"""hostd's owner policy changed (PolicyChanged on POLICY.<host_id>): decided on the host's
stream (host.policy_changed) and appended as HostThrottled, HostFrozen or HostShareRestored,
or nothing when the registry already knew the state."""

from typing import Any

from potluck.contracts.messages import PolicyChanged
from potluck.registry import host as aggregate
from potluck.registry.repository import decide_on_host
from potluck.registry.requests import HostRequests

__all__ = ["PolicyRequests"]


class PolicyRequests:
    def __init__(self, requests: HostRequests) -> None:
        self.requests = requests

    async def changed(self, host_id: str, payload: bytes) -> dict[str, Any]:
        msg = PolicyChanged.model_validate_json(payload)
        view = self.requests.view
        outcome = await decide_on_host(
            self.requests.store,
            host_id,
            lambda s: aggregate.policy_changed(s, host_id, msg),
            {"actor": f"host:{host_id}"},
            known=lambda: view.hosts.get(host_id),
        )
        return {"host_id": host_id, "recorded": [type(e).type_name for e in outcome.events]}
