"""Limits and hardening as create arguments, and the check that reads them back."""

import copy
import json
from typing import Any

import pytest

from potluck.contracts.allocation_events import AllocationSpec
from potluck.contracts.capacity import Capacity
from potluck.hostd.container_config import (
    CAPABILITIES,
    CONTAINER_LABELS,
    ENGINE_MASKED_PATHS,
    ENGINE_READONLY_PATHS,
    HARDWARE_PATHS,
    LABEL_NAMESPACE,
    LABEL_SPEC,
    LABEL_WARM,
    LEGACY_LOG,
    MASKED_PATHS,
    MEMLOCK,
    MSGQUEUE,
    NOFILE_HARD,
    NOFILE_SOFT,
    NPROC,
    OLDER_ENGINE_MASKED_PATHS,
    OOM_SCORE_ADJ,
    SIGPENDING,
    ContainerSpec,
    create_kwargs,
    files_bound,
    hardware_paths,
    helper_mounts,
    image_refusals,
    limit_mismatches,
    log_beside_disk,
    masked_paths,
    network_kwargs,
    network_mismatches,
    own_labels,
    security_options,
)
from potluck.hostd.helper import KEEP_ALIVE
from potluck.hostd.seccomp_profile import PROFILE as SECCOMP_PROFILE

MiB = 1024 * 1024


def _spec(**changes: Any) -> ContainerSpec:
    values: dict[str, Any] = {
        "allocation_id": "a1b2",
        "host_id": "host-1",
        "image": "busybox:latest",
        "cpus": 1.5,
        "memory_bytes": 256 * MiB,
        "disk_bytes": 1024 * MiB,
        "pids_limit": 128,
        "command": ["sleep", "infinity"],
        "env": {"A": "1"},
    }
    values.update(changes)
    return ContainerSpec(**values)


def _inspect_as_the_engine_reports(spec: ContainerSpec, *, disk_quota: bool) -> dict[str, Any]:
    """What docker inspect shows for a container created from create_kwargs (Docker 20.10)."""
    host: dict[str, Any] = {
        "NanoCpus": spec.nano_cpus,
        "CpuShares": 2,
        "Memory": spec.memory_bytes,
        "MemorySwap": spec.memory_bytes,
        "PidsLimit": spec.pids_limit,
        "OomKillDisable": False,
        "OomScoreAdj": 1000,
        "CapDrop": ["ALL"],
        "CapAdd": [f"CAP_{c}" for c in CAPABILITIES],
        "SecurityOpt": security_options(),
        "Privileged": False,
        "NetworkMode": "potluck-a1b2" if spec.network else "none",
        "Ulimits": [
            {"Name": "nofile", "Hard": NOFILE_HARD, "Soft": NOFILE_SOFT},
            {"Name": "nproc", "Hard": NPROC, "Soft": NPROC},
            {"Name": "core", "Hard": 1, "Soft": 1},
            {"Name": "sigpending", "Hard": SIGPENDING, "Soft": SIGPENDING},
            {"Name": "msgqueue", "Hard": MSGQUEUE, "Soft": MSGQUEUE},
            {"Name": "memlock", "Hard": MEMLOCK, "Soft": MEMLOCK},
        ],
        "Binds": None,
        "VolumesFrom": None,
        "Devices": [],
        "DeviceCgroupRules": None,
        "DeviceRequests": None,
        "PidMode": "",
        "IpcMode": "private",
        "UTSMode": "",
        "UsernsMode": "",
        "CgroupnsMode": "private",
        "Init": True,
        "LogConfig": {"Type": "json-file", "Config": dict(spec.log_config)},
        "MaskedPaths": masked_paths(),
        "ReadonlyPaths": list(ENGINE_READONLY_PATHS),
    }
    if disk_quota:
        host["StorageOpt"] = {"size": str(spec.writable_bytes)}
    return {"HostConfig": host, "Mounts": [], "Config": {"Healthcheck": {"Test": ["NONE"]}}}


def test_create_kwargs_carry_every_limit_and_the_hardening() -> None:
    """A spec of 1.5 cpus, 256 MiB, 128 pids, no network. The create arguments ask for
    exactly these limits, the lowest CPU weight, no swap, all capabilities dropped but a
    few, no new privileges, no network, docker-init, rotated logs, and labels that give the spec back."""
    spec = _spec()

    kwargs = create_kwargs(spec, disk_quota=False)

    assert kwargs["name"] == "potluck-a1b2"
    assert kwargs["nano_cpus"] == 1_500_000_000
    assert kwargs["cpu_shares"] == 2  # the lowest weight: the owner's processes come first
    assert kwargs["mem_limit"] == kwargs["memswap_limit"] == 256 * MiB
    assert kwargs["pids_limit"] == 128
    assert kwargs["oom_score_adj"] == OOM_SCORE_ADJ == 1000
    assert kwargs["cap_drop"] == ["ALL"]
    assert sorted(kwargs["cap_add"]) == sorted(CAPABILITIES)
    assert kwargs["security_opt"] == ["no-new-privileges", "seccomp=" + SECCOMP_PROFILE]
    assert kwargs["privileged"] is False
    assert kwargs["network_mode"] == "none"
    assert kwargs["init"] is True
    assert kwargs["log_config"]["config"]["max-size"]
    assert kwargs["healthcheck"] == {"test": ["NONE"]}  # the engine runs no image's check
    assert "storage_opt" not in kwargs
    for forbidden in ("volumes", "devices", "pid_mode", "userns_mode", "uts_mode", "mounts"):
        assert forbidden not in kwargs
    assert kwargs["labels"]["potluck.allocation"] == "a1b2"
    assert kwargs["labels"]["potluck.host"] == "host-1"
    assert kwargs["labels"]["potluck.managed"] == "1"
    assert ContainerSpec.from_json(kwargs["labels"][LABEL_SPEC]) == spec
    # Every label hostd reads is set, none left for an image's value to show through.
    assert set(kwargs["labels"]) == set(CONTAINER_LABELS)
    assert kwargs["labels"][LABEL_WARM] == ""


