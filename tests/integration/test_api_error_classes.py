"""Whose fault an API failure is: a body that is not what the schema says is the client's 400; a
model the allocator fails to build is its own 500 (real allocator app and Postgres)."""

from aiohttp import web
from pydantic import BaseModel, ValidationError

from potluck.events import EventStore
from tests.fixtures.web_app import serving


class _Answer(BaseModel):
    count: int


async def _broken_answer(request: web.Request) -> web.Response:
    # What a handler with a bug does: builds an answer from a value that is not what its model takes.
    return web.json_response(_Answer.model_validate({"count": "many"}).model_dump())


def _with_broken_route(app: web.Application) -> None:
    app.router.add_get("/v1/pool/broken", _broken_answer)


async def test_a_model_the_allocator_fails_to_build_is_its_500_and_a_wrong_body_is_the_clients_400(
    store: EventStore,
) -> None:
    """Tried: a handler whose own answer fails pydantic's validation (a bug of the allocator's),
    then a POST whose body has a wrong field. Must hold: the first is 500 INTERNAL with an
    incident id (before: 400 INVALID_FIELD, telling the user their request was wrong and naming
    a field they never sent); the second is 400 INVALID_FIELD naming the field."""
    try:
        _Answer.model_validate({"count": "many"})
    except ValidationError as exc:
        invalid = exc.errors()[0]["loc"]
    assert invalid == ("count",)  # what the middleware once took for the client's field

    async with serving(store, ("alice",), _with_broken_route) as app:
        headers = {"Authorization": f"Bearer {app.tokens['alice']}"}
        async with app.http.get(f"{app.url}/v1/pool/broken", headers=headers) as r:
            body = await r.json()
            assert r.status == 500, body
        assert body["error"]["code"] == "INTERNAL"
        assert "incident" in body["error"]["message"]
        assert "field" not in body["error"]

        wrong = {"cpus": "two", "memory": "64M", "image": "busybox"}
        async with app.http.post(f"{app.url}/v1/allocations", json=wrong, headers=headers) as r:
            body = await r.json()
            assert r.status == 400, body
        assert body["error"]["code"] == "INVALID_FIELD"
        assert body["error"]["field"] == "cpus"
