"""threadEvents over a real graphql-transport-ws connection: order, resume, removal, auth."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import websockets

from tests import factories
from tests.conftest import Clients, Server
from tests.live import watch_activity
from tests.wsclient import GraphQLWS

EVENTS = """
subscription($t: ID!, $after: Int) {
  threadEvents(threadId: $t, afterSeq: $after) {
    __typename seq threadId actor { username }
    ... on MessageCreated { message { id body author { username } } }
    ... on ParticipantChanged { user { username } role }
  }
}
"""
ACTIVITY = """
subscription($t: ID!) { threadActivity(threadId: $t) {
  __typename ... on TypingChanged { isTyping user { username } } } }
"""


async def test_live_messages_arrive_in_seq_order(server: Server, clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    tid = await factories.thread(alice, bob)
    ws = await GraphQLWS.connect(server.ws_url, bob.token)
    # From the thread's lastSeq (0): nothing is lost while the server registers it.
    await ws.subscribe(EVENTS, {"t": tid, "after": 0})
    for i in range(10):
        await factories.send(alice, tid, f"m{i}")
    got = [(await ws.next())["payload"]["data"]["threadEvents"] for _ in range(10)]
    assert [e["seq"] for e in got] == list(range(1, 11))
    assert [e["message"]["body"] for e in got] == [f"m{i}" for i in range(10)]
    assert got[0]["message"]["author"]["username"] == "alice"
    await ws.close()


async def test_resume_with_after_seq_delivers_exactly_what_was_missed(
    server: Server, clients: Clients
) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    tid = await factories.thread(alice, bob)
    await factories.send(alice, tid, "seen")
    for i in range(50):
        await factories.send(alice, tid, f"missed {i}")
    ws = await GraphQLWS.connect(server.ws_url, bob.token)
    await ws.subscribe(EVENTS, {"t": tid, "after": 1})
    got = [(await ws.next())["payload"]["data"]["threadEvents"] for _ in range(50)]
    assert [e["seq"] for e in got] == list(range(2, 52))
    await factories.send(alice, tid, "live")
    live = (await ws.next())["payload"]["data"]["threadEvents"]
    assert (live["seq"], live["message"]["body"]) == (52, "live")
    with pytest.raises(TimeoutError):
        await ws.next(timeout=0.5)
    await ws.close()


async def test_a_reader_that_goes_mid_replay_does_not_stop_another_replaying_beside_it(
    server: Server, clients: Clients
) -> None:
    """Clients resuming after a restart replay the same events side by side, and share
    each frame's rendering; one of them closing its socket mid-render must not end the
    others' subscriptions without a word."""
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    total = 150
    await asyncio.gather(*(factories.send(alice, tid, f"m{i}") for i in range(total)))
    leaving = await GraphQLWS.connect(server.ws_url, bob.token)
    staying = await GraphQLWS.connect(server.ws_url, bob.token)
    for ws in (leaving, staying):
        await ws.subscribe(EVENTS, {"t": tid, "after": 0})
    for _ in range(30):
        await leaving.next()
    await leaving.conn.close()  # mid-replay: its task is cancelled in a render
    seqs = [(await staying.next(timeout=5))["payload"]["data"]["threadEvents"]["seq"]]
    while seqs[-1] < total:
        seqs.append((await staying.next(timeout=5))["payload"]["data"]["threadEvents"]["seq"])
    assert seqs == list(range(1, total + 1))
    await staying.close()


