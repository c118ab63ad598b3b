"""Which SSH algorithm names are too weak to offer: one rule for what the gateway's settings
accept and what the tests hold every SSH face of Potluck to.

The rule is ssh-audit's "fail" list, as a pattern per family, so that a name asyncssh adds
later falls under it too:

- key exchange: SHA-1 (`diffie-hellman-group1-sha1`, `-group14-sha1`, `-group-exchange-sha1`),
  the 1024-bit groups and RSA key exchange (`rsa1024-sha1`), SHA-224 (`...sha224@ssh.com`), NIST
  and Koblitz curves (`ecdh-sha2-nistp*`, `...-1.3.132.0.10`), and GSS (Kerberos: no
  Potluck face takes it);
- ciphers: CBC (the plaintext-recovery attacks; also the reason asyncssh sends an IGNORE
  before every packet), RC4 (`arcfour*`), 64-bit blocks (3DES, Blowfish, CAST), SEED;
- MACs: SHA-1 and MD5, truncated tags (`-96`), and UMAC-64's 64-bit tag;
- anywhere: `none`.

A setting that names one is refused at start, naming it; a CTR cipher or a MAC without
encrypt-then-MAC is a weaker choice than the defaults but no failure, and stays possible.
"""

__all__ = ["weakness"]

_WEAK: dict[str, tuple[tuple[str, str], ...]] = {
    "kex": (
        ("sha1", "SHA-1"),
        ("sha224", "SHA-224"),
        ("group1-", "a 1024-bit group"),
        ("rsa1024", "a 1024-bit RSA key exchange"),
        ("nistp", "a NIST curve"),
        ("1.3.132.0.10", "the secp256k1 curve"),
        ("gss-", "GSS (Kerberos) key exchange"),
    ),
    "cipher": (
        ("-cbc", "CBC mode"),
        ("arcfour", "RC4"),
        ("3des", "a 64-bit block cipher"),
        ("blowfish", "a 64-bit block cipher"),
        ("cast128", "a 64-bit block cipher"),
        ("seed-", "the SEED cipher"),
    ),
    "mac": (
        ("sha1", "SHA-1"),
        ("md5", "MD5"),
        ("-96", "a truncated tag"),
        ("umac-64", "a 64-bit tag"),
    ),
}


def weakness(kind: str, name: str) -> str | None:
    """Why the algorithm `name` of family `kind` ("kex", "cipher" or "mac") is too weak to
    offer, or None."""
    lowered = name.lower()
    if lowered == "none":
        return "no protection at all"
    for pattern, why in _WEAK[kind]:
        if pattern in lowered:
            return why
    return None
