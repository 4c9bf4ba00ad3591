"""JSON POSTs to /graphql: the POST endpoint (graphql_post) answers exactly as
strawberry's view does, and leaves it everything else.

A valid text sent as a JSON POST runs through the POST endpoint, the same text sent
with GET through strawberry's view; both reach the one operation runner, and for
queries the answers must match.
"""

from __future__ import annotations

import gc
import json
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from tests.conftest import Clients, Server, start_server, stop_server, token_for
from threadline.config import Settings

pytestmark = pytest.mark.asyncio


async def post(http: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    return await http.post("/graphql", json=body, headers=headers)


async def twice(http: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    """POSTed twice (parsed, then from the cache): the same answer both times."""
    first, second = await post(http, body, **headers), await post(http, body, **headers)
    assert (first.status_code, first.text) == (second.status_code, second.text)
    assert first.headers["content-type"] == second.headers["content-type"]
    return second


async def as_strawberry_would(http: httpx.AsyncClient, body: Any, **headers: str) -> Any:
    """A query POSTed and sent by GET (strawberry's view): the same JSON answer."""
    posted = await twice(http, body, **headers)
    params = {"query": body["query"], "variables": json.dumps(body.get("variables") or {})}
    got = await http.get("/graphql", params=params, headers=headers)
    assert (posted.status_code, posted.json()) == (got.status_code, got.json())
    return posted.json()


async def test_answers_and_errors_are_the_same_from_the_cache(clients: Clients) -> None:
    ann = await clients.user("ann")
    auth = {"authorization": f"Bearer {ann.token}"}
    me = await as_strawberry_would(clients.http, {"query": "{ me { id username } }"}, **auth)
    assert me == {"data": {"me": {"id": ann.id, "username": "ann"}}}

    # A domain refusal, an anonymous caller, a variable of the wrong type.
    missing = await as_strawberry_would(
        clients.http,
        {"query": "query($id: ID!) { thread(id: $id) { id } }", "variables": {"id": "nope"}},
        **auth,
    )
    assert missing["errors"][0]["extensions"]["code"] in {"NOT_FOUND", "BAD_USER_INPUT"}
    anonymous = await as_strawberry_would(clients.http, {"query": "{ me { id } }"})
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    wrong = await as_strawberry_would(
        clients.http,
        {
            "query": "query($n: Int) { notifications(first: $n) { totalCount } }",
            "variables": {"n": "x"},
        },
        **auth,
    )
    assert wrong["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert wrong["data"] is None


async def test_mutations_run_once_per_request_on_either_path(clients: Clients) -> None:
    ann = await clients.user("ann")
    create = 'mutation { createThread(input: {title: "twice"}) { id title } }'
    first = await ann.gql(create)
    second = await ann.gql(create)
    assert first["createThread"]["id"] != second["createThread"]["id"]
    threads = await ann.gql("{ threads(first: 10) { edges { node { id } } } }")
    assert len(threads["threads"]["edges"]) == 2


async def test_operation_names_pick_the_operation(clients: Clients) -> None:
    ann = await clients.user("ann")
    auth = {"authorization": f"Bearer {ann.token}"}
    text = "query A { me { id } } query B { me { username } }"
    b = await twice(clients.http, {"query": text, "operationName": "B"}, **auth)
    assert b.json() == {"data": {"me": {"username": "ann"}}}
    # A name the text lacks: strawberry's 400.
    refused = await twice(clients.http, {"query": text, "operationName": "C"}, **auth)
    assert refused.status_code == 400, refused.text


async def test_what_the_handler_leaves_to_strawberry(clients: Clients) -> None:
    http = clients.http
    auth = {"authorization": f"Bearer {token_for('ann')}"}
    # A subscription over plain POST is refused clearly, the first time too.
    text = 'subscription { threadEvents(threadId: "x") { seq } }'
    for _ in range(2):
        subscription = await post(http, {"query": text}, **auth)
        assert subscription.status_code == 200
        error = subscription.json()["errors"][0]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert "WebSocket" in error["message"]
    # A body that is no operation, and no query at all.
    assert (await twice(http, [{"query": "{ me { id } }"}], **auth)).status_code == 400
    assert (await twice(http, {"variables": {}}, **auth)).status_code == 400
    assert (
        await twice(http, {"query": "{ me { id } }", "variables": [1]}, **auth)
    ).status_code == 400
    broken = await http.post(
        "/graphql", content=b"{not json", headers={"content-type": "application/json", **auth}
    )
    assert broken.status_code == 400
    assert "JSON" in broken.text
    # Not JSON at all, and GET: strawberry's own answers, untouched.
    form = await http.post(
        "/graphql", content=b"query={me{id}}", headers={"content-type": "text/plain", **auth}
    )
    assert form.status_code in {400, 415}
    get = await http.get("/graphql", params={"query": "{ me { id } }"}, headers=auth)
    assert get.json()["data"]["me"]["id"]


@pytest.mark.parametrize("content_type", ["application/json", "application/json ; charset=utf-8"])
@pytest.mark.parametrize("body", [b"null", b"5", b'"{ me { id } }"', b"true"])
async def test_a_json_body_that_is_not_an_object_is_a_400(
    clients: Clients, content_type: str, body: bytes
) -> None:
    """Rule: bad input gets a clear error, never a 500. Evidence: a JSON body of null, a
    number, a string or a boolean was answered 500 Internal Server Error, strawberry's
    view logging "AttributeError: 'NoneType' object has no attribute 'get'"."""
    response = await clients.http.post(
        "/graphql", content=body, headers={"content-type": content_type}
    )
    assert response.status_code == 400, response.text
    assert "must be an object" in response.text


async def test_a_json_content_type_with_parameters_is_still_json(clients: Clients) -> None:
    ann = await clients.user("ann")
    response = await clients.http.post(
        "/graphql",
        content=b'{"query": "{ me { username } }"}',
        headers={
            "content-type": "application/json; charset=utf-8",
            "authorization": f"Bearer {ann.token}",
        },
    )
    assert response.json() == {"data": {"me": {"username": "ann"}}}
    assert int(response.headers["content-length"]) == len(response.content)


async def test_cors_headers_on_the_direct_path(settings: Settings) -> None:
    origin = "https://app.example"
    server: Server = await start_server(settings.model_copy(update={"cors_origins": [origin]}))
    try:
        async with httpx.AsyncClient(base_url=server.base) as http:
            auth = {"authorization": f"Bearer {token_for('ann')}", "origin": origin}
            answer = await twice(http, {"query": "{ me { username } }"}, **auth)
            assert answer.json() == {"data": {"me": {"username": "ann"}}}
            assert answer.headers["access-control-allow-origin"] == origin
            other = await post(
                http,
                {"query": "{ me { username } }"},
                **{**auth, "origin": "https://elsewhere.example"},
            )
            assert "access-control-allow-origin" not in other.headers
    finally:
        await stop_server(server)


async def test_operations_are_counted_by_kind_and_engine(server: Server, clients: Clients) -> None:
    ann = await clients.user("ann")
    fast = server.runtime.settings.fast_paths  # FAST_PATHS=off: strawberry's engine only

    def count(kind: str, engine: str) -> float:
        labels = {"kind": kind, "engine": engine}
        return REGISTRY.get_sample_value("threadline_graphql_operations_total", labels) or 0.0

    def counts() -> tuple[float, ...]:
        return tuple(count(k, e) for k in ("query", "mutation") for e in ("direct", "strawberry"))

    before = counts()
    await ann.gql("{ me { id } }")  # a JSON POST: the direct engine (with fast paths)
    got = await clients.http.get(
        "/graphql",
        params={"query": "{ me { id } }"},
        headers={"authorization": f"Bearer {ann.token}"},
    )  # GET: the same runner, the same engine
    assert got.json()["data"]["me"]["id"] == ann.id
    await ann.gql('mutation { createThread(input: {title: "counted"}) { id } }')
    # A text that does not validate is strawberry's to answer, and is not counted.
    assert await ann.error("{ me { nope } }") == "BAD_USER_INPUT"
    after = counts()
    expected = [2, 0, 1, 0] if fast else [0, 2, 0, 1]
    assert [a - b for a, b in zip(after, before, strict=True)] == expected


async def test_an_answered_operation_leaves_nothing_for_the_cyclic_collector(
    server: Server, clients: Clients
) -> None:
    """The direct engine's executor holds no reference cycle: it is freed when its
    answer is out, not at the next collection (whose pauses every socket waits out)."""
    runner = server.app.state.graphql.schema.runner
    if not runner.fast:
        pytest.skip("FAST_PATHS=off: strawberry's own executor")
    ann = await clients.user("ann")
    auth = {"authorization": f"Bearer {ann.token}"}
    body = {"query": "{ me { id } threads(first: 5) { edges { node { id } } } }"}
    assert (await post(clients.http, body, **auth)).status_code == 200

    def executors() -> int:
        return sum(1 for o in gc.get_objects() if isinstance(o, runner.executor_class))

    gc.disable()
    try:
        gc.collect()
        before = executors()
        for _ in range(10):
            assert (await post(clients.http, body, **auth)).status_code == 200
        assert executors() == before
    finally:
        gc.enable()
