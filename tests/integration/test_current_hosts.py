"""Operators' commands read the hosts from the registry's checkpoint and the log after it
(services/registry/projection.py `resumed_view`), real Postgres.

`potluck ops hosts list|enroll|revoke|control` and every render of the NATS users file need the
hosts as the log has them now. Folding the whole log for that took 4-5 s on a log of 1,000,000
events; the registry keeps checkpoints of exactly that view, which the commands now resume from.
"""

import dataclasses
import json

from potluck.contracts.compatibility import CONTRACT_VERSION
from potluck.contracts.engine import EngineFacts
from potluck.events import EventStore, SkippedEvents
from potluck.readmodels.hosts import HostsView
from potluck.registry.enrollment import current_hosts, enroll_host, revoke_host
from potluck.registry.projection import host_checkpoints, rebuild_view
from tests.e2e.conftest import ops
from tests.integration.test_replay import ENGINE, register_host


async def from_zero(store: EventStore) -> HostsView:
    view = HostsView()
    await rebuild_view(store, view)
    return view


async def test_the_hosts_resume_from_the_registrys_checkpoint_and_the_log_after_it(
    store: EventStore, database_url: str
) -> None:
    """Tried: three hosts enrolled and checkpointed as the registry does, one of them named
    differently in the checkpoint only (to see which was read); then one revoked and one more
    enrolled. Must hold: `current_hosts` and `potluck ops hosts list` give the checkpoint's
    hosts with the events after it folded in (the revocation, the new host), at the log's head,
    and the command warns of nothing; without a checkpoint they equal a fold from zero."""
    ids = [(await enroll_host(store, f"laptop-{i}"))[0] for i in range(3)]
    assert (await current_hosts(store)).hosts == (await from_zero(store)).hosts

    view = await from_zero(store)
    marked = dataclasses.replace(view.hosts[ids[0]], name="from-the-checkpoint")
    view.hosts[ids[0]] = marked
    checkpoints = host_checkpoints(store)
    await checkpoints.save(view.position, checkpoints.encode((view, SkippedEvents())))
    await revoke_host(store, ids[1], by="operator", reason="stolen laptop")
    later, _ = await enroll_host(store, "laptop-3")

    resumed = await current_hosts(store)
    zero = await from_zero(store)
    assert resumed.position == zero.position == await store.head_position()
    assert resumed.hosts[ids[0]].name == "from-the-checkpoint"
    assert resumed.hosts[ids[1]].status == "revoked"
    assert set(resumed.hosts) == set(zero.hosts) == {*ids, later}
    assert {h: s for h, s in resumed.hosts.items() if h != ids[0]} == {
        h: s for h, s in zero.hosts.items() if h != ids[0]
    }

    code, out, err = await ops("hosts", "list", "--json", "--database-url", database_url)
    assert code == 0, err
    rows = {row["host_id"]: row for row in map(json.loads, out.splitlines())}
    assert rows[ids[0]]["name"] == "from-the-checkpoint"
    assert (rows[ids[1]]["status"], rows[later]["status"]) == ("revoked", "enrolled")
    assert "checkpoint" not in err, err


