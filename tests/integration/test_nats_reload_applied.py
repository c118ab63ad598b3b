"""NatsServer.reload returns once nats-server has applied the new users (a real nats-server with
the configuration Potluck generates): a key admitted by a reload connects at once after it."""

import pytest

from potluck.contracts.subjects import inbox_prefix
from potluck.localstack import NatsServer
from potluck.localstack.errors import LocalStackError
from potluck.registry.nats_auth import new_user_key, public_key_of, render_authorization, write_authorization
from tests.fixtures.servers import SERVICE_SEED, connect_client


async def test_a_key_admitted_by_a_reload_connects_on_its_first_try(guarded_nats: NatsServer) -> None:
    """Tried: twenty rounds of admitting a new host key (the users file rewritten, reload()) and
    connecting with it the moment reload() returns, no retry. Before: reload() only sent the
    signal, and a key connecting before nats-server applied it was refused (a join told its
    token was spent, once in a full run). Must hold: every connect is admitted."""
    for round_ in range(20):
        key = new_user_key()
        host_id = f"h-reload{round_}"
        write_authorization(
            guarded_nats.auth_file,
            render_authorization([public_key_of(SERVICE_SEED)], [(host_id, key.public)]),
        )
        guarded_nats.reload()
        nc = await connect_client(
            guarded_nats.url,
            nkeys_seed_str=key.seed,
            inbox_prefix=inbox_prefix(host_id),
            allow_reconnect=False,
            connect_timeout=5,
        )
        await nc.close()


async def test_a_configuration_nats_server_refuses_is_named_and_the_old_one_stays(
    guarded_nats: NatsServer,
) -> None:
    """Tried: a users file that is not one nats-server can read, then reload(). Must hold: reload
    raises LocalStackError with nats-server's own words (before: silence, and the next connect
    failed with no reason); the server still runs with the users it had (the services' key
    connects)."""
    guarded_nats.auth_file.write_text("authorization { users = [ { nkey: \n")

    with pytest.raises(LocalStackError, match="refused the new configuration"):
        guarded_nats.reload()

    assert guarded_nats.running()
    nc = await connect_client(guarded_nats.url, nkeys_seed_str=SERVICE_SEED, allow_reconnect=False)
    await nc.close()