def test_every_label_of_ours_is_set_and_in_the_namespace_images_may_not_use() -> None:
    """own_labels sets each label hostd reads (empty where not given) and takes no other; each
    is in the namespace an image is refused for, so no image can bring one."""
    assert own_labels({}) == dict.fromkeys(CONTAINER_LABELS, "")
    assert own_labels({LABEL_WARM: "1"})[LABEL_WARM] == "1"
    with pytest.raises(ValueError, match="not a container label of ours"):
        own_labels({"potluck.warm.disk": "1"})
    assert all(key.startswith(LABEL_NAMESPACE) for key in CONTAINER_LABELS)
    assert image_refusals({"Config": {"Labels": dict.fromkeys(CONTAINER_LABELS, "")}})


def test_no_container_is_told_the_members_name_servers_or_search_domains() -> None:
    """Tried: create arguments for a container without a network and for one with its own.
    Must hold: neither gets the machine's search domains; the first gets its own loopback as
    name server (none of the machine's), the second the engine's own resolver (no `dns`), which
    forwards to the member's servers without naming them."""
    alone = create_kwargs(_spec(), disk_quota=False)
    networked = create_kwargs(_spec(network=True), disk_quota=False)

    assert (alone["dns"], alone["dns_search"]) == (["127.0.0.1"], ["."])
    assert "dns" not in networked
    assert networked["dns_search"] == ["."]


def test_disk_quota_and_network_only_when_asked() -> None:
    """With quota support the writable layer gets a size; a spec that asks for network gets
    a network of its own, never the engine's shared default bridge."""
    kwargs = create_kwargs(_spec(network=True), disk_quota=True)

    assert kwargs["storage_opt"] == {"size": str((1024 - 30) * MiB)}  # the log has 30 MiB of it
    assert kwargs["network_mode"] == "potluck-a1b2"
    assert create_kwargs(_spec(network=True), disk_quota=True)["network_mode"] != "bridge"


