"""nats-py, imported without the aiohttp it loads for websocket servers.

nats-py imports aiohttp at its own import whenever it is installed, only for ws:// servers,
which Potluck never uses: `potluck.kernel.nats_urls` refuses anything but nats:// and tls://.
aiohttp and what it loads cost every process about 0.45 s at start and 13 MB resident on this
machine, hostd on a member's laptop included (issue 20), though only the allocator serves HTTP.
So the potluck command imports this module before anything imports nats, with aiohttp hidden
(potluck.kernel.hidden_modules); the allocator still imports aiohttp for itself afterwards.
tests/unit/test_hostd_lazy_imports.py checks that hostd, the registry and the gateway load none.
"""

from potluck.kernel.hidden_modules import hidden

with hidden("aiohttp"):
    import nats.aio.client  # noqa: F401
