"""The SSH link between a hostd and a gateway: what both ends must agree on.

hostd dials every gateway and serves SSH on that outbound connection; the
gateway is its client. Both ends offer the same ciphers and read the socket in
the same bounded chunks, so neither end's event loop stalls on bulk data.
"""

import ctypes
import os
import platform
import struct
import sys

#: Offered on the hop to the gateway, best first (aes128-gcm is the fastest with AES-NI).
LINK_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com")
#: Key exchanges on that hop: post-quantum hybrid first, then X25519; no SHA-1, no NIST curves
#: (issue 13). A hostd from before this list offers asyncssh's defaults, which include both.
LINK_KEX_ALGS = ("mlkem768x25519-sha256", "curve25519-sha256", "curve25519-sha256@libssh.org")
#: Used only with a non-AEAD cipher, which LINK_CIPHERS has none of; SHA-2 encrypt-then-MAC.
LINK_MAC_ALGS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com")
#: Host keys and login signatures on that hop: both ends' keys are ed25519, made by Potluck
#: (potluck.kernel.ssh_identity, the gateway's tunnel key). Left to asyncssh's defaults, the
#: gateway offered 27 host key types, `ssh-rsa` (RSA with SHA-1) and certificates among them,
#: and hostd announced `ssh-rsa` and `ssh-dss` in its server-sig-algs and would verify them.
LINK_SIGNATURE_ALGS = ("ssh-ed25519",)
#: What each end of the link says in its SSH version line. asyncssh's default,
#: `AsyncSSH_<version>`, tells anyone who reaches the hop which CVEs to try.
HOSTD_SSH_VERSION = "Potluck_hostd"
GATEWAY_SSH_VERSION = "Potluck_sshgateway"


#: Bytes one read from a socket may take (asyncio's default is 256 KiB). See `limit_reads`.
READ_CHUNK = 64 * 1024


def limit_reads(transport: object) -> None:
    """Cap how much one read of `transport` takes (a transport, or an asyncssh connection's).

    One event-loop turn handles every ready socket, and asyncssh decrypts (and the
    gateway re-encrypts) all of a read at once; with 256 KiB reads a bulk transfer
    holds the loop for milliseconds, and every other session's keystrokes wait that
    long at each hop. Smaller reads keep turns short; asyncssh also copies its input
    buffer once per packet, so they cost no throughput.
    """
    target = getattr(transport, "_transport", transport)
    if hasattr(target, "max_size"):
        target.max_size = READ_CHUNK


#: The CPU slice both ends of the link ask for (EEVDF's `sched_runtime`): the kernel's shortest.
LATENCY_SLICE_US = 100

_SYS_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}
_SCHED_ATTR = struct.Struct("=IIQiIQQQII")


def request_short_slice(slice_us: int = LATENCY_SLICE_US) -> bool:
    """Ask the kernel for short CPU slices for the calling thread (and the threads it starts).

    On two busy cores a keystroke crosses four Python event-loop turns (gateway and
    hostd, each way), and each waits for its process to be scheduled: with the default
    slice (about 1.4 ms here) behind a bulk transfer's ssh client, dockerd and the other
    hop, that wait made the round trip 8 ms at p50 and 50 ms at p99 (bench/README.md,
    `gateway`). Since Linux 6.6 (EEVDF) a thread with a shorter slice gets an earlier
    deadline, so on wakeup it preempts what runs instead of queueing behind it; its share
    of the CPU is unchanged (weights decide that, not slices), and no privilege is needed.
    False where the kernel or the machine does not offer it (older kernels keep their
    default: nothing breaks, the latency is what it was). `slice_us` 0 asks for nothing.
    """
    number = _SYS_SCHED_SETATTR.get(platform.machine())
    if slice_us <= 0 or sys.platform != "linux" or number is None:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    # size, policy SCHED_OTHER, flags, nice 0, priority 0, runtime (the slice), deadline, period.
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    attr = _SCHED_ATTR.pack(_SCHED_ATTR.size, 0, 0, nice, 0, slice_us * 1000, 0, 0, 0, 0)
    return int(libc.syscall(number, 0, attr, 0)) == 0


#: The payload of the SSH_MSG_IGNORE asyncssh puts before each packet: an empty string.
_EMPTY_STRING = b"\0\0\0\0"
_MSG_IGNORE = 2


def skip_ignore_packets(conn: object) -> None:
    """Send no SSH_MSG_IGNORE before every packet of `conn` (an asyncssh connection).

    asyncssh sends an empty ignore packet ahead of each packet it encrypts, the old
    countermeasure to chosen-plaintext attacks on CBC ciphers: an extra packet to pad,
    encrypt and `send` for every 32 KiB of data, on every hop. The ciphers we negotiate
    are AEAD (AES-GCM, ChaCha20-Poly1305), which that attack does not touch, and OpenSSH
    sends none; a connection that negotiated a CBC cipher (the gateway's users' list is
    configurable) keeps them.
    """
    send_packet = conn.send_packet  # type: ignore[attr-defined]
    get_extra_info = conn.get_extra_info  # type: ignore[attr-defined]

    def send(pkttype: int, *args: bytes, handler: object = None) -> None:
        if pkttype == _MSG_IGNORE and args == (_EMPTY_STRING,):
            cipher = str(get_extra_info("send_cipher") or "")
            if cipher and "cbc" not in cipher:
                return
        send_packet(pkttype, *args, handler=handler)

    conn.send_packet = send  # type: ignore[attr-defined]