@pytest.mark.parametrize("disk_quota", [False, True])
@pytest.mark.parametrize("network", [False, True])
def test_a_container_as_asked_has_no_mismatch(disk_quota: bool, network: bool) -> None:
    """inspect as the engine reports a container made from our arguments: nothing differs."""
    spec = _spec(network=network)

    assert limit_mismatches(spec, _inspect_as_the_engine_reports(spec, disk_quota=disk_quota),
                            disk_quota=disk_quota) == []  # fmt: skip


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("HostConfig", "NanoCpus"), 0, "NanoCpus"),
        (("HostConfig", "CpuShares"), 0, "CpuShares"),
        (("HostConfig", "Memory"), 0, "Memory"),
        (("HostConfig", "MemorySwap"), -1, "MemorySwap"),
        (("HostConfig", "PidsLimit"), None, "PidsLimit"),
        (("HostConfig", "OomKillDisable"), True, "OomKillDisable"),
        (("HostConfig", "OomScoreAdj"), -500, "OomScoreAdj"),
        (("HostConfig", "OomScoreAdj"), 500, "OomScoreAdj"),
        (("HostConfig", "CapDrop"), [], "CapDrop"),
        (("HostConfig", "CapAdd"), ["CAP_SYS_ADMIN"], "CapAdd"),
        (("HostConfig", "SecurityOpt"), [], "SecurityOpt.no-new-privileges"),
        (("HostConfig", "SecurityOpt"), ["no-new-privileges", "apparmor=unconfined"],
         "SecurityOpt.unconfined"),
        (("HostConfig", "SecurityOpt"), ["no-new-privileges", 'seccomp={"defaultAction":"SCMP_ACT_ALLOW"}'],
         "SecurityOpt.seccomp"),
        (("HostConfig", "Privileged"), True, "Privileged"),
        (("HostConfig", "NetworkMode"), "host", "NetworkMode"),
        (("HostConfig", "NetworkMode"), "bridge", "NetworkMode"),
        (("HostConfig", "PublishAllPorts"), True, "PublishAllPorts"),
        (("HostConfig", "PortBindings"), {"22/tcp": [{"HostIp": "", "HostPort": "2222"}]}, "PortBindings"),
        (("HostConfig", "Ulimits"), None, "Ulimits"),
        (("HostConfig", "Ulimits"), [{"Name": "nofile", "Hard": 1 << 20, "Soft": 1 << 20}], "Ulimits"),
        (("HostConfig", "Binds"), ["/:/host"], "Binds"),
        (("Mounts",), [{"Type": "bind", "Source": "/var/run/docker.sock"}], "Mounts"),
        (("HostConfig", "Devices"), [{"PathOnHost": "/dev/kvm"}], "Devices"),
        (("HostConfig", "PidMode"), "host", "PidMode"),
        (("HostConfig", "IpcMode"), "host", "IpcMode"),
        (("HostConfig", "UTSMode"), "host", "UTSMode"),
        (("HostConfig", "UsernsMode"), "host", "UsernsMode"),
        (("HostConfig", "CgroupnsMode"), "host", "CgroupnsMode"),
        (("HostConfig", "Init"), None, "Init"),
        (("HostConfig", "LogConfig"), {"Type": "json-file", "Config": {"max-file": "3"}},
         "LogConfig.max-size"),
        (("HostConfig", "LogConfig", "Type"), "none", "LogConfig.Type"),
        (("Config", "Healthcheck"), {"Test": ["CMD", "/bin/true"], "Interval": 1_000_000},
         "Config.Healthcheck"),
        # `--security-opt systempaths=unconfined`: nothing masked, nothing read-only.
        (("HostConfig", "MaskedPaths"), [], "MaskedPaths"),
        (("HostConfig", "MaskedPaths"), [p for p in masked_paths() if "kpageflags" not in p], "MaskedPaths"),
        (("HostConfig", "ReadonlyPaths"), [], "ReadonlyPaths"),
        (("HostConfig", "ReadonlyPaths"), ["/proc/bus", "/proc/fs", "/proc/irq"], "ReadonlyPaths"),
    ],
)  # fmt: skip
def test_each_setting_that_did_not_take_effect_is_named(
    path: tuple[str, ...], value: Any, field: str
) -> None:
    """One setting of an otherwise good inspect is changed: that field, and only it, is named
    with what we wanted and what the engine reports."""
    spec = _spec()
    inspect = copy.deepcopy(_inspect_as_the_engine_reports(spec, disk_quota=False))
    target = inspect
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value

    mismatches = limit_mismatches(spec, inspect, disk_quota=False)

    assert [m[0] for m in mismatches] == [field]


def test_a_container_of_an_image_without_a_health_check_made_before_they_were_turned_off_is_kept() -> None:
    """An upgraded hostd adopts a container its predecessor made without `healthcheck`: its
    inspect has no Healthcheck when the image had none, and the engine runs no check for it."""
    spec = _spec()
    inspect = _inspect_as_the_engine_reports(spec, disk_quota=False)
    del inspect["Config"]["Healthcheck"]

    assert limit_mismatches(spec, inspect, disk_quota=False) == []


def test_a_missing_disk_quota_is_named_when_the_engine_supports_quotas() -> None:
    spec = _spec()
    inspect = _inspect_as_the_engine_reports(spec, disk_quota=False)

    assert limit_mismatches(spec, inspect, disk_quota=True) == [
        ("StorageOpt.size", str(spec.writable_bytes), None)
    ]


def test_a_container_whose_log_is_beside_its_disk_may_fill_all_of_the_disk_and_no_other() -> None:
    """Tried: the bound of a container an older hostd made (10 MB log files beside its disk, as
    its inspect shows), and of one this hostd made. Must hold: the first's files may take all
    of its disk (adopted across an upgrade, it is not stopped for what it was allowed to
    write), with no log part named; the second's all but its log's part."""
    spec = _spec(disk_bytes=64 * MiB)
    older = _inspect_as_the_engine_reports(spec, disk_quota=False)
    older["HostConfig"]["LogConfig"]["Config"] = dict(LEGACY_LOG)
    ours = _inspect_as_the_engine_reports(spec, disk_quota=False)

    assert log_beside_disk(older)
    assert not log_beside_disk(ours)
    assert not log_beside_disk({})
    assert files_bound(spec, log_beside=True) == (64 * MiB, 0)
    assert files_bound(spec, log_beside=False) == (spec.writable_bytes, spec.log_bytes)
    assert spec.writable_bytes < 64 * MiB


def test_a_container_made_with_the_core_limit_of_0_reads_back_as_made_and_no_other() -> None:
    """Tried: the read-back of a container an older hostd made (core limit 0), and of one whose
    core limit is anything else. Must hold: the first passes (started again after an upgrade);
    the other is named."""
    spec = _spec()
    older = _inspect_as_the_engine_reports(spec, disk_quota=False)
    for limit in older["HostConfig"]["Ulimits"]:
        if limit["Name"] == "core":
            limit["Soft"] = limit["Hard"] = 0
    assert limit_mismatches(spec, older, disk_quota=False) == []
    for limit in older["HostConfig"]["Ulimits"]:
        if limit["Name"] == "core":
            limit["Soft"] = limit["Hard"] = 4096
    assert [name for name, _, _ in limit_mismatches(spec, older, disk_quota=False)] == ["Ulimits"]