async def test_a_host_never_registered_shows_no_contract_and_refusals_speak_to_the_operator(
    store: EventStore, database_url: str
) -> None:
    """Tried: `potluck ops hosts list` (JSON and table) with one host enrolled and never registered
    beside one registered; `ops hosts revoke` and `ops hosts control ... pause` with an id no host
    has, with a host's name instead of its id, and (control) on the host never registered and on
    a revoked one.
    Must hold: the never-registered host's contract and hostd_version are null (a dash in the
    table), the registered one's are its own; each refusal exits 1 naming what was looked for and
    how to list the hosts, in the operator's terms (not "ask an operator"), and records nothing."""
    enrolled, _ = await enroll_host(store, "laptop-new")
    registered = await register_host(store, "laptop-old", 1.0)

    code, out, err = await ops("hosts", "list", "--json", "--database-url", database_url)
    assert code == 0, err
    rows = {row["host_id"]: row for row in map(json.loads, out.splitlines())}
    assert (rows[enrolled]["status"], rows[enrolled]["contract"], rows[enrolled]["hostd_version"]) == (
        "enrolled",
        None,
        None,
    )
    assert (rows[registered]["contract"], rows[registered]["hostd_version"]) == (CONTRACT_VERSION, "test")
    code, table, err = await ops("hosts", "list", "--table", "--database-url", database_url)
    assert code == 0, err
    lines = {line.split()[0]: line.split() for line in table.splitlines()}
    assert "CONTRACT" in lines["HOST"]
    column = lines["HOST"].index("CONTRACT")
    assert lines[enrolled][column] == "-", table
    assert lines[registered][column] == str(CONTRACT_VERSION), table

    head = await store.head_position()
    db = ("--database-url", database_url)
    for command in (("revoke", "h-000000000000", *db), ("control", "h-000000000000", "pause", *db)):
        code, out, err = await ops("hosts", *command)
        assert (code, out) == (1, ""), out + err
        assert "no host 'h-000000000000' in the pool's log" in err, err
        assert "`potluck ops hosts list` lists every host with its id" in err, err
        assert "ask an operator" not in err, err
    code, _, err = await ops("hosts", "revoke", "laptop-new", *db)
    assert code == 1, err
    assert f"'laptop-new' is the name of host {enrolled}; revoke takes the host's id" in err, err
    code, _, err = await ops("hosts", "control", enrolled, "pause", *db)
    assert code == 1, err
    assert f"host {enrolled} has not registered" in err, err
    assert "start its hostd" not in err, err
    await revoke_host(store, registered, by="olga", reason="stolen")
    head = await store.head_position()
    code, _, err = await ops("hosts", "control", registered, "pause", *db)
    assert code == 1, err
    assert f"host {registered} was revoked for good: there is nothing to pause" in err, err
    assert "ask an operator" not in err, err
    assert await store.head_position() == head


async def test_the_hosts_list_says_whether_root_in_a_hosts_containers_is_root_on_its_machine(
    store: EventStore, database_url: str
) -> None:
    """Tried: `potluck ops hosts list` (JSON and table) with a host whose engine remaps users,
    one whose engine does not, one registered by a hostd older than the fact, and one enrolled
    and never registered. Must hold: each shows its own (`remap`, `off`, `unreported`), the
    never-registered one none (null, a dash in the table)."""
    engines = {
        name: ENGINE.model_copy(update={"user_namespaces": said})
        for name, said in (("laptop-remap", "remap"), ("laptop-plain", "off"))
    }
    ids = {name: await register_host(store, name, 1.0, engine=engine) for name, engine in engines.items()}
    ids["laptop-older"] = await register_host(
        store,
        "laptop-older",
        1.0,
        engine=EngineFacts.model_validate(ENGINE.model_dump(exclude={"user_namespaces"})),
    )
    ids["laptop-new"], _ = await enroll_host(store, "laptop-new")
    expected = {
        "laptop-remap": "remap",
        "laptop-plain": "off",
        "laptop-older": "unreported",
        "laptop-new": None,
    }

    code, out, err = await ops("hosts", "list", "--json", "--database-url", database_url)
    assert code == 0, err
    rows = {row["host_id"]: row for row in map(json.loads, out.splitlines())}
    assert {name: rows[ids[name]]["user_namespaces"] for name in ids} == expected
    code, table, err = await ops("hosts", "list", "--table", "--database-url", database_url)
    assert code == 0, err
    lines = {line.split()[0]: line.split() for line in table.splitlines()}
    column = lines["HOST"].index("USERNS")
    assert {name: lines[ids[name]][column] for name in ids} == {n: s or "-" for n, s in expected.items()}, (
        table
    )
