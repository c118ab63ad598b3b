"""The seccomp profile every container of Potluck's runs with, whatever the member's engine.

A container's syscalls reach the member's kernel; the seccomp profile is what keeps the ones
no container needs (and that have been the way out of containers before) from reaching it.
hostd used to leave that to the engine's default profile, which is the engine's version's:
the probe found a member's Docker 20.10 (Debian's 20.10.24) whose default lets containers set
up io_uring (an interface with a long record of kernel privilege escalations, blocked by
Docker's own profile since 25.0) and open AF_VSOCK sockets (which reach the virtual machines
on the member's machine, Docker Desktop's host, and other containers over vsock loopback,
whatever their network; blocked by Docker's profile since 23.0). So hostd names its own
profile on every container (`PROFILE`), the same on every engine, and reads it back.

It allows what containers of ours may need and nothing more, for exactly the capabilities
they have (container_config.CAPABILITIES: none of those that would need a syscall denied
here). `KNOWN` is every syscall of Linux's x86-64 and i386 tables (a 32-bit program's calls
come through the latter), ARM's own few, and those added since; each is allowed except the
ones in `DENIED`, which say why, and the few allowed only with some arguments
(`_conditional_rules`). Any other syscall, one added to Linux later among them, fails with
EPERM, as under Docker's profile; clone3 fails with ENOSYS, so that the C library falls back
to clone, whose namespace flags can be checked (clone3 passes them in memory a filter cannot
read); inotify_init and inotify_init1 fail with ENOSYS (`AS_IF_ABSENT`), as on a kernel built
without inotify, so that what can do without it falls back to reading again (`tail -f`, file
watchers that poll); a netlink socket of the kernel's device events (`NETLINK_KOBJECT_UEVENT`)
fails with EPERM; so does fallocate() with KEEP_SIZE, unless it punches a hole: the disk guard
counts the bytes files say they hold (disk_bound.py), and KEEP_SIZE allocates the member's disk
past the end of a file that says it holds nothing. A syscall the machine's libseccomp does not
know is left out by the runtime, so denied.
"""

import json
from typing import Any

__all__ = [
    "AS_IF_ABSENT",
    "DENIED",
    "KNOWN",
    "NETLINK_KOBJECT_UEVENT",
    "PROFILE",
    "SOCKET_FAMILIES",
    "profile",
]

EPERM = 1
ENOSYS = 38