@pytest.mark.parametrize(
    ("disk", "file_bytes"),
    [
        (16 * MiB, MiB // 3),
        (64 * MiB, 4 * MiB // 3),
        (480 * MiB, 10 * MiB),
        (1024 * MiB, 10 * MiB),
        (64 << 30, 10 * MiB),
    ],
)
def test_the_log_is_a_16th_of_the_disk_at_most_30_mib_and_the_files_get_the_rest(
    disk: int, file_bytes: int
) -> None:
    """Must hold: three log files of a 16th of the disk together, at most 10 MiB each; what the
    files may take and the log together are the disk, never more; the engine is asked for
    exactly that log and, with quotas, that size."""
    spec = _spec(disk_bytes=disk)

    assert spec.log_file_bytes == file_bytes
    assert spec.log_bytes == 3 * file_bytes <= min(30 * MiB, disk // 16)
    assert spec.writable_bytes + spec.log_bytes == disk
    kwargs = create_kwargs(spec, disk_quota=True)
    assert kwargs["log_config"] == {
        "type": "json-file",
        "config": {"max-size": str(file_bytes), "max-file": "3"},
    }
    assert kwargs["storage_opt"] == {"size": str(spec.writable_bytes)}


@pytest.mark.parametrize("disk_quota", [False, True])
def test_a_container_made_before_its_log_counted_is_kept_as_it_was_made_and_no_mix(disk_quota: bool) -> None:
    """Tried: the read-back of a container an older hostd made (10 MB log files, its quota the
    whole disk), and of two mixes: the old log with the new quota, the new log with the old
    quota. Must hold: the old container as made passes (a kept container started again after
    an upgrade); each mix is named, so a container is always held to one of the two bounds."""
    spec = _spec(disk_bytes=64 * MiB)
    old = _inspect_as_the_engine_reports(spec, disk_quota=disk_quota)
    old["HostConfig"]["LogConfig"]["Config"] = dict(LEGACY_LOG)
    if disk_quota:
        old["HostConfig"]["StorageOpt"] = {"size": str(spec.disk_bytes)}
    assert limit_mismatches(spec, old, disk_quota=disk_quota) == []
    if not disk_quota:
        return

    old_log_new_quota = _inspect_as_the_engine_reports(spec, disk_quota=True)
    old_log_new_quota["HostConfig"]["LogConfig"]["Config"] = dict(LEGACY_LOG)
    assert limit_mismatches(spec, old_log_new_quota, disk_quota=True) == [
        ("LogConfig.max-size", str(spec.log_file_bytes), "10m")
    ]
    new_log_old_quota = _inspect_as_the_engine_reports(spec, disk_quota=True)
    new_log_old_quota["HostConfig"]["StorageOpt"] = {"size": str(spec.disk_bytes)}
    assert limit_mismatches(spec, new_log_old_quota, disk_quota=True) == [
        ("StorageOpt.size", str(spec.writable_bytes), str(spec.disk_bytes))
    ]


@pytest.mark.parametrize(
    "changes",
    [
        {"allocation_id": "../etc"},
        {"allocation_id": ""},
        {"host_id": ""},
        {"cpus": 0},
        # Below Docker's floor NanoCpus reads back as 0, which the engine takes as "no limit".
        {"cpus": 0.001},
        {"cpus": 5e-324},
        {"memory_bytes": 1024},
        {"disk_bytes": 0},
        {"pids_limit": 0},
    ],
)
def test_impossible_specs_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(changes))):
        _spec(**changes)


def test_the_spec_survives_its_label() -> None:
    """A spec written to the label and read back is the same spec (hostd compares them)."""
    spec = _spec(env={"X": "y z"}, command=None, network=True)

    assert ContainerSpec.from_json(spec.to_json()) == spec
    assert json.loads(spec.to_json())["allocation_id"] == "a1b2"


def test_create_kwargs_bound_open_files_and_processes() -> None:
    """The container gets soft and hard limits on open files and on its user's processes, a
    core limit of 1 byte it cannot raise (no core file, and no pipe helper: CORE's comment),
    and limits on what the kernel counts for each user of the
    machine (queued signals, message-queue bytes, locked memory), which it shares with the
    machine's root."""
    limits = {u["Name"]: (u["Soft"], u["Hard"]) for u in create_kwargs(_spec(), disk_quota=False)["ulimits"]}

    assert limits == {
        "nofile": (NOFILE_SOFT, NOFILE_HARD),
        "nproc": (NPROC, NPROC),
        "core": (1, 1),
        "sigpending": (SIGPENDING, SIGPENDING),
        "msgqueue": (MSGQUEUE, MSGQUEUE),
        "memlock": (MEMLOCK, MEMLOCK),
    }


def test_an_image_with_a_volume_is_refused_before_anything_is_made() -> None:
    """An image's VOLUME would be an anonymous volume outside the disk bound: named from the
    image's own inspect, with its paths and what the image's author does about it; an image
    without one passes."""
    [(field, wanted, got, why)] = image_refusals({"Config": {"Volumes": {"/var/lib": {}, "/data": {}}}})
    assert (field, wanted, got) == ("Image.Config.Volumes", {}, {"/var/lib": {}, "/data": {}})
    assert why.startswith("declares VOLUME /data, /var/lib, ")
    assert "rebuild the image without VOLUME lines" in why
    assert image_refusals({"Config": {"Volumes": None}}) == []
    assert image_refusals({}) == []


@pytest.mark.parametrize(
    "workdir",
    ["/proc/self/fd/7", "/proc", "/sys/fs/cgroup", "/dev/shm", "/app/../proc/1/root", "proc/self/cwd"],
)
def test_an_image_starting_in_the_kernels_file_systems_is_refused(workdir: str) -> None:
    """Tried: WORKDIRs in /proc, /sys and /dev, directly, through `..` and relative (the way
    runc before 1.1.12 let `WORKDIR /proc/self/fd/N` start a container in a directory of the
    machine's). Must hold: each is refused from the image's inspect, naming the directory."""
    [(field, wanted, got, why)] = image_refusals({"Config": {"WorkingDir": workdir}})
    assert (field, wanted, got) == ("Image.Config.WorkingDir", "", workdir)
    assert why.startswith(f"starts in {workdir} (WORKDIR), one of the kernel's own file systems")


@pytest.mark.parametrize("workdir", ["", "/", "/app", "/root/proc", "/procfs", "/srv/dev", "/device"])
def test_an_image_starting_in_its_own_files_passes(workdir: str) -> None:
    assert image_refusals({"Config": {"WorkingDir": workdir}}) == []


def test_an_image_with_a_label_of_our_namespace_is_refused_naming_the_labels() -> None:
    """Tried: images carrying labels of Potluck's own namespace (`potluck.*`: the ones hostd
    reads, and any other, a probe's or one hostd may read later), among labels of their own.
    Must hold: each is refused from its own inspect, naming every such label (sorted) and
    never a value, saying to rebuild without them; other labels (`potluckx`, `org.potluck.*`)
    pass."""
    [(field, wanted, got, why)] = image_refusals(
        {
            "Config": {
                "Labels": {
                    "potluck.warm.disk": "70368744177664",
                    "maintainer": "b",
                    "potluck.allocation": "alloc-of-a",
                }
            }
        }
    )
    assert (field, wanted, got) == ("Image.Config.Labels", [], ["potluck.allocation", "potluck.warm.disk"])
    assert why.startswith("carries the labels potluck.allocation, potluck.warm.disk of Potluck's own")
    assert "rebuild the image without them" in why
    assert "alloc-of-a" not in why
    assert "70368744177664" not in why
    for key in (
        "potluck.spec",
        "potluck.managed",
        "potluck.host",
        "potluck.warm",
        "potluck.probe",
        "potluck.x",
    ):
        [(_, _, got, why)] = image_refusals({"Config": {"Labels": {key: ""}}})
        assert got == [key]
        assert why.startswith(f"carries the label {key} of ")
    assert image_refusals({"Config": {"Labels": {"potluckx": "1", "org.potluck.a": "1"}}}) == []
    assert image_refusals({"Config": {"Labels": None}}) == []


def test_an_image_refused_twice_over_says_both() -> None:
    """An image with a VOLUME line and a label of ours: both refusals, the volume's first."""
    refusals = image_refusals({"Config": {"Volumes": {"/data": {}}, "Labels": {"potluck.spec": "{}"}}})
    assert [field for field, *_ in refusals] == ["Image.Config.Volumes", "Image.Config.Labels"]


@pytest.mark.parametrize("internal", [False, True])
def test_the_allocations_own_network_is_checked(internal: bool) -> None:
    """The network asked for, as the engine shows it, has no mismatch; one that is not internal
    when it should be, or belongs to another allocation, is named."""
    spec = _spec(network=True)
    kwargs = network_kwargs(spec, internal=internal)
    shown = {
        "Driver": "bridge",
        "Internal": internal,
        "Labels": kwargs["labels"],
        "Options": kwargs["options"],
    }

    assert kwargs["name"] == "potluck-a1b2"
    assert network_mismatches(spec, shown, internal=internal) == []
    assert [
        m[0] for m in network_mismatches(spec, {**shown, "Internal": not internal}, internal=internal)
    ] == ["Network.Internal"]
    other = {**shown, "Labels": {**kwargs["labels"], "potluck.allocation": "other"}}
    assert [m[0] for m in network_mismatches(spec, other, internal=internal)] == ["Network.Labels.allocation"]


def test_environment_values_never_show_in_repr_or_differences() -> None:
    """A spec formatted into a log line or an error shows no environment value; comparing two
    specs names the fields that differ, not their values."""
    spec = _spec(env={"TOKEN": "s3cret-value"})
    other = _spec(env={"TOKEN": "other-s3cret"}, cpus=2.0)

    assert "s3cret" not in repr(spec)
    assert "s3cret" not in f"{spec}"
    assert spec.differences(other) == ["cpus", "env"]
    assert spec.differences(spec) == []
    assert spec.differences(None) == ["(unreadable)"]
    wanted = AllocationSpec(
        resources=Capacity(cpus=1, memory_bytes=MiB, disk_bytes=MiB), image="x", env=spec.env
    )
    assert "s3cret" not in repr(wanted)
    assert "s3cret" not in str(wanted)
    assert AllocationSpec.model_validate_json(wanted.model_dump_json()).env == spec.env


def test_a_quota_the_owner_policy_lowered_still_bounds_the_container() -> None:
    """A 1.5-CPU container throttled to 0.1 CPU reads back without a mismatch (hostd finds it
    again after a restart); one raised above its spec, or with no quota, does not."""
    spec = _spec()
    inspect = _inspect_as_the_engine_reports(spec, disk_quota=False)

    inspect["HostConfig"]["NanoCpus"] = 100_000_000
    lowered = limit_mismatches(spec, inspect, disk_quota=False)
    inspect["HostConfig"]["NanoCpus"] = 2_000_000_000
    raised = limit_mismatches(spec, inspect, disk_quota=False)

    assert lowered == []
    assert [field for field, _, _ in raised] == ["NanoCpus"]


HELPER = "/bin/busybox"


def _with_helper(spec: ContainerSpec, inspect: dict[str, Any]) -> dict[str, Any]:
    """inspect of a container made with the helper: its mount in both spellings, and the
    keep-alive as entrypoint when the spec has no command."""
    inspect["HostConfig"]["Mounts"] = [
        {"Type": "tmpfs", "Target": "/.potluck", "ReadOnly": True,
         "TmpfsOptions": {"SizeBytes": 4096, "Mode": 493}},
        {"Type": "bind", "Source": HELPER, "Target": "/.potluck/busybox", "ReadOnly": True},
    ]  # fmt: skip
    inspect["Mounts"] = [
        {"Type": "tmpfs", "Source": "", "Destination": "/.potluck", "Mode": "", "RW": False,
         "Propagation": ""},
        {"Type": "bind", "Source": HELPER, "Destination": "/.potluck/busybox", "Mode": "", "RW": False,
         "Propagation": "rprivate"},
    ]  # fmt: skip
    inspect["Config"] = {"Entrypoint": list(KEEP_ALIVE) if spec.command is None else None}
    return inspect


def test_an_allocation_without_a_command_runs_the_keep_alive_from_the_read_only_helper() -> None:
    """No command and a helper: the entrypoint is the helper's sleep (whatever the image's CMD
    or ENTRYPOINT), and the helper is the one bind, read-only, in a read-only directory of its
    own. With a command the image's entrypoint is left alone; without a helper nothing is
    mounted."""
    interactive = create_kwargs(_spec(command=None), disk_quota=False, helper=HELPER)
    task = create_kwargs(_spec(), disk_quota=False, helper=HELPER)

    assert interactive["entrypoint"] == KEEP_ALIVE
    assert KEEP_ALIVE[0] == "/.potluck/busybox"
    assert interactive["mounts"] == [
        {"Type": "tmpfs", "Target": "/.potluck", "ReadOnly": True,
         "TmpfsOptions": {"SizeBytes": 4096, "Mode": 0o755}},
        {"Type": "bind", "Source": HELPER, "Target": "/.potluck/busybox", "ReadOnly": True},
    ]  # fmt: skip
    assert "entrypoint" not in task
    assert task["mounts"] == interactive["mounts"]
    assert "mounts" not in create_kwargs(_spec(command=None), disk_quota=False)


@pytest.mark.parametrize("command", [None, ["sleep", "1"]])
def test_the_helper_mount_as_the_engine_reports_it_is_no_mismatch(command: list[str] | None) -> None:
    """A container made with the helper shows its mount (both spellings) and, without a
    command, the keep-alive: nothing differs."""
    spec = _spec(command=command)
    inspect = _with_helper(spec, _inspect_as_the_engine_reports(spec, disk_quota=False))

    assert limit_mismatches(spec, inspect, disk_quota=False, helper=HELPER) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda i: i["Mounts"][1].update(RW=True), "Mounts"),
        (lambda i: i["HostConfig"]["Mounts"][1].update(ReadOnly=False), "HostConfig.Mounts"),
        (lambda i: i["HostConfig"]["Mounts"][1].update(Source="/"), "HostConfig.Mounts"),
        # The helper's directory writable: root in the container could add beside the bind.
        (lambda i: i["HostConfig"]["Mounts"][0].update(ReadOnly=False), "HostConfig.Mounts"),
        (lambda i: i["Mounts"][0].update(RW=True), "Mounts"),
        (lambda i: i["Mounts"].append({"Type": "volume", "Source": "x", "Destination": "/data"}), "Mounts"),
        (lambda i: i["Config"].update(Entrypoint=["/bin/sh"]), "Config.Entrypoint"),
    ],
)
def test_a_writable_or_other_mount_or_entrypoint_is_a_mismatch(change: Any, field: str) -> None:
    """The helper's mount made writable, another source, another mount beside it, or an
    interactive container that would not run the keep-alive: each is named."""
    spec = _spec(command=None)
    inspect = _with_helper(spec, _inspect_as_the_engine_reports(spec, disk_quota=False))
    change(inspect)

    assert field in [name for name, _, _ in limit_mismatches(spec, inspect, disk_quota=False, helper=HELPER)]


