"""A user of the allocator's HTTP API, for the end-to-end tests."""

from typing import Any

import aiohttp

from potluck.localstack.test_image import DEFAULT_TAG


class Api:
    def __init__(self, http: aiohttp.ClientSession, base: str, token: str | None) -> None:
        self.http = http
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        async with self.http.request(method, self.base + path, json=body, headers=self.headers, **kw) as r:
            return r.status, await r.json()


def small(**extra: Any) -> dict[str, Any]:
    return {
        "cpus": 0.5,
        "memory": "64M",
        "disk": "64M",
        "image": DEFAULT_TAG,
        "command": ["sleep", "3600"],
        **extra,
    }