#: Syscalls no container of ours may make: name -> why.
DENIED: dict[str, str] = {
    **dict.fromkeys(
        ("io_uring_setup", "io_uring_enter", "io_uring_register"),
        "io_uring: a second syscall interface with a long record of kernel privilege escalations",
    ),
    **dict.fromkeys(
        ("add_key", "keyctl", "request_key"),
        "the kernel's keyrings are not namespaced: a container's keys would be the member's",
    ),
    **dict.fromkeys(
        ("unshare", "setns"),
        "new or other namespaces: user namespaces give back the capabilities dropped",
    ),
    **dict.fromkeys(
        (
            "mount", "umount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount",
            "fspick", "move_mount", "open_tree", "open_tree_attr", "mount_setattr",
        ),
        "mounts: a container's file systems are the engine's to set up",
    ),
    **dict.fromkeys(
        ("bpf", "perf_event_open", "userfaultfd", "lookup_dcookie"),
        "kernel interfaces that have been the way to exploit kernel bugs (BPF programs, "
        "performance counters, page-fault races)",
    ),
    **dict.fromkeys(
        # (ptrace itself, and process_vm_readv/writev, which the kernel checks as it does
        # ptrace, are allowed: debuggers and profilers such as gdb and py-spy use them on the
        # container's own processes, and they reach no others.)
        ("kcmp", "pidfd_getfd", "process_madvise"),
        "another process's files or memory management, which need CAP_SYS_PTRACE, not given",
    ),
    **dict.fromkeys(
        ("name_to_handle_at", "open_by_handle_at"),
        "file handles open files by inode, past the container's root (the shocker exploit)",
    ),
    **dict.fromkeys(
        (
            "init_module", "finit_module", "delete_module", "create_module", "query_module",
            "get_kernel_syms", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff",
            "acct", "quotactl", "quotactl_fd", "syslog", "vhangup", "sethostname", "setdomainname",
            "settimeofday", "stime", "clock_settime", "clock_settime64", "iopl", "ioperm",
            "fanotify_init", "nfsservctl", "uselib", "ustat", "sysfs", "_sysctl", "bdflush",
            "vm86", "vm86old", "modify_ldt", "memfd_secret",
        ),
        "the machine's own administration, or obsolete: nothing a container does",
    ),
    **dict.fromkeys(
        ("mbind", "set_mempolicy", "get_mempolicy", "set_mempolicy_home_node", "move_pages", "migrate_pages"),
        "NUMA placement of memory, which needs CAP_SYS_NICE, not given",
    ),
    **dict.fromkeys(
        ("lsm_set_self_attr", "statmount", "listmount"),
        "security-module and mount-table interfaces no container needs",
    ),
    "socketcall": "i386's multiplexer of socket calls, whose address family a filter cannot read",
    **dict.fromkeys(
        ("inotify_init", "inotify_init1"),
        "inotify instances: the kernel counts them for each user of the machine, 128 in all by "
        "default (fs.inotify.max_user_instances), and a container's count is its user's of the "
        "machine, and with userns-remap the engine's root's too (the owner of the container's "
        "user namespace), whichever user runs in it, and no limit of the container's bounds it. "
        "Found: a container's root, on an engine with userns-remap as on one without, held all "
        "128 of the machine's root's, and the machine's root was then refused one (EMFILE): "
        "what systemd, udev and the member's other daemons watch their files with",
    ),
}  # fmt: skip

#: Denied (in DENIED) with ENOSYS, as a kernel built without them answers, rather than the EPERM
#: of the rest: programs that can do without them look for that answer.
AS_IF_ABSENT = ("inotify_init", "inotify_init1")