def test_without_a_helper_its_mount_is_refused() -> None:
    """A driver without a helper allows no mount at all, the helper's included."""
    spec = _spec()
    inspect = _with_helper(spec, _inspect_as_the_engine_reports(spec, disk_quota=False))

    named = {name for name, _, _ in limit_mismatches(spec, inspect, disk_quota=False)}

    assert {"HostConfig.Mounts", "Mounts"} <= named


def test_a_container_made_before_the_helpers_directory_was_a_mount_is_kept() -> None:
    """Tried: the read-back of a container an older hostd made with the helper's bind alone
    (no read-only directory around it), adopted after an upgrade. Must hold: it is kept, its
    keep-alive read as such, so the running allocation is not removed by the upgrade."""
    spec = _spec(command=None)
    older = _with_helper(spec, _inspect_as_the_engine_reports(spec, disk_quota=False))
    older["HostConfig"]["Mounts"] = older["HostConfig"]["Mounts"][1:]
    older["Mounts"] = older["Mounts"][1:]

    assert limit_mismatches(spec, older, disk_quota=False, helper=HELPER) == []


def test_a_container_made_before_the_helper_existed_is_kept() -> None:
    """An upgraded hostd adopts a container without any mount (made before the helper): no
    mismatch, so the running allocation is not removed; one with the helper half-there is."""
    spec = _spec(command=None)
    older = _inspect_as_the_engine_reports(spec, disk_quota=False)
    half = _with_helper(spec, _inspect_as_the_engine_reports(spec, disk_quota=False))
    half["HostConfig"]["Mounts"] = []

    assert limit_mismatches(spec, older, disk_quota=False, helper=HELPER) == []
    named = {name for name, _, _ in limit_mismatches(spec, half, disk_quota=False, helper=HELPER)}
    assert named & {"HostConfig.Mounts", "Mounts"}


