"""Rate limits through the API: RATE_LIMITED with retryAfter, nothing stored."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests import factories
from tests.conftest import Api, Server, start_server, stop_server, token_for
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
        for i in range(20):
            await factories.send(alice, tid, f"m{i}")
        body = await alice.raw(factories.SEND, {"i": {"threadId": tid, "body": "one too many"}})
        error = body["errors"][0]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert 1 <= error["extensions"]["retryAfter"] <= 2
        last = await alice.gql("query($t: ID!) { thread(threadId: $t) { lastSeq } }", {"t": tid})
        assert last["thread"]["lastSeq"] == 20
