"""What the allocator and the pool registry agree on for access tokens."""

# The registry's name in a token's audience, and the issuer it trusts.
SERVICE = "potluck-registry"
ISSUER = "potluck-allocator"
# The allocator's token endpoint; the registry sends Docker clients there (its `realm`).
TOKEN_PATH = "/v1/registry/token"