def test_the_machines_hardware_and_roots_own_kernel_files_are_masked() -> None:
    """Tried: create arguments on a machine whose /sys/devices holds its PCI bus, an ACPI
    device tree, a Thunderbolt domain, CPUs and virtual devices. Must hold: every engine
    default is masked still (naming masked paths replaces the engine's list), and so are the
    machine's own pages and kernel heap, its DMI serials, its interrupt counts, and every
    device directory but the CPUs' (system) and the virtual ones (the container's network)."""
    hardware = hardware_paths(["pci0000:00", "LNXSYSTM:00", "thunderbolt0", "system", "virtual"])
    masked = create_kwargs(_spec(), disk_quota=False, hardware=hardware)["masked_paths"]

    assert set(ENGINE_MASKED_PATHS) <= set(masked)
    assert set(MASKED_PATHS) <= set(masked)
    assert {"/sys/devices/pci0000:00", "/sys/devices/LNXSYSTM:00", "/sys/devices/thunderbolt0"} <= set(masked)
    assert not {"/sys/devices/system", "/sys/devices/virtual", "/sys/fs/cgroup"} & set(masked)
    assert "/sys/devices/virtual/dmi" in masked
    # Without a listing (an engine on another machine) the usual names are masked all the same.
    assert set(HARDWARE_PATHS) <= set(create_kwargs(_spec(), disk_quota=False)["masked_paths"])


