"""The SSH link between a hostd and a gateway: what both ends must agree on.

hostd dials every gateway and serves SSH on that outbound connection; the
gateway is its client. Both ends offer the same ciphers and read the socket in
the same bounded chunks, so neither end's event loop stalls on bulk data.
"""

#: Offered on the hop to the gateway, best first (aes128-gcm is the fastest with AES-NI).
LINK_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com")
#: Key exchanges on that hop: post-quantum hybrid first, then X25519; no SHA-1, no NIST curves
#: (issue 13). A hostd from before this list offers asyncssh's defaults, which include both.
LINK_KEX_ALGS = ("mlkem768x25519-sha256", "curve25519-sha256", "curve25519-sha256@libssh.org")
#: Used only with a non-AEAD cipher, which LINK_CIPHERS has none of; SHA-2 encrypt-then-MAC.
LINK_MAC_ALGS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com")


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
