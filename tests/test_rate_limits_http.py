"""Rate limits through the API: RATE_LIMITED with retryAfter, nothing stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from tests import factories
from tests.conftest import Api, Server, start_server, stop_server, token_for
from tests.wsclient import GraphQLWS
from threadline.config import Settings


@pytest.fixture
async def limited(settings: Settings) -> AsyncIterator[Server]:
    running = await start_server(settings.model_copy(update={"rate_limits": True}))
    yield running
    await stop_server(running)


async def test_the_21st_message_in_two_seconds_is_rate_limited(limited: Server) -> None:
    async with httpx.AsyncClient(base_url=limited.base) as http:
        alice = Api(http, token_for("alice"), "alice")
        tid = await factories.thread(alice)
        # Together, so that a loaded machine still makes all 20 inside the 2 s window.
        await asyncio.gather(*(factories.send(alice, tid, f"m{i}") for i in range(20)))
        body = await alice.raw(factories.SEND, {"i": {"threadId": tid, "body": "one too many"}})
        error = body["errors"][0]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert 1 <= error["extensions"]["retryAfter"] <= 2
        last = await alice.gql("query($t: ID!) { thread(threadId: $t) { lastSeq } }", {"t": tid})
        assert last["thread"]["lastSeq"] == 20


async def test_a_window_set_in_the_settings_is_the_one_enforced(settings: Settings) -> None:
    configured = settings.model_copy(
        update={"rate_limits": True, "rate_limit_send_message": "3/60"}
    )
    running = await start_server(configured)
    try:
        async with httpx.AsyncClient(base_url=running.base) as http:
            alice = Api(http, token_for("alice"), "alice")
            tid = await factories.thread(alice)
            for i in range(3):
                await factories.send(alice, tid, f"m{i}")
            body = await alice.raw(factories.SEND, {"i": {"threadId": tid, "body": "a 4th"}})
            error = body["errors"][0]
            assert error["extensions"]["code"] == "RATE_LIMITED"
            assert 50 <= error["extensions"]["retryAfter"] <= 60
    finally:
        await stop_server(running)


async def test_subscriptions_over_the_configured_ceiling_get_an_error_and_the_socket_stays(
    settings: Settings,
) -> None:
    ceiling = settings.model_copy(update={"max_subscriptions_per_connection": 2})
    running = await start_server(ceiling)
    try:
        http = httpx.AsyncClient(base_url=running.base)
        alice = Api(http, token_for("alice"), "alice")
        tid = await factories.thread(alice)
        socket = await GraphQLWS.connect(running.ws_url, token_for("alice"))
        try:
            query = "subscription($t: ID!) { threadEvents(threadId: $t) { seq } }"
            # Started together, they are counted in whatever order their checks finish:
            # one of the three is refused, with an error for that operation alone.
            ids = {await socket.subscribe(query, {"t": tid}) for _ in range(3)}
            message = await socket.next()
            assert message["id"] in ids
            # The operation's own `error` message (graphql-transport-ws), which ends it.
            assert message["type"] == "error", message
            errors = message["payload"]
            assert errors[0]["extensions"]["code"] == "RATE_LIMITED"
            assert errors[0]["message"] == "At most 2 subscriptions per connection"
            # The two others are live on the same socket: a message reaches both.
            await factories.send(alice, tid, "still here")
            live = {(await socket.next())["id"] for _ in range(2)}
            assert live == ids - {message["id"]}
        finally:
            await socket.close()
            await http.aclose()
    finally:
        await stop_server(running)
