"""What crosses between Potluck's processes, defined once and imported by both sides.

The NATS subjects (subjects), the requests and replies (messages), hostd's
reports (reports), the logged events of hosts and allocations (host_events,
allocation_events), the values they carry (capacity, engine), and what both
ends of the hostd-gateway SSH link agree on (link). No service owns these:
the registry, the allocator, hostd and the gateway all import them, and none
imports another service (import-linter holds this in CI).
"""
