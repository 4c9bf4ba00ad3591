"""Queries and mutations over graphql-transport-ws: one `next` with the result, then
`complete`, the same as over HTTP."""

from __future__ import annotations

from tests import factories
from tests.conftest import Clients, Server
from tests.wsclient import GraphQLWS


async def test_a_query_over_the_websocket_answers_once_and_completes(
    server: Server, clients: Clients
) -> None:
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob, title="Plans")
    ws = await GraphQLWS.connect(server.ws_url, bob.token)
    op = await ws.subscribe(
        "query($t: ID!) { me { username } thread(threadId: $t) { title } }", {"t": tid}
    )
    answer = await ws.next()
    assert (answer["type"], answer["id"]) == ("next", op), answer
    assert answer["payload"] == {"data": {"me": {"username": "bob"}, "thread": {"title": "Plans"}}}
    done = await ws.next()
    assert (done["type"], done["id"]) == ("complete", op)
    await ws.close()


async def test_a_mutation_over_the_websocket_is_applied_and_completes(
    server: Server, clients: Clients
) -> None:
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    ws = await GraphQLWS.connect(server.ws_url, bob.token)
    op = await ws.subscribe(
        "mutation($i: SendMessageInput!) {"
        " sendMessage(input: $i) { seq body author { username } } }",
        {"i": {"threadId": tid, "body": "over the socket"}},
    )
    answer = await ws.next()
    assert (answer["type"], answer["id"]) == ("next", op), answer
    sent = answer["payload"]["data"]["sendMessage"]
    assert sent == {"seq": 1, "body": "over the socket", "author": {"username": "bob"}}
    assert (await ws.next())["type"] == "complete"
    # Stored: the same message over HTTP.
    page = await alice.gql(
        "query($t: ID!) { thread(threadId: $t) { messages(last: 5) { edges { node { body } } } } }",
        {"t": tid},
    )
    assert [e["node"]["body"] for e in page["thread"]["messages"]["edges"]] == ["over the socket"]
    await ws.close()


async def test_a_refused_mutation_over_the_websocket_gets_its_error_code(
    server: Server, clients: Clients
) -> None:
    alice, bob, mallory = await clients.users("alice", "bob", "mallory")
    tid = await factories.thread(alice, bob)
    ws = await GraphQLWS.connect(server.ws_url, mallory.token)
    await ws.subscribe(
        "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id } }",
        {"i": {"threadId": tid, "body": "let me in"}},
    )
    answer = await ws.next()
    errors = answer["payload"] if answer["type"] == "error" else answer["payload"]["errors"]
    assert errors[0]["extensions"]["code"] == "NOT_FOUND", answer
    await ws.close()


async def test_a_client_gone_while_its_results_are_sent_is_no_server_error(
    server: Server, clients: Clients
) -> None:
    # The autouse server-log check fails this test if the server logs a traceback
    # for a socket that went away mid-send (strawberry's worker would).
    alice = await clients.user("alice")
    assert alice.token is not None
    tid = await factories.thread(alice)
    for i in range(40):
        await factories.send(alice, tid, f"m{i} " + "x" * 3000)
    per_viewer = (
        "subscription($t: ID!) { threadEvents(threadId: $t, afterSeq: 0) {"
        " seq ... on MessageCreated { message { body reactions { reactedByMe } } } } }"
    )
    for _ in range(5):
        ws = await GraphQLWS.connect(server.ws_url, alice.token)
        await ws.subscribe(per_viewer, {"t": tid})
        await ws.next()
        ws.conn.transport.abort()  # no close frame: the replay is still being sent
    # The server still serves, and said nothing alarming (checked after the test).
    assert (await alice.gql("{ me { id } }"))["me"]["id"] == alice.id
