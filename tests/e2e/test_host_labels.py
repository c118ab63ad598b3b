"""Host labels outside the bound (potluck.contracts.host_labels), on a real pool.

NATS, Postgres, the registry, the allocator and hostd on a private Docker engine, all real. A
hostd of another version (or a member sending the message by hand) is played by a client with
the host's own NATS identity, and by hostd's own agent run in the test's process with a
configuration that skipped the check; a member's hostd.toml by the `potluck hostd` command.
"""

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from potluck.contracts.host_events import host_stream
from potluck.contracts.host_labels import BAD_LABELS
from potluck.contracts.messages import RegisterHost, Reply
from potluck.contracts.subjects import REGISTER
from potluck.hostd import agent
from potluck.hostd.config import load_config
from potluck.localstack.docker_engine import DockerEngine
from potluck.localstack.test_image import DEFAULT_TAG
from tests.e2e.conftest import hostd_started_with, ops
from tests.fixtures.pool import EnrolledHost, Pool

#: The audit's findings, each with what the refusal must say.
BAD_LABELS_SAID: list[tuple[dict[str, str], list[str]]] = [
    (
        {f"label{i}": "x" * 1000 for i in range(600)},
        ["600 labels; at most 32 are allowed", "label 'label0': its value is 1000 characters long"],
    ),
    ({"zone": "home\x1b[2J"}, ["label 'zone': its value holds U+001B"]),
    ({"<svg onload=alert(1)>": "1"}, ["label '<svg onload=alert(1)>': a name is 1 to 63 letters"]),
    ({"owner": "ann\u202enimda"}, ["label 'owner': its value holds U+202E RIGHT-TO-LEFT OVERRIDE"]),
]


async def test_a_registration_with_labels_outside_the_bound_is_refused_and_records_nothing(
    pool: Pool, laptop: EnrolledHost
) -> None:
    """What is tried: the registered host sends the registry, over the pool's NATS with its own
    identity, its registration again with the audit's labels in turn: 600 labels of 1000
    characters, a terminal escape in a value, a name of markup, a right-to-left override in a
    value; then registrations with a NUL (which the log cannot store) in a label and in its
    version. Then the same registration with labels within the bound.
    What must hold: each is refused with BAD_LABELS (not INTERNAL) naming the label at fault and
    what to change, and those with a NUL BAD_REQUEST naming the field (not INTERNAL, which the
    append failed with); the host's stream does not move and no HostRegistered is appended; the
    registry logs each refusal and counts it for the host in its list; the host stays
    registered with its labels as they were. The good registration is recorded."""
    host_id = laptop.host_id
    stream = host_stream(host_id)
    state = (await pool.hosts()).hosts[host_id]
    assert state.donated is not None
    assert state.engine is not None
    assert state.labels == {"name": "laptop-a"}
    version_before = await pool.store.stream_version(stream)
    head_before = await pool.store.head_position()

    def registration(labels: dict[str, str]) -> RegisterHost:
        assert state.donated is not None
        assert state.engine is not None
        return RegisterHost(
            donated=state.donated,
            labels=labels,
            allowed_images=list(state.allowed_images),
            allow_network=state.allow_network,
            engine=state.engine,
            hostd_version=state.hostd_version,
            ssh_host_key=state.ssh_host_key,
            contract=state.contract,
        )

    as_host = await pool.client(laptop)
    for labels, said in BAD_LABELS_SAID:
        msg = await as_host.request(
            f"{REGISTER}.{host_id}", registration(labels).model_dump_json().encode(), timeout=10
        )
        reply = Reply.model_validate_json(msg.data)
        assert not reply.ok, reply
        assert reply.error is not None
        assert reply.error["code"] == BAD_LABELS, reply.error
        assert reply.error["field"] == "labels", reply.error
        for words in [*said, "change [labels] in hostd.toml"]:
            assert words in reply.error["message"], reply.error
        assert len(reply.error["message"]) < 600, reply.error
    good_body = registration({"name": "laptop-a"}).model_dump(mode="json")
    for field, nul in (("labels", {"zone": "home\x00"}), ("hostd_version", "1.0\x00")):
        body = json.dumps({**good_body, field: nul}).encode()
        msg = await as_host.request(f"{REGISTER}.{host_id}", body, timeout=10)
        reply = Reply.model_validate_json(msg.data)
        assert reply.error is not None, reply
        assert reply.error["code"] == "BAD_REQUEST", reply.error
        assert f"{field}: holds a NUL character" in reply.error["message"], reply.error
    assert await pool.store.stream_version(stream) == version_before
    appended = await pool.store.read_all(head_before)
    assert not [e for e in appended if e.stream == stream], appended

    registry_log = pool.processes["registry"].log_path.read_text(errors="replace")
    refusals = [line for line in registry_log.splitlines() if "registry.labels_refused" in line]
    assert len(refusals) == len(BAD_LABELS_SAID), registry_log[-4000:]
    assert all(host_id in line for line in refusals)
    assert "x" * 1000 not in registry_log  # the log says the problem, not the 600 KB
    listed = await pool.live_hosts()
    assert listed["refused"]["bad_labels"] == {host_id: len(BAD_LABELS_SAID)}, listed["refused"]
    [row] = [h for h in listed["hosts"] if h["host_id"] == host_id]
    assert row["labels"] == {"name": "laptop-a"}, row

    good = {"name": "laptop-a", "zone": "home", "gpu.vendor": "amd"}
    msg = await as_host.request(
        f"{REGISTER}.{host_id}", registration(good).model_dump_json().encode(), timeout=10
    )
    reply = Reply.model_validate_json(msg.data)
    assert reply.ok, reply
    assert reply.data["recorded"] == ["HostRegistered"], reply
    assert (await pool.hosts()).hosts[host_id].labels == good
    await as_host.close()


