"""Document limits: depth at most 12, at most 15 aliases, at most 5000 tokens (settings)."""

from __future__ import annotations

import httpx

from tests.conftest import Api, Clients, start_server, stop_server, token_for
from threadline.config import Settings


def nested(depth: int) -> str:
    # thread(1) messages(2) edges(3) node(4), then parent per level, id at the bottom
    inner = "id"
    for _ in range(depth - 4):
        inner = f"parent {{ {inner} }}"
    return f'{{ thread(threadId: "x") {{ messages {{ edges {{ node {{ {inner} }} }} }} }} }}'


async def test_a_query_deeper_than_12_is_refused(clients: Clients) -> None:
    alice = await clients.user("alice")
    body = await alice.raw(nested(13))
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "depth" in body["errors"][0]["message"]
    allowed = await alice.raw(nested(12))
    assert allowed["errors"][0]["extensions"]["code"] == "NOT_FOUND"  # validated, then executed


async def test_more_than_15_aliases_are_refused(clients: Clients) -> None:
    alice = await clients.user("alice")
    query = "{ " + " ".join(f"a{i}: me {{ id }}" for i in range(16)) + " }"
    body = await alice.raw(query)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    ok = await alice.gql("{ " + " ".join(f"a{i}: me {{ id }}" for i in range(15)) + " }")
    assert len(ok) == 15


async def test_more_than_5000_tokens_are_refused(clients: Clients) -> None:
    alice = await clients.user("alice")
    query = "{ me { " + "id " * 5000 + "} }"
    body = await alice.raw(query)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_a_repeated_document_is_answered_the_same_from_the_cache(clients: Clients) -> None:
    """The second time, parse and validation come from the cache: same answers, refusals too."""
    alice = await clients.user("alice")
    too_deep = nested(13)
    unknown = "{ me { id nonsense } }"
    broken = "{ me { id "
    for _ in range(2):
        body = await alice.raw(too_deep)
        assert "depth" in body["errors"][0]["message"]
        body = await alice.raw(unknown)
        assert "nonsense" in body["errors"][0]["message"]
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        body = await alice.raw(broken)
        assert "Syntax Error" in body["errors"][0]["message"]
        assert (await alice.gql("{ me { username } }"))["me"]["username"] == "alice"


def test_the_document_cache_is_bounded() -> None:
    import math

    from graphql import parse

    from threadline.realtime.caches import TTLCache

    cache: TTLCache[str, object] = TTLCache(math.inf, 2)
    for text in ("{ a }", "{ b }", "{ c }"):
        cache.put(text, (parse(text), []))
    assert len(cache) == 2
    assert cache.get("{ a }") is None and cache.get("{ c }") is not None
    # Least recently used goes first: "{ b }" is read, so "{ c }" is evicted by "{ d }".
    assert cache.get("{ b }") is not None
    cache.put("{ d }", (parse("{ d }"), []))
    assert cache.get("{ c }") is None and cache.get("{ b }") is not None


async def test_production_refuses_introspection_every_time() -> None:
    from threadline.graphql_app import ROOTS
    from threadline.schema.schema import build_schema

    query = "{ __schema { queryType { name } } }"
    production, development = build_schema(ROOTS, production=True), build_schema(ROOTS)
    for _ in range(2):  # the second answer comes from the document cache
        refused = await production.execute(query)
        assert refused.errors and "introspection" in refused.errors[0].message.lower()
        allowed = await development.execute(query)
        assert allowed.errors is None
        assert allowed.data == {"__schema": {"queryType": {"name": "Query"}}}


async def test_the_document_limits_are_settings(settings: Settings) -> None:
    strict = settings.model_copy(update={"max_query_depth": 5, "max_aliases": 2, "max_tokens": 40})
    running = await start_server(strict)
    try:
        async with httpx.AsyncClient(base_url=running.base) as http:
            alice = Api(http, token_for("alice"), "alice")
            assert "depth" in (await alice.raw(nested(6)))["errors"][0]["message"]
            assert (await alice.raw(nested(5)))["errors"][0]["extensions"]["code"] == "NOT_FOUND"
            three = "{ " + " ".join(f"a{i}: me {{ id }}" for i in range(3)) + " }"
            body = await alice.raw(three)
            assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
            assert len(await alice.gql("{ a: me { id } b: me { id } }")) == 2
            body = await alice.raw("{ me { " + "id " * 40 + "} }")
            assert "token" in body["errors"][0]["message"].lower()
    finally:
        await stop_server(running)