def test_a_container_made_before_hostd_named_its_masked_paths_is_kept() -> None:
    """Tried: the read-back of a container an older hostd made, whose masked paths are the
    engine's default of Docker 20.10 to 28 (none of Potluck's), adopted after an upgrade; and
    of one with that list but /proc/kcore unmasked. Must hold: the first is kept (the running
    allocation is not removed by the upgrade), the second is not."""
    spec = _spec()
    inspect = _inspect_as_the_engine_reports(spec, disk_quota=False)
    inspect["HostConfig"]["MaskedPaths"] = list(OLDER_ENGINE_MASKED_PATHS)
    assert limit_mismatches(spec, inspect, disk_quota=False) == []

    inspect["HostConfig"]["MaskedPaths"] = [p for p in OLDER_ENGINE_MASKED_PATHS if p != "/proc/kcore"]
    assert [m[0] for m in limit_mismatches(spec, inspect, disk_quota=False)] == ["MaskedPaths"]


def test_a_container_made_before_hostd_set_its_oom_score_is_kept_but_never_a_shielded_one() -> None:
    """Tried: the read-back of a container whose OomScoreAdj is the engine's default 0 (made by
    a hostd before it set OOM_SCORE_ADJ, adopted after an upgrade), and of one at -1000.
    Must hold: the first is kept (it is no more shielded than the member's own processes), the
    second refused, naming OomScoreAdj."""
    spec = _spec()
    inspect = _inspect_as_the_engine_reports(spec, disk_quota=False)
    inspect["HostConfig"]["OomScoreAdj"] = 0
    assert limit_mismatches(spec, inspect, disk_quota=False) == []
    inspect["HostConfig"]["OomScoreAdj"] = -1000
    assert limit_mismatches(spec, inspect, disk_quota=False) == [("OomScoreAdj", OOM_SCORE_ADJ, -1000)]


