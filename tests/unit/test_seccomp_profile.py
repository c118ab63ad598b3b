"""Potluck's own seccomp profile: what it lets containers call, and what never."""

import json

from potluck.hostd.seccomp_profile import (
    AS_IF_ABSENT,
    DENIED,
    KNOWN,
    NETLINK_KOBJECT_UEVENT,
    PROFILE,
    SOCKET_FAMILIES,
    profile,
)

AF_ALG, AF_VSOCK, AF_PACKET = 38, 40, 17


def _allowed_unconditionally() -> set[str]:
    return {
        name
        for rule in profile()["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args")
        for name in rule["names"]
    }


def test_what_no_container_may_call_is_never_allowed_and_the_rest_of_the_kernels_table_is() -> None:
    """Every syscall the profile denies (io_uring, keyrings, namespaces, mounts, BPF, ...) is
    one it knows and is in no allowing rule; everything else it knows, but the few allowed
    only with some arguments, is allowed; anything else gets the default, EPERM."""
    allowed = _allowed_unconditionally()
    assert DENIED.keys() <= set(KNOWN)
    assert not allowed & DENIED.keys()
    never = ("io_uring_setup", "io_uring_enter", "keyctl", "unshare", "setns", "mount", "bpf",
             "perf_event_open", "userfaultfd", "open_by_handle_at", "socketcall", "kexec_load")  # fmt: skip
    assert set(never) <= DENIED.keys()
    assert set(KNOWN) - DENIED.keys() - allowed == {
        "clone",
        "clone3",
        "fallocate",
        "personality",
        "socket",
        "socketpair",
    }
    for name in (
        "read",
        "write",
        "openat",
        "execve",
        "fork",
        "ptrace",
        "process_vm_readv",
        "mmap2",
        "fchmodat2",
        "rseq",
    ):
        assert name in allowed
    assert profile()["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile()["defaultErrnoRet"] == 1


def test_sockets_only_of_the_ordinary_families_and_clone_never_with_a_namespace() -> None:
    """Sockets: Unix, IPv4, IPv6, netlink only (never AF_VSOCK, AF_ALG, AF_PACKET); a clone
    with any namespace flag does not match the rule that allows clone; clone3 gets ENOSYS
    (the C library then uses clone)."""
    rules = {r["names"][0]: r for r in profile()["syscalls"] if len(r["names"]) == 1}
    families = {rule["args"][0]["value"] for rule in profile()["syscalls"] if rule["names"] == ["socket"]}
    assert families == set(SOCKET_FAMILIES) == {1, 2, 10, 16}
    assert not families & {AF_ALG, AF_VSOCK, AF_PACKET}
    [mask] = rules["clone"]["args"]
    assert (mask["op"], mask["valueTwo"]) == ("SCMP_CMP_MASKED_EQ", 0)
    clone_newuser, clone_newnet, clone_thread = 0x10000000, 0x40000000, 0x00010000
    assert mask["value"] & (clone_newuser | clone_newnet) == clone_newuser | clone_newnet
    assert not mask["value"] & clone_thread
    assert rules["clone3"] == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
    assert json.loads(PROFILE) == profile()


def test_netlink_sockets_of_any_protocol_but_the_machines_device_events() -> None:
    """Tried: the rules allowing socket(), read as the runtime reads them (conditions on
    different arguments of one rule must all hold). Must hold: every family's rule but
    netlink's is its family alone; netlink's also requires a protocol other than the device
    events' (15): a socket of those events matches no rule, so gets the default, EPERM, while
    routing's (0) is allowed."""
    rules = [rule["args"] for rule in profile()["syscalls"] if rule["names"] == ["socket"]]
    [netlink] = [args for args in rules if args[0]["value"] == 16]
    assert netlink[1:] == [{"index": 2, "value": 15, "valueTwo": 0, "op": "SCMP_CMP_NE"}]
    assert NETLINK_KOBJECT_UEVENT == 15
    assert [args for args in rules if args is not netlink] == [
        [{"index": 0, "value": f, "valueTwo": 0, "op": "SCMP_CMP_EQ"}] for f in (1, 2, 10)
    ]


def test_inotify_instances_are_refused_as_if_the_kernel_had_none() -> None:
    """Tried: the rules naming inotify_init and inotify_init1 (the kernel counts their instances
    per user of the machine, a container's as its root's). Must hold: neither is allowed; both
    get ENOSYS, the answer of a kernel without inotify, not the default EPERM; adding a watch
    (which needs an instance) stays allowed."""
    assert set(AS_IF_ABSENT) == {"inotify_init", "inotify_init1"}
    assert set(AS_IF_ABSENT) <= DENIED.keys()
    assert not _allowed_unconditionally() & set(AS_IF_ABSENT)
    assert {"names": sorted(AS_IF_ABSENT), "action": "SCMP_ACT_ERRNO", "errnoRet": 38} in [
        {**rule, "names": sorted(rule["names"])} for rule in profile()["syscalls"]
    ]
    assert "inotify_add_watch" in _allowed_unconditionally()


def test_fallocate_never_allocates_past_a_files_end() -> None:
    """Tried: the rules allowing fallocate(), read as the runtime reads them. Must hold: a mode
    is allowed when it has no KEEP_SIZE (its allocation shows in the file's size, which the disk
    guard counts), or is exactly PUNCH_HOLE | KEEP_SIZE (freeing blocks); KEEP_SIZE alone, or
    with ZERO_RANGE, matches no rule, so gets the default, EPERM."""
    keep_size, punch_hole, zero_range = 0x01, 0x02, 0x10
    rules = [rule["args"] for rule in profile()["syscalls"] if rule["names"] == ["fallocate"]]
    assert all(len(args) == 1 and args[0]["index"] == 1 for args in rules)

    def allowed(mode: int) -> bool:
        for [arg] in rules:
            if arg["op"] == "SCMP_CMP_MASKED_EQ" and mode & arg["value"] == arg["valueTwo"]:
                return True
            if arg["op"] == "SCMP_CMP_EQ" and mode == arg["value"]:
                return True
        return False

    assert [allowed(m) for m in (0, zero_range, punch_hole | keep_size)] == [True] * 3
    assert [allowed(m) for m in (keep_size, zero_range | keep_size)] == [False] * 2
    assert {rule["op"] for [rule] in rules} == {"SCMP_CMP_MASKED_EQ", "SCMP_CMP_EQ"}