async def test_a_hostd_whose_labels_the_registry_refuses_stops_saying_so(
    pool: Pool, docker_engines: list[DockerEngine]
) -> None:
    """What is tried: hostd's agent starts for a newly enrolled machine with labels the registry
    refuses (its configuration built without the check, as by a hostd of another version).
    What must hold: it stops for good (HostdStopped, on which `potluck hostd` exits 3 and is
    not restarted, since asking again sends the same labels) with the registry's words naming
    the label; the machine is recorded as enrolled only."""
    host = await pool.enroll("laptop-labels")
    config = load_config(pool.write_config(host, docker_engines[0]))
    unchecked = config.model_copy(update={"labels": {"zone": "home\u202eemoh"}})
    await pool.central_services_ready()
    with pytest.raises(agent.HostdStopped) as stopped:
        async with asyncio.timeout(60):
            await agent.Agent(unchecked).run()
    said = str(stopped.value)
    assert said.startswith("the registry refused this machine's labels: "), said
    assert "label 'zone': its value holds U+202E RIGHT-TO-LEFT OVERRIDE" in said, said
    assert "change [labels] in hostd.toml" in said
    assert (await pool.hosts()).hosts[host.host_id].status == "enrolled"


def test_hostd_with_a_bad_label_in_its_config_stops_at_start_naming_it(tmp_path: Path) -> None:
    """What is tried: `potluck hostd` with a hostd.toml whose [labels] hold a name of markup, a
    NUL in a value, or 33 labels. What must hold: exit code 2 (as for any configuration error),
    before anything is asked of NATS or Docker, and stderr names the file, `labels`, the label
    at fault (escaped) and what to change."""
    config = tmp_path / "hostd.toml"
    base = (
        'host_id = "h-3f2a9c1e7b40"\ncredentials_file = "h.creds"\nstate_dir = "s"\n'
        '[donate]\ncpus = 1\nmemory = "1G"\ndisk = "1G"\n[labels]\n'
    )
    many = "".join(f'l{i} = "x"\n' for i in range(33))
    cases = {
        '"<svg onload=alert(1)>" = "1"\n': "label '<svg onload=alert(1)>': a name is 1 to 63 letters",
        'zone = "home\\u0000"\n': "label 'zone': its value holds U+0000",
        many: "33 labels; at most 32 are allowed",
    }
    for labels, said in cases.items():
        config.write_text(base + labels)
        done = hostd_started_with(config)
        assert done.returncode == 2, (labels, done.stderr)
        assert f"{config}: labels: " in done.stderr, done.stderr
        assert said in done.stderr, (labels, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr


async def test_a_machine_is_not_enrolled_under_a_name_its_name_label_could_not_hold(
    pool: Pool, tmp_path: Path
) -> None:
    """What is tried: `potluck ops hosts enroll` under a name of 200 characters (with a join
    token) and under one holding a right-to-left override (with --credentials-out); `potluck
    join` would write either into hostd.toml as the `name` label. What must hold: exit code 1
    saying why the name is refused, nothing appended to the log, no credentials written."""
    head_before = await pool.store.head_position()
    creds = tmp_path / "spare.creds"
    cases = [
        (["n" * 200, "--nats-url", pool.nats.url], "is 200 characters long; at most 128 are allowed"),
        (["spare\u202eeraps", "--credentials-out", str(creds)], "holds U+202E RIGHT-TO-LEFT OVERRIDE"),
    ]
    for args, said in cases:
        code, out, err = await ops("hosts", "enroll", *args, "--database-url", pool.database_url)
        assert code == 1, (args, out, err)
        assert err.startswith("error: the name "), err
        assert said in err, err
        assert "Traceback" not in err, err
    assert await pool.store.head_position() == head_before
    assert not creds.exists()


async def test_a_second_machine_is_not_enrolled_under_a_name_another_holds(
    pool: Pool, tmp_path: Path
) -> None:
    """What is tried: `potluck ops hosts enroll desk` (credentials), then `desk` again with a join
    token, as an operator retrying would; then again after the first desk was revoked (a token
    that expired unredeemed frees its name too: tests/unit/test_host_labels.py, tokens live a
    minute at least).
    What must hold: the second `desk` exits 1 saying which machine holds the name and how to
    free it, appending nothing and writing no credentials (users select machines by name: two
    under one would each be sent the other's users' work); a revoked machine's name can be
    enrolled again."""
    db = ("--database-url", pool.database_url)
    code, out, err = await ops("hosts", "enroll", "desk", "--credentials-out", str(tmp_path / "1.creds"), *db)
    assert code == 0, err
    desk = json.loads(out)["host_id"]

    head = await pool.store.head_position()
    code, out, err = await ops("hosts", "enroll", "desk", "--nats-url", pool.nats.url, *db)
    assert code == 1, (out, err)
    assert f"error: the name 'desk' is held by {desk} (enrolled); choose another name" in err, err
    assert f"potluck ops hosts revoke {desk}" in err, err
    assert "Traceback" not in err, err
    assert await pool.store.head_position() == head

    code, _, err = await ops("hosts", "revoke", desk, "--reason", "replaced", *db)
    assert code == 0, err
    code, out, err = await ops("hosts", "enroll", "desk", "--credentials-out", str(tmp_path / "2.creds"), *db)
    assert code == 0, err
    assert json.loads(out)["host_id"] != desk


async def test_a_machine_cannot_call_itself_after_another_and_be_sent_its_users_work(
    pool: Pool, docker_engines: list[DockerEngine], tmp_path: Path
) -> None:
    """What is tried: laptop-b is in the pool; the member of laptop-a, whose hostd.toml is theirs
    to edit, sets `name = "laptop-b"` in its [labels] and starts hostd, hoping to be sent the work
    users ask of laptop-b (`"constraints": {"name": "laptop-b"}`), SSH keys and secrets with it;
    then writes hostd.toml by hand with no `name` at all, as README's example for a machine
    enrolled with --credentials-out has none.
    What must hold: the registry refuses the first registration (BAD_LABELS): `potluck hostd`
    exits 3 saying the name is the operator's and which it is, laptop-a stays enrolled and
    unregistered, and a user's request for laptop-b is placed on laptop-b; the second registers
    with the name it was enrolled under filled in, so users reach it by that name."""
    a = await pool.enroll("laptop-a")
    b = await pool.enroll("laptop-b")
    pool.write_config(b, docker_engines[1])
    pool.start_hostd(b)
    await pool.wait_for_host(b.host_id, "active")

    impostor = pool.write_config(a, docker_engines[0], labels={"name": "laptop-b", "zone": "home"})
    done = await asyncio.to_thread(hostd_started_with, impostor)
    assert done.returncode == 3, done.stderr
    assert "but an operator enrolled it as 'laptop-a': the name is the operator's" in done.stderr, done.stderr
    state = (await pool.hosts()).hosts[a.host_id]
    assert (state.status, state.registered, state.labels) == ("enrolled", False, {}), state

    await pool.wait_api()
    headers = {"Authorization": f"Bearer {await pool.add_user('alice')}"}
    body = {"cpus": 0.25, "memory": "64M", "disk": "64M", "image": DEFAULT_TAG}
    async with aiohttp.ClientSession() as http:

        async def placed_on(name: str) -> str:
            """The host a request constrained to the machine called `name` is placed on."""
            async with http.post(
                f"{pool.api}/v1/allocations", json={**body, "constraints": {"name": name}}, headers=headers
            ) as response:
                created = await response.json()
                assert response.status == 201, created
            return str(created["host_id"])

        assert await placed_on("laptop-b") == b.host_id

        pool.write_config(a, docker_engines[0], labels={"zone": "home"})
        pool.start_hostd(a)
        await pool.wait_for_host(a.host_id, "active")
        assert (await pool.hosts()).hosts[a.host_id].labels == {"name": "laptop-a", "zone": "home"}
        assert await placed_on("laptop-a") == a.host_id