def test_a_container_made_before_hostd_named_its_seccomp_profile_is_kept_but_never_another_profile() -> None:
    """Tried: the read-back of a container whose options name no seccomp profile (the engine's
    default: made by a hostd before it named its own, adopted after an upgrade), of one named
    `unconfined`, and of one with another profile. Must hold: the first is kept, the other two
    refused, naming SecurityOpt.seccomp."""
    spec = _spec()
    inspect = _inspect_as_the_engine_reports(spec, disk_quota=False)
    inspect["HostConfig"]["SecurityOpt"] = ["no-new-privileges"]
    assert limit_mismatches(spec, inspect, disk_quota=False) == []
    for other in ("unconfined", '{"defaultAction":"SCMP_ACT_ALLOW"}'):
        inspect["HostConfig"]["SecurityOpt"] = ["no-new-privileges", "seccomp=" + other]
        assert "SecurityOpt.seccomp" in [
            name for name, _, _ in limit_mismatches(spec, inspect, disk_quota=False)
        ]


HOSTS_FILE = "/var/lib/potluck-hostd/container-hosts"


def _without_network_code(
    spec: ContainerSpec, inspect: dict[str, Any], source: str = HOSTS_FILE
) -> dict[str, Any]:
    """inspect of a container made with hostd's hosts file (no_network.py): NetworkDisabled,
    and the file's read-only mount in both spellings beside the helper's."""
    inspect = _with_helper(spec, inspect)
    inspect["Config"]["NetworkDisabled"] = True
    inspect["HostConfig"]["Mounts"].append(
        {"Type": "bind", "Source": source, "Target": "/etc/hosts", "ReadOnly": True}
    )
    inspect["Mounts"].append(
        {
            "Type": "bind",
            "Source": source,
            "Destination": "/etc/hosts",
            "Mode": "",
            "RW": False,
            "Propagation": "rprivate",
        }
    )
    return inspect


def test_without_a_network_the_engines_network_code_is_left_out_and_hosts_bound_read_only() -> None:
    """A spec without a network and a hosts file: NetworkDisabled, network mode none still,
    and the file bound read-only at /etc/hosts after the helper's mounts. With a network of
    its own, or without a hosts file (an engine not on this machine), neither."""
    kwargs = create_kwargs(_spec(), disk_quota=False, helper=HELPER, hosts_file=HOSTS_FILE)
    assert kwargs["network_disabled"] is True
    assert kwargs["network_mode"] == "none"
    assert kwargs["mounts"][-1] == {
        "Type": "bind",
        "Source": HOSTS_FILE,
        "Target": "/etc/hosts",
        "ReadOnly": True,
    }
    assert kwargs["mounts"][:-1] == helper_mounts(HELPER)
    for other in (
        create_kwargs(_spec(network=True), disk_quota=False, helper=HELPER, hosts_file=HOSTS_FILE),
        create_kwargs(_spec(), disk_quota=False, helper=HELPER),
    ):
        assert "network_disabled" not in other
        assert all(m["Target"] != "/etc/hosts" for m in other["mounts"])


def test_the_hosts_file_mount_is_allowed_only_as_made_and_only_without_the_network_code() -> None:
    """Read back: the hosts file's mount as made is no mismatch; the same mount on a container
    made with the engine's network code, from another source, writable, or on a driver without
    a hosts file, is named."""
    spec = _spec(command=None)
    made = _without_network_code(spec, _inspect_as_the_engine_reports(spec, disk_quota=False))
    assert limit_mismatches(spec, made, disk_quota=False, helper=HELPER, hosts_file=HOSTS_FILE) == []

    with_network_code = copy.deepcopy(made)
    del with_network_code["Config"]["NetworkDisabled"]
    elsewhere = _without_network_code(
        spec, _inspect_as_the_engine_reports(spec, disk_quota=False), source="/etc"
    )
    writable = copy.deepcopy(made)
    writable["HostConfig"]["Mounts"][-1]["ReadOnly"] = False
    for inspect, hosts_file in (
        (with_network_code, HOSTS_FILE),
        (elsewhere, HOSTS_FILE),
        (writable, HOSTS_FILE),
        (made, None),
    ):
        named = {
            name
            for name, _, _ in limit_mismatches(
                spec, inspect, disk_quota=False, helper=HELPER, hosts_file=hosts_file
            )
        }
        assert "HostConfig.Mounts" in named, (inspect["HostConfig"]["Mounts"], hosts_file)