#: Every syscall name the profile decides on (see the module docstring).
KNOWN: tuple[str, ...] = (
    "_llseek", "_newselect", "_sysctl", "accept", "accept4", "access", "acct", "add_key",
    "adjtimex", "afs_syscall", "alarm", "arch_prctl", "arm_fadvise64_64", "arm_sync_file_range",
    "bdflush", "bind", "bpf", "break", "breakpoint", "brk", "cacheflush", "cachestat", "capget",
    "capset", "chdir", "chmod", "chown", "chown32", "chroot", "clock_adjtime", "clock_adjtime64",
    "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
    "clock_nanosleep_time64", "clock_settime", "clock_settime64", "clone", "clone3", "close",
    "close_range", "connect", "copy_file_range", "creat", "create_module", "delete_module", "dup",
    "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
    "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat",
    "exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate",
    "fanotify_init", "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown",
    "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr", "file_getattr",
    "file_setattr", "finit_module", "flistxattr", "flock", "fork", "fremovexattr", "fsconfig",
    "fsetxattr", "fsmount", "fsopen", "fspick", "fstat", "fstat64", "fstatat64", "fstatfs",
    "fstatfs64", "fsync", "ftime", "ftruncate", "ftruncate64", "futex", "futex_requeue",
    "futex_time64", "futex_wait", "futex_waitv", "futex_wake", "futimesat", "get_kernel_syms",
    "get_mempolicy", "get_robust_list", "get_thread_area", "getcpu", "getcwd", "getdents",
    "getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups",
    "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getpmsg", "getppid",
    "getpriority", "getrandom", "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit",
    "getrusage", "getsid", "getsockname", "getsockopt", "gettid", "gettimeofday", "getuid",
    "getuid32", "getxattr", "getxattrat", "gtty", "idle", "init_module", "inotify_add_watch",
    "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "io_destroy", "io_getevents",
    "io_pgetevents", "io_pgetevents_time64", "io_setup", "io_submit", "io_uring_enter",
    "io_uring_register", "io_uring_setup", "ioctl", "ioperm", "iopl", "ioprio_get", "ioprio_set",
    "ipc", "kcmp", "kexec_file_load", "kexec_load", "keyctl", "kill", "landlock_add_rule",
    "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link",
    "linkat", "listen", "listmount", "listxattr", "listxattrat", "llistxattr", "lock",
    "lookup_dcookie", "lremovexattr", "lseek", "lsetxattr", "lsm_get_self_attr", "lsm_list_modules",
    "lsm_set_self_attr", "lstat", "lstat64", "madvise", "map_shadow_stack", "mbind", "membarrier",
    "memfd_create", "memfd_secret", "migrate_pages", "mincore", "mkdir", "mkdirat", "mknod",
    "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "modify_ldt", "mount",
    "mount_setattr", "move_mount", "move_pages", "mprotect", "mpx", "mq_getsetattr", "mq_notify",
    "mq_open", "mq_timedreceive", "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64",
    "mq_unlink", "mremap", "mseal", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
    "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "nfsservctl", "nice",
    "oldfstat", "oldlstat", "oldolduname", "oldstat", "olduname", "open", "open_by_handle_at",
    "open_tree", "open_tree_attr", "openat", "openat2", "pause", "perf_event_open", "personality",
    "pidfd_getfd", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pivot_root", "pkey_alloc",
    "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv",
    "preadv2", "prlimit64", "process_madvise", "process_mrelease", "process_vm_readv",
    "process_vm_writev", "prof", "profil", "pselect6", "pselect6_time64", "ptrace", "putpmsg",
    "pwrite64", "pwritev", "pwritev2", "query_module", "quotactl", "quotactl_fd", "read",
    "readahead", "readdir", "readlink", "readlinkat", "readv", "reboot", "recvfrom", "recvmmsg",
    "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr", "removexattrat", "rename",
    "renameat", "renameat2", "request_key", "restart_syscall", "rmdir", "rseq", "rt_sigaction",
    "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_get_priority_max",
    "sched_get_priority_min", "sched_getaffinity", "sched_getattr", "sched_getparam",
    "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64",
    "sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield",
    "seccomp", "security", "select", "semctl", "semget", "semop", "semtimedop", "semtimedop_time64",
    "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto", "set_mempolicy",
    "set_mempolicy_home_node", "set_robust_list", "set_thread_area", "set_tid_address", "set_tls",
    "setdomainname", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32",
    "setgroups", "setgroups32", "sethostname", "setitimer", "setns", "setpgid", "setpriority",
    "setregid", "setregid32", "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid",
    "setreuid32", "setrlimit", "setsid", "setsockopt", "settimeofday", "setuid", "setuid32",
    "setxattr", "setxattrat", "sgetmask", "shmat", "shmctl", "shmdt", "shmget", "shutdown",
    "sigaction", "sigaltstack", "signal", "signalfd", "signalfd4", "sigpending", "sigprocmask",
    "sigreturn", "sigsuspend", "socket", "socketcall", "socketpair", "splice", "ssetmask", "stat",
    "stat64", "statfs", "statfs64", "statmount", "statx", "stime", "stty", "swapoff", "swapon",
    "symlink", "symlinkat", "sync", "sync_file_range", "sync_file_range2", "syncfs", "sysfs",
    "sysinfo", "syslog", "tee", "tgkill", "time", "timer_create", "timer_delete",
    "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64",
    "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
    "timerfd_settime64", "times", "tkill", "truncate", "truncate64", "tuxcall", "ugetrlimit",
    "ulimit", "umask", "umount", "umount2", "uname", "unlink", "unlinkat", "unshare", "uselib",
    "userfaultfd", "ustat", "utime", "utimensat", "utimensat_time64", "utimes", "vfork", "vhangup",
    "vm86", "vm86old", "vmsplice", "vserver", "wait4", "waitid", "waitpid", "write", "writev"
)  # fmt: skip

