"""The key pair that signs the pool registry's access tokens, and how the registry names it.

The allocator holds the private key and signs short-lived tokens; the registry
(CNCF Distribution) trusts the self-signed certificate beside it. Distribution
finds the key for a token by its `kid` header, which it computes the libtrust
way from the public key; `libtrust_key_id` computes the same name here.
"""

import base64
import datetime
import hashlib
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

KEY_FILE = "registry-token.key"
CERT_FILE = "registry-token.crt"


class SigningKeyError(Exception):
    """The signing key is missing or unreadable: the message says which file and what to do."""


def libtrust_key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """`ABCD:EFGH:...`: base32 of the first 240 bits of SHA-256 over the DER public key."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def ensure_signing_key(directory: Path, *, valid_days: int = 3650) -> tuple[Path, Path]:
    """The key and certificate in `directory`, made once (the key readable by its owner only)."""
    key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
    if key_path.exists() and cert_path.exists():
        return key_path, cert_path
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "potluck registry tokens")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def load_signing_key(key_path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise SigningKeyError(
            f"cannot read the registry token key {key_path}: {exc}; "
            "`potluck up` makes one in its state directory"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SigningKeyError(
            f"{key_path} is not an EC private key; the registry tokens are signed with ES256"
        )
    return key
