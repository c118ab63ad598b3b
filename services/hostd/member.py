"""The member's controls, sent with the host's own NATS identity (no database, no open port)."""

import nats.errors

from potluck.contracts.messages import ControlHost, Reply
from potluck.contracts.subjects import CONTROL, STATUS, inbox_prefix
from potluck.events.connection import connect_bus
from potluck.hostd.config import HostdConfig


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
