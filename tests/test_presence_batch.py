"""Presence on a page of users is read in one Redis round trip, and Redis failing nulls nothing.

Issue 11, item 3: selecting ``presence`` on many users took three Redis commands
per user, each on a pooled connection, which exhausted the pool and nulled the
whole answer. Run with ``-s`` to see the round trips counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection

from tests import factories
from tests.conftest import (
    BACKEND,
    Api,
    Clients,
    Server,
    free_port,
    start_server,
    stop_server,
    token_for,
)
from tests.wsclient import GraphQLWS
from threadline.config import Settings

PAGE = """
query($t: ID!) {
  thread(threadId: $t) {
    participants(first: 20) { edges { node { user { username presence { status } } } } }
  }
}
"""


@contextmanager
def presence_round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """What the server sends to Redis that reads presence, one entry per round trip.

    redis-py writes a pipeline with one send_packed_command call; lease renewals
    (ZADD) of the connections' keep-alive beat, and the process's own heartbeat
    (presence:process:..., every second: on a loaded machine the page can take
    longer), are left out.
    """
    sent: list[bytes] = []
    original = AbstractConnection.send_packed_command

    async def counted(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        if isinstance(command, str):
            payload = command.encode()
        elif isinstance(command, bytes):
            payload = command
        else:
            payload = b"".join(command)
        if (
            b"presence:" in payload
            and b"ZADD" not in payload
            and b"presence:process" not in payload
        ):
            sent.append(payload)
        await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    yield sent


def statuses(page: dict[str, Any]) -> dict[str, str]:
    edges = page["thread"]["participants"]["edges"]
    return {e["node"]["user"]["username"]: e["node"]["user"]["presence"]["status"] for e in edges}


async def test_a_page_of_users_reads_presence_in_one_round_trip(
    server: Server, clients: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    people = await clients.users(*(f"user{i}" for i in range(12)))
    alice, bob, carol = people[:3]
    thread_id = await factories.thread(alice, *people[1:])
    sockets = [
        await GraphQLWS.connect(server.ws_url, token_for(u.username or "")) for u in (bob, carol)
    ]
    try:
        await carol.gql("mutation { setPresence(status: AWAY) { status } }")
        with presence_round_trips(monkeypatch) as sent:
            page = await alice.gql(PAGE, {"t": thread_id})
        seen = statuses(page)
        assert len(seen) == 12
        assert seen.pop("user1") == "ONLINE"
        assert seen.pop("user2") == "AWAY"
        assert set(seen.values()) == {"OFFLINE"}
        if BACKEND == "postgres":  # Redis behind presence
            print(f"\npresence of 12 users: {len(sent)} Redis round trip(s)")
            assert len(sent) == 1
    finally:
        for ws in sockets:
            await ws.close()


async def test_presence_without_redis_shows_users_offline_and_the_page_stands(
    clients: Clients, settings: Settings
) -> None:
    """Redis unreachable: presence degrades to OFFLINE (as last stored), per user, with no error."""
    people = await clients.users("alice", "bob", "carol")
    thread_id = await factories.thread(*people)
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    broken = await start_server(settings.model_copy(update={"redis_url": nowhere}))
    try:
        api = Api(people[0].http, token_for("alice"), "alice")
        response = await api.http.post(
            broken.base + "/graphql",
            json={"query": PAGE, "variables": {"t": thread_id}},
            headers={"authorization": f"Bearer {api.token}"},
        )
        body = response.json()
        assert "errors" not in body, body
        assert statuses(body["data"]) == {"alice": "OFFLINE", "bob": "OFFLINE", "carol": "OFFLINE"}
    finally:
        await stop_server(broken)