async def test_a_removed_participant_stops_receiving(server: Server, clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    tid = await factories.thread(alice, bob)
    ws = await GraphQLWS.connect(server.ws_url, bob.token)
    await ws.subscribe(EVENTS, {"t": tid, "after": 0})
    await alice.gql(
        "mutation($t: ID!, $u: ID!) { removeParticipant(threadId: $t, userId: $u) }",
        {"t": tid, "u": bob.id},
    )
    event = (await ws.next())["payload"]["data"]["threadEvents"]
    assert event["__typename"] == "ParticipantChanged" and event["role"] is None
    assert (await ws.next())["type"] == "complete"
    await factories.send(alice, tid, "after removal")
    with pytest.raises(TimeoutError):
        await ws.next(timeout=0.5)
    await ws.close()


async def test_an_outsider_cannot_subscribe(server: Server, clients: Clients) -> None:
    alice, mallory = await clients.user("alice"), await clients.user("mallory")
    tid = await factories.thread(alice)
    ws = await GraphQLWS.connect(server.ws_url, mallory.token)
    await ws.subscribe(EVENTS, {"t": tid})
    message = await ws.next()
    assert message["type"] in {"error", "next"}
    errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
    assert errors[0]["extensions"]["code"] == "NOT_FOUND"
    await ws.close()


async def test_a_bad_token_closes_the_socket_with_4403(server: Server) -> None:
    conn = await websockets.connect(server.ws_url, subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
    await conn.send('{"type":"connection_init","payload":{"authorization":"Bearer nope"}}')
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(conn.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


async def test_typing_is_announced_and_expires_by_itself(server: Server, clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    tid = await factories.thread(alice, bob)
    # The 6 s window, shortened for the test; long enough that the second call
    # lands inside it on a loaded machine.
    server.runtime.typing.window = 2.0
    ws = await GraphQLWS.connect(server.ws_url, bob.token)
    await watch_activity(server, ws, ACTIVITY, tid)
    typing = "mutation($t: ID!) { setTyping(threadId: $t, isTyping: true) }"
    await alice.gql(typing, {"t": tid})
    await alice.gql(typing, {"t": tid})  # inside the window: nothing new
    first = (await ws.next())["payload"]["data"]["threadActivity"]
    assert (first["isTyping"], first["user"]["username"]) == (True, "alice")
    second = (await ws.next(timeout=8))["payload"]["data"]["threadActivity"]
    assert second["isTyping"] is False
    await ws.close()


async def test_typing_expires_six_seconds_after_the_last_true_not_the_first(
    server: Server, clients: Clients
) -> None:
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    assert server.runtime.typing.window == 6.0
    server.runtime.typing.window = 2.0  # shortened for the test, as above
    ws = await GraphQLWS.connect(server.ws_url, bob.token)
    await watch_activity(server, ws, ACTIVITY, tid)
    typing = "mutation($t: ID!) { setTyping(threadId: $t, isTyping: true) }"
    await alice.gql(typing, {"t": tid})
    assert (await ws.next())["payload"]["data"]["threadActivity"]["isTyping"] is True
    await asyncio.sleep(1.5)
    extended = time.monotonic()
    await alice.gql(typing, {"t": tid})  # 1.5 s in: the window starts again from here
    stopped = (await ws.next(timeout=8))["payload"]["data"]["threadActivity"]
    assert stopped["isTyping"] is False
    assert time.monotonic() - extended >= 1.9
    await ws.close()


async def test_my_sessions_lists_the_live_connection(server: Server, clients: Clients) -> None:
    alice = await clients.user("alice")
    ws = await GraphQLWS.connect(server.ws_url, alice.token)
    sessions = (await alice.gql("{ mySessions { id disconnectedAt } }"))["mySessions"]
    assert len(sessions) == 1 and sessions[0]["disconnectedAt"] is None
    await ws.close()


async def test_the_legacy_graphql_ws_protocol_streams_events_in_order(
    server: Server, clients: Clients
) -> None:
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    conn = await websockets.connect(server.ws_url, subprotocols=["graphql-ws"])  # type: ignore[list-item]
    assert conn.subprotocol == "graphql-ws"
    init = {"type": "connection_init", "payload": {"authorization": f"Bearer {bob.token}"}}
    await conn.send(json.dumps(init))
    assert json.loads(await asyncio.wait_for(conn.recv(), 10))["type"] == "connection_ack"
    variables = {"t": tid, "after": 0}
    start = {"type": "start", "id": "7", "payload": {"query": EVENTS, "variables": variables}}
    await conn.send(json.dumps(start))
    for i in range(3):
        await factories.send(alice, tid, f"old {i}")
    got = []
    while len(got) < 3:
        message = json.loads(await asyncio.wait_for(conn.recv(), 10))
        if message["type"] == "ka":
            continue
        assert (message["type"], message["id"]) == ("data", "7"), message
        got.append(message["payload"]["data"]["threadEvents"])
    assert [(e["seq"], e["message"]["body"]) for e in got] == [
        (1, "old 0"),
        (2, "old 1"),
        (3, "old 2"),
    ]
    await conn.close()


async def test_a_viewer_dependent_selection_is_rendered_for_each_subscriber(
    server: Server, clients: Clients
) -> None:
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    query = """
    subscription($t: ID!) { threadEvents(threadId: $t, afterSeq: 0) {
      seq ... on ReactionChanged { reactions { emoji reactedByMe } } } }
    """
    sockets = {
        name: await GraphQLWS.connect(server.ws_url, api.token)
        for name, api in [("alice", alice), ("bob", bob)]
    }
    for ws in sockets.values():
        await ws.subscribe(query, {"t": tid})
    message = await factories.send(alice, tid, "react to me")
    await bob.gql(
        'mutation($m: ID!) { addReaction(messageId: $m, emoji: "👍") { id } }', {"m": message["id"]}
    )
    for name, ws in sockets.items():
        await ws.next()  # the message itself
        reactions = (await ws.next())["payload"]["data"]["threadEvents"]["reactions"]
        assert reactions == [{"emoji": "👍", "reactedByMe": name == "bob"}]
    for ws in sockets.values():
        await ws.close()


async def test_deleting_the_thread_sends_thread_deleted_then_ends_every_subscription(
    server: Server, clients: Clients
) -> None:
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    await factories.send(alice, tid, "last words")
    query = """subscription($t: ID!, $after: Int) { threadEvents(threadId: $t, afterSeq: $after) {
      __typename seq threadId actor { username } at } }"""
    sockets = [await GraphQLWS.connect(server.ws_url, api.token) for api in (alice, bob)]
    for ws in sockets:
        await ws.subscribe(query, {"t": tid, "after": 1})
    await alice.gql("mutation($t: ID!) { deleteThread(threadId: $t) }", {"t": tid})
    for ws in sockets:
        event = (await ws.next())["payload"]["data"]["threadEvents"]
        assert event["__typename"] == "ThreadDeleted"
        assert (event["seq"], event["threadId"], event["actor"]) == (2, tid, {"username": "alice"})
        assert (await ws.next())["type"] == "complete"
    # The thread is gone: a new subscription is refused, a resuming one too.
    again = await sockets[1].subscribe(query, {"t": tid, "after": 0})
    refused = await sockets[1].next()
    assert refused["id"] == again and refused["type"] in {"error", "next"}
    errors = refused["payload"] if refused["type"] == "error" else refused["payload"]["errors"]
    assert errors[0]["extensions"]["code"] == "NOT_FOUND"
    for ws in sockets:
        await ws.close()
