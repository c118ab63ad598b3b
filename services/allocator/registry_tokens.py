"""Access tokens for the pool registry: JWTs signed with ES256 that Distribution verifies.

PyJWT does the encoding and signing (a well-kept, small library; hand-rolled
JOSE is where subtle bugs live). The claims follow Docker's token
specification: issuer, subject, audience (the registry's service name), a
short lifetime, and the granted `access` list.
"""

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from potluck.allocator.registry_access import Scope
from potluck.contracts.registry import ISSUER, SERVICE
from potluck.kernel.signing_keys import libtrust_key_id

TOKEN_TTL_S = 300


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: float


class TokenIssuer:
    def __init__(
        self, key: ec.EllipticCurvePrivateKey, *, issuer: str = ISSUER, service: str = SERVICE
    ) -> None:
        self._key = key
        self._kid = libtrust_key_id(key.public_key())
        self.issuer = issuer
        self.service = service

    def issue(self, subject: str, access: Sequence[Scope], *, now: float | None = None) -> IssuedToken:
        issued = time.time() if now is None else now
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "iat": int(issued),
            # A little slack for clocks that differ between the allocator and the registry.
            "nbf": int(issued) - 30,
            "exp": int(issued) + TOKEN_TTL_S,
            "jti": secrets.token_hex(16),
            "access": [scope.claim() for scope in access if scope.actions],
        }
        token = jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self._kid})
        return IssuedToken(token, TOKEN_TTL_S, issued)
