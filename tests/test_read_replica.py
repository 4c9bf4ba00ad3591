"""DATABASE_READ_URL against a real hot standby: queries read it, writers read their own
writes, and access is decided on the primary even while the standby lags.

The standby (``scripts/pg-replica``, started by the test command) streams from the test
primary; each test makes it lag on purpose by pausing its replay. The PostgreSQL row
runs these when the standby answers; otherwise, and in the SQLite row, they skip.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests import factories, replica
from tests.conftest import BACKEND, Api, Clients, Server, free_port, start_server, stop_server
from tests.wsclient import GraphQLWS
from threadline.config import Settings

# One line for the whole file when there is nothing to test against.
if BACKEND != "postgres":
    pytest.skip(
        "read replicas are PostgreSQL hot standbys: not in the SQLite row",
        allow_module_level=True,
    )
if (_missing := asyncio.run(replica.missing())) is not None:
    pytest.skip(_missing, allow_module_level=True)

HISTORY = (
    "query($t: ID!) { thread(threadId: $t) { messages(last: 50) { edges { node { body } } } } }"
)
THREADS = "{ threads(first: 50) { edges { node { id title } } } }"
SEARCH = "query($q: String!) { searchMessages(query: $q) { edges { node { body } } } }"
REMOVE = "mutation($t: ID!, $u: ID!) { removeParticipant(threadId: $t, userId: $u) }"
EVENTS = """
subscription($t: ID!) { threadEvents(threadId: $t, afterSeq: 0) {
  seq ... on MessageCreated { message { body } } } }
