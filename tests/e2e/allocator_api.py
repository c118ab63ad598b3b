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


async def refused_pages(
    api: Api, path: str, bad_limits: list[tuple[str, str]], foreign_afters: list[str], theirs: str, never: str
) -> None:
    """Each query of `bad_limits` (query, field) is a 400 INVALID_FIELD naming its field; each
    `after` of `foreign_afters` (queries) a 404 NOT_FOUND naming `after`; and another user's id
    (`theirs`) gets the very same answer as one that never was (`never`)."""
    for query, field in bad_limits:
        status, answer = await api.call("GET", f"{path}?{query}")
        assert status == 400, (query, answer)
        assert (answer["error"]["code"], answer["error"]["field"]) == ("INVALID_FIELD", field), query
    for query in foreign_afters:
        status, answer = await api.call("GET", f"{path}?{query}")
        assert status == 404, (query, answer)
        assert (answer["error"]["code"], answer["error"]["field"]) == ("NOT_FOUND", "after"), query
    _, of_theirs = await api.call("GET", f"{path}?after={theirs}")
    _, unknown = await api.call("GET", f"{path}?after={never}")
    assert of_theirs == unknown


def small(**extra: Any) -> dict[str, Any]:
    return {
        "cpus": 0.5,
        "memory": "64M",
        "disk": "64M",
        "image": DEFAULT_TAG,
        "command": ["sleep", "3600"],
        **extra,
    }


async def create_on(
    http: aiohttp.ClientSession, api: str, token: str, image: str, on: str = "laptop-b"
) -> dict[str, Any]:
    """POST /v1/allocations as the user: a small `sleep` task of `image` on the machine named
    `on`; its JSON, after checking it was accepted (201, or 202 while pending)."""
    body = small(cpus=0.2, image=image, constraints={"name": on})
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(f"{api}/v1/allocations", json=body, headers=headers) as response:
        created: dict[str, Any] = await response.json()
        assert response.status in (201, 202), created
        return created