#: The address families a container may open sockets of: Unix, IPv4, IPv6 and netlink (what
#: `ip` and the C library's interface lookups use). Not AF_PACKET (raw frames, which need
#: CAP_NET_RAW), AF_VSOCK (the machine's virtual machines), AF_ALG (the kernel's crypto) nor
#: the obsolete families.
SOCKET_FAMILIES = (1, 2, 10, 16)
AF_NETLINK = 16
#: The netlink protocol of the kernel's device events (uevents), never open to a container: the
#: kernel sends each event of the machine's devices to every network namespace that belongs to
#: the machine's user namespace, a container's own among them (no user-namespace remapping),
#: network or none, to any user that asks. Found: a container's uid 1000, without a network,
#: read an event of the machine's as it came (ACTION, DEVPATH, SUBSYSTEM, the device's numbers);
#: on a laptop they tell each USB device plugged in (its maker's and product's numbers) and
#: each change of the battery's (its maker, model and serial number, its charge, on mains or
#: not): what /sys/devices is masked for (container_config.HARDWARE_PATHS). Nothing a container
#: runs needs them (udev listens, on the member's machine).
NETLINK_KOBJECT_UEVENT = 15
#: CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET: a clone that makes a
#: namespace is refused, as unshare is.
CLONE_NAMESPACES = 0x7E020000
#: personality() values programs use: Linux, with UNAME26, with ADDR_NO_RANDOMIZE (gdb, setarch),
#: both, and 0xffffffff (the query).
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
#: fallocate()'s mode flag that allocates blocks past the end of the file, its size unchanged.
FALLOC_FL_KEEP_SIZE = 0x01
#: ... and the one mode with it that is let through: freeing blocks (a hole), never allocating.
FALLOC_FL_PUNCH_HOLE = 0x02
_CONDITIONAL = ("clone", "clone3", "fallocate", "personality", "socket", "socketpair")


def _conditional_rules() -> list[dict[str, Any]]:
    def eq(index: int, value: int, op: str = "SCMP_CMP_EQ") -> dict[str, Any]:
        return {"index": index, "value": value, "valueTwo": 0, "op": op}

    def family(f: int) -> list[dict[str, Any]]:
        # Conditions on different arguments of one rule must all hold (runc adds them as one
        # rule): a netlink socket of any protocol but the device events'.
        if f == AF_NETLINK:
            return [eq(0, f), eq(2, NETLINK_KOBJECT_UEVENT, "SCMP_CMP_NE")]
        return [eq(0, f)]

    rules: list[dict[str, Any]] = [
        {
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": CLONE_NAMESPACES, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
        },
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
        {"names": list(AS_IF_ABSENT), "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
        {"names": ["socketpair"], "action": "SCMP_ACT_ALLOW", "args": [eq(0, 1)]},
        # fallocate only in modes that allocate nothing past the file's end, its size the
        # blocks' (any mode without KEEP_SIZE), or that free blocks (PUNCH_HOLE | KEEP_SIZE).
        {
            "names": ["fallocate"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 1, "value": FALLOC_FL_KEEP_SIZE, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
        },
        {
            "names": ["fallocate"],
            "action": "SCMP_ACT_ALLOW",
            "args": [eq(1, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)],
        },
    ]
    rules += [
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [eq(0, p)]} for p in PERSONALITIES
    ]
    rules += [{"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": family(f)} for f in SOCKET_FAMILIES]
    return rules


def profile() -> dict[str, Any]:
    """The profile, as the engine reads it (`--security-opt seccomp=`)."""
    allowed = sorted(set(KNOWN) - DENIED.keys() - set(_CONDITIONAL))
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
        ],
        "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"}, *_conditional_rules()],
    }


#: The profile's text, as the create call sends it and inspect shows it back.
PROFILE = json.dumps(profile(), sort_keys=True, separators=(",", ":"))
