"""The registry removes the events consumers of hosts that are out, on real NATS and Postgres.

The restart case: the log holds HostLeft and HostRevoked while their consumers are still on
the server (a registry stopped between the event and the deletion); a registry started
afterwards removes them, and keeps the consumers of members and of names it does not know.
"""

import asyncio

from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig
from nats.js.errors import NotFoundError

from potluck.contracts.subjects import host_consumer, host_event_filter
from potluck.events import EVENTS_STREAM, EventStore, ensure_streams
from potluck.events.bus import EVENT_PREFIX
from potluck.readmodels.hosts import HostsView
from potluck.registry import host as aggregate
from potluck.registry.consumer_sweep import ConsumerSweep
from potluck.registry.enrollment import enroll_host
from potluck.registry.gone_consumers import Candidate
from potluck.registry.liveness import LivenessPolicy
from potluck.registry.projection import rebuild_view
from potluck.registry.repository import decide_on_host
from potluck.registry.service import RegistryService
from tests.helpers import stop


async def consumer_exists(nc: NATS, name: str) -> bool:
    try:
        await nc.jetstream().consumer_info(EVENTS_STREAM, name)
    except NotFoundError:
        return False
    return True


async def test_a_registry_started_after_hosts_went_out_removes_their_consumers(
    store: EventStore, nc: NATS
) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    left, _ = await enroll_host(store, "left")
    revoked, _ = await enroll_host(store, "revoked")
    member, _ = await enroll_host(store, "member")
    hosts = (left, revoked, member, "h-not-in-the-log")
    for host_id in hosts:
        await js.add_consumer(
            EVENTS_STREAM,
            config=ConsumerConfig(
                durable_name=host_consumer(host_id), filter_subject=host_event_filter(host_id)
            ),
        )
    await decide_on_host(store, left, lambda s: aggregate.leave(s, left, "member"))
    await decide_on_host(store, revoked, lambda s: aggregate.revoke(s, revoked, "olga", "stolen"))

    # No hostd will ever acknowledge: the grace alone lets them go.
    service = RegistryService(store, nc, LivenessPolicy(60.0, 3, 1000.0), consumer_grace_s=0.0)
    task = asyncio.create_task(service.run())
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while await consumer_exists(nc, host_consumer(left)) or await consumer_exists(
            nc, host_consumer(revoked)
        ):
            assert asyncio.get_running_loop().time() < deadline, "the out hosts' consumers stayed"
            await asyncio.sleep(0.1)
    finally:
        await stop(task)
    assert service.consumers.removed == 2
    assert await consumer_exists(nc, host_consumer(member))
    assert await consumer_exists(nc, host_consumer("h-not-in-the-log"))

    # A second replica sweeping the same log finds nothing more to do, and a consumer removed
    # by another between its list and its delete is no error.
    view = HostsView()
    await rebuild_view(store, view)
    replica = ConsumerSweep(js, view, grace_s=0.0)
    assert await replica.sweep() == 0
    await replica._remove(Candidate(host_consumer(left), left, "HostLeft", None), acknowledged=False)
    assert replica.removed == 0
    assert await consumer_exists(nc, host_consumer(member))


async def test_an_out_host_whose_hostd_has_not_acknowledged_keeps_its_consumer_for_the_grace(
    store: EventStore, nc: NATS
) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    left, _ = await enroll_host(store, "left")
    await js.add_consumer(
        EVENTS_STREAM,
        config=ConsumerConfig(durable_name=host_consumer(left), filter_subject=host_event_filter(left)),
    )
    await decide_on_host(store, left, lambda s: aggregate.leave(s, left, "member"))
    view = HostsView()
    await rebuild_view(store, view)
    sweep = ConsumerSweep(js, view, grace_s=3600.0)
    assert await sweep.sweep() == 1, "kept for now, waiting"
    assert await consumer_exists(nc, host_consumer(left))


async def test_an_out_host_whose_hostd_acknowledged_the_event_loses_its_consumer_at_once(
    store: EventStore, nc: NATS
) -> None:
    """hostd took HostLeft from its consumer and acknowledged it: no grace to wait out. Events
    published after it on other hosts' subjects change nothing."""
    js = nc.jetstream()
    await ensure_streams(js)
    left, _ = await enroll_host(store, "left")
    sub = await js.pull_subscribe(host_event_filter(left), durable=host_consumer(left), stream=EVENTS_STREAM)
    await decide_on_host(store, left, lambda s: aggregate.leave(s, left, "member"))
    await js.publish(f"{EVENT_PREFIX}.host.HostLeft.{left}", b"{}")
    view = HostsView()
    await rebuild_view(store, view)
    sweep = ConsumerSweep(js, view, grace_s=3600.0)
    assert await sweep.sweep() == 1, "delivered to no hostd yet: kept"
    [msg] = await sub.fetch(1, timeout=5)
    await msg.ack_sync()
    await js.publish(f"{EVENT_PREFIX}.host.HostPaused.h-other", b"{}")
    assert await sweep.sweep() == 0
    assert not await consumer_exists(nc, host_consumer(left))
    assert sweep.removed == 1


async def test_a_consumer_made_after_its_host_went_out_is_kept(store: EventStore, nc: NATS) -> None:
    """Whatever the view says of the host, a consumer made after the host's last event is the
    one of its return (a deregistered host that registered again), and is kept."""
    js = nc.jetstream()
    await ensure_streams(js)
    back, _ = await enroll_host(store, "back")
    await decide_on_host(store, back, lambda s: aggregate.leave(s, back, "member"))
    await asyncio.sleep(0.05)  # the server's clock and the log's are the same machine's here
    await js.add_consumer(
        EVENTS_STREAM,
        config=ConsumerConfig(durable_name=host_consumer(back), filter_subject=host_event_filter(back)),
    )
    view = HostsView()
    await rebuild_view(store, view)
    sweep = ConsumerSweep(js, view, grace_s=0.0)
    assert await sweep.sweep() == 0
    assert await consumer_exists(nc, host_consumer(back))