"""


@pytest.fixture
async def replicated(settings: Settings) -> AsyncIterator[Settings]:
    """The test's settings with DATABASE_READ_URL on the standby's copy of its database."""
    with replica.exclusive():
        await replica.resume()  # a run killed mid-test may have left it paused
        await replica.caught_up()  # this test's empty tables, on the standby too
        database = make_url(settings.database_url).database
        yield settings.model_copy(
            update={
                "database_read_url": f"postgresql+asyncpg://postgres@127.0.0.1:5433/{database}",
                "read_after_write_seconds": 30.0,
            }
        )


async def _serve(settings: Settings) -> AsyncIterator[tuple[Server, Clients]]:
    running = await start_server(settings)
    try:
        async with httpx.AsyncClient(base_url=running.base, timeout=30) as http:
            yield running, Clients(http)
    finally:
        await stop_server(running)


@pytest.fixture
async def served(replicated: Settings) -> AsyncIterator[tuple[Server, Clients]]:
    async for pair in _serve(replicated):
        yield pair


async def history(api: Api, thread_id: str) -> list[str]:
    data = await api.gql(HISTORY, {"t": thread_id})
    return [e["node"]["body"] for e in data["thread"]["messages"]["edges"]]


async def thread_ids(api: Api) -> list[str]:
    return [e["node"]["id"] for e in (await api.gql(THREADS))["threads"]["edges"]]


async def found(api: Api, query: str) -> list[str]:
    data = await api.gql(SEARCH, {"q": query})
    return [e["node"]["body"] for e in data["searchMessages"]["edges"]]


async def reads_counted(clients: Clients) -> dict[str, float]:
    """threadline_query_reads_total by database, from /metrics."""
    text = (await clients.http.get("/metrics")).text
    counted = {"replica": 0.0, "primary": 0.0}
    for line in text.splitlines():
        if line.startswith("threadline_query_reads_total{"):
            labels, value = line.rsplit(" ", 1)
            counted[labels.split('"')[1]] = float(value)
    return counted


async def on_standby(settings: Settings, sql: str, *args: object) -> Any:
    return await replica.on_standby(str(make_url(settings.database_url).database), sql, *args)


async def test_history_reads_the_replica_and_a_writer_reads_its_own_write(
    served: tuple[Server, Clients], replicated: Settings
) -> None:
    _, clients = served
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    await factories.send(alice, tid, "before")
    async with replica.paused():
        await factories.send(alice, tid, "during")
        # The standby has not replayed it, and bob (no recent write) reads the standby.
        assert await on_standby(replicated, "SELECT count(*) FROM messages") == 1
        counted = await reads_counted(clients)
        assert await history(bob, tid) == ["before"]
        # alice wrote it a moment ago: her reads go to the primary.
        assert await history(alice, tid) == ["before", "during"]
        assert await reads_counted(clients) == {
            "replica": counted["replica"] + 1,
            "primary": counted["primary"] + 1,
        }
    await replica.caught_up()
    assert await history(bob, tid) == ["before", "during"]


async def test_reads_return_to_the_replica_when_the_window_after_a_write_ends(
    replicated: Settings,
) -> None:
    async for _, clients in _serve(replicated.model_copy(update={"read_after_write_seconds": 2})):
        alice = await clients.user("alice")
        tid = await factories.thread(alice)
        async with replica.paused():
            await factories.send(alice, tid, "during")
            assert await history(alice, tid) == ["during"]
            await asyncio.sleep(2.5)
            assert await history(alice, tid) == []  # the standby, still paused


async def test_a_write_through_one_process_is_read_back_through_another(
    served: tuple[Server, Clients], replicated: Settings
) -> None:
    _, clients = served
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    async for _, elsewhere in _serve(replicated):
        alice_there = Api(elsewhere.http, alice.token, "alice", alice.id)
        bob_there = Api(elsewhere.http, bob.token, "bob", bob.id)
        async with replica.paused():
            await factories.send(alice, tid, "sent through the first process")
            # The second process learns of alice's write through Redis.
            assert await history(alice_there, tid) == ["sent through the first process"]
            assert await history(bob_there, tid) == []


async def test_a_removed_participant_is_refused_while_the_replica_still_lists_them(
    served: tuple[Server, Clients], replicated: Settings
) -> None:
    _, clients = served
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob, title="Secret plans")
    await factories.send(alice, tid, "the zebra plan")
    async with replica.paused():
        await alice.gql(REMOVE, {"t": tid, "u": bob.id})
        still_listed = await on_standby(
            replicated,
            "SELECT count(*) FROM thread_participants WHERE thread_id = $1 AND user_id = $2",
            uuid.UUID(tid),
            uuid.UUID(bob.id),
        )
        assert still_listed == 1
        assert await bob.error(HISTORY, {"t": tid}) == "NOT_FOUND"
        assert tid not in await thread_ids(bob)
        assert await found(bob, "zebra") == []
    await replica.caught_up()
    assert await bob.error(HISTORY, {"t": tid}) == "NOT_FOUND"


async def test_search_and_the_thread_list_read_the_replica(
    served: tuple[Server, Clients],
) -> None:
    _, clients = served
    alice, bob = await clients.users("alice", "bob")
    async with replica.paused():
        tid = await factories.thread(alice, bob, title="Crossing")
        await factories.send(alice, tid, "zebra stripes")
        assert tid not in await thread_ids(bob)
        assert await found(bob, "zebra") == []
        assert tid in await thread_ids(alice)
        assert await found(alice, "zebra") == ["zebra stripes"]
    await replica.caught_up()
    assert tid in await thread_ids(bob)
    assert await found(bob, "zebra") == ["zebra stripes"]


async def test_thread_events_replay_from_the_primary_while_the_replica_lags(
    served: tuple[Server, Clients],
) -> None:
    server, clients = served
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    async with replica.paused():
        await factories.send(alice, tid, "while it lags")
        ws = await GraphQLWS.connect(server.ws_url, bob.token)
        try:
            await ws.subscribe(EVENTS, {"t": tid})
            first = (await ws.next())["payload"]["data"]["threadEvents"]
            assert (first["seq"], first["message"]["body"]) == (1, "while it lags")
            await factories.send(alice, tid, "live")
            second = (await ws.next())["payload"]["data"]["threadEvents"]
            assert (second["seq"], second["message"]["body"]) == (2, "live")
        finally:
            await ws.close()


async def test_an_unreachable_replica_fails_one_query_then_queries_read_the_primary(
    settings: Settings,
) -> None:
    nowhere = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    async for _, clients in _serve(settings.model_copy(update={"database_read_url": nowhere})):
        alice = await clients.user("alice")
        tid = await factories.thread(alice)
        await factories.send(alice, tid, "written to the primary")
        stranger = await clients.user("bob")  # no write of his own: he reads the replica
        assert await stranger.error(THREADS) == "SERVICE_UNAVAILABLE"
        assert await thread_ids(stranger) == []  # the primary, while the replica rests
        assert await history(alice, tid) == ["written to the primary"]


async def test_a_mutation_reads_its_answer_from_the_primary(replicated: Settings) -> None:
    react = """mutation($m: ID!) { addReaction(messageId: $m, emoji: "🎉") {
      reactions { emoji count } } }"""
    reactions = "query($m: ID!) { message(messageId: $m) { reactions { emoji count } } }"
    # No window at all: only the mutation itself keeps its reads on the primary.
    async for _, clients in _serve(replicated.model_copy(update={"read_after_write_seconds": 0})):
        alice = await clients.user("alice")
        tid = await factories.thread(alice)
        message = await factories.send(alice, tid, "party")
        async with replica.paused():
            answer = await alice.gql(react, {"m": message["id"]})
            assert answer["addReaction"]["reactions"] == [{"emoji": "🎉", "count": 1}]
            later = await alice.gql(reactions, {"m": message["id"]})
            assert later["message"]["reactions"] == []  # the paused standby


NODES = """query($t: ID!, $m: ID!) {
  t: node(id: $t) { id ... on Thread { title } }
  m: node(id: $m) { id ... on Message { body } }
}"""


async def test_node_refuses_a_removed_participant_while_the_replica_still_lists_them(
    served: tuple[Server, Clients], replicated: Settings
) -> None:
    """node(id) decides access as every other path does: on the primary, where the
    removal is written, not on the replica that has not replayed it yet."""
    _, clients = served
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob, title="Secret plans")
    mid = (await factories.send(alice, tid, "the zebra plan"))["id"]
    await replica.caught_up()
    assert await bob.gql(NODES, {"t": tid, "m": mid}) == {
        "t": {"id": tid, "title": "Secret plans"},
        "m": {"id": mid, "body": "the zebra plan"},
    }
    async with replica.paused():
        await alice.gql(REMOVE, {"t": tid, "u": bob.id})
        assert await bob.gql(NODES, {"t": tid, "m": mid}) == {"t": None, "m": None}
