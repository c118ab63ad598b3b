"""The member's controls, sent with the host's own NATS identity (no database, no open port),
and what the running hostd reads on this machine (its status file in the state_dir)."""

import json
from datetime import UTC, datetime
from typing import Any

import nats.errors

from potluck.contracts.messages import ControlHost, Reply
from potluck.contracts.subjects import CONTROL, STATUS, inbox_prefix
from potluck.events.connection import connect_bus
from potluck.hostd.config import HostdConfig
from potluck.hostd.policy_runner import status_path


async def _ask(config: HostdConfig, subject: str, payload: bytes) -> Reply:
    nc = await connect_bus(
        config.nats_url,
        name=f"member-{config.host_id}",
        seed=config.nats_seed(),
        inbox_prefix=inbox_prefix(config.host_id),
    )
    try:
        msg = await nc.request(f"{subject}.{config.host_id}", payload, timeout=10)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
        raise ConnectionError(f"the registry did not answer on {config.nats_url}: {exc!r}") from exc
    finally:
        await nc.close()
    return Reply.model_validate_json(msg.data)


async def control(config: HostdConfig, action: str, grace_s: float = 300.0) -> Reply:
    command = ControlHost.model_validate({"action": action, "grace_s": grace_s})
    return await _ask(config, CONTROL, command.model_dump_json().encode())


async def status(config: HostdConfig) -> Reply:
    return await _ask(config, STATUS, b"{}")


def local_status(config: HostdConfig) -> dict[str, Any]:
    """hostd's own readings (donated caps, pool use, owner load, battery, temperature, the
    policy and its last transitions), with how old they are; hostd rewrites them every second."""
    path = status_path(config)
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return {"error": f"no {path}: hostd has not run here with this state_dir"}
    except (OSError, ValueError) as exc:
        return {"error": f"{path}: {exc}"}
    try:
        age = (datetime.now(UTC) - datetime.fromisoformat(str(data.get("at")))).total_seconds()
    except ValueError:
        age = None
    data["age_s"] = None if age is None else round(age, 1)
    if age is None or age > 10:
        data["stale"] = "hostd has not updated this for a while: is it running?"
    return data
