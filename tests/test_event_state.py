"""Live state is provable: the state from a first query plus the events received
equals a fresh query afterwards, for every kind of thread event."""

from __future__ import annotations

from typing import Any

from tests import factories
from tests.conftest import Api, Clients, Server
from tests.wsclient import GraphQLWS

STATE = """
query($t: ID!) { thread(threadId: $t) {
  title description lastSeq
  participants(first: 100) { edges { node { role user { id } } } }
  messages(last: 100) { edges { node {
    id body deletedAt pinned editedAt reactions { emoji count users { id } } } } }
} }
"""
EVENTS = """
subscription($t: ID!, $after: Int) { threadEvents(threadId: $t, afterSeq: $after) {
  __typename seq
  ... on MessageCreated { message { id body pinned editedAt deletedAt } }
  ... on MessageEdited { message { id body editedAt } }
  ... on MessageDeleted { messageId }
  ... on ReactionChanged { messageId reactions { emoji count users { id } } }
  ... on MessagePinned { message { id } pinned }
  ... on ParticipantChanged { user { id } role }
  ... on ThreadUpdated { thread { title description } }
} }
"""


def state_of(thread: dict[str, Any]) -> dict[str, Any]:
    return {
        "title": thread["title"],
        "description": thread["description"],
        "participants": {
            e["node"]["user"]["id"]: e["node"]["role"] for e in thread["participants"]["edges"]
        },
        "messages": {
            m["id"]: {
                "body": m["body"],
                "deleted": m["deletedAt"] is not None,
                "pinned": m["pinned"],
                "edited": m["editedAt"] is not None,
                "reactions": [
                    (r["emoji"], r["count"], sorted(u["id"] for u in r["users"]))
                    for r in m["reactions"]
                ],
            }
            for m in (e["node"] for e in thread["messages"]["edges"])
        },
    }


def apply(state: dict[str, Any], event: dict[str, Any]) -> None:
    kind = event["__typename"]
    messages = state["messages"]
    if kind == "MessageCreated":
        m = event["message"]
        messages[m["id"]] = {
            "body": m["body"],
            "deleted": False,
            "pinned": False,
            "edited": False,
            "reactions": [],
        }
    elif kind == "MessageEdited":
        messages[event["message"]["id"]].update(body=event["message"]["body"], edited=True)
    elif kind == "MessageDeleted":
        messages[event["messageId"]].update(body="", deleted=True, pinned=False, reactions=[])
    elif kind == "ReactionChanged":
        messages[event["messageId"]]["reactions"] = [
            (r["emoji"], r["count"], sorted(u["id"] for u in r["users"]))
            for r in event["reactions"]
        ]
    elif kind == "MessagePinned":
        messages[event["message"]["id"]]["pinned"] = event["pinned"]
    elif kind == "ParticipantChanged":
        if event["role"] is None:
            state["participants"].pop(event["user"]["id"], None)
        else:
            state["participants"][event["user"]["id"]] = event["role"]
    elif kind == "ThreadUpdated":
        state["title"] = event["thread"]["title"]
        state["description"] = event["thread"]["description"]


async def mutate(alice: Api, bob: Api, carol: Api, tid: str) -> None:
    first = await factories.send(alice, tid, "first")
    second = await factories.send(bob, tid, "second")
    await factories.send(bob, tid, "reply", parentId=first["id"])
    await alice.gql(
        'mutation($m: ID!) { editMessage(messageId: $m, body: "first, edited") { id } }',
        {"m": first["id"]},
    )
    await bob.gql(
        'mutation($m: ID!) { addReaction(messageId: $m, emoji: "👍") { id } }', {"m": first["id"]}
    )
    await alice.gql(
        'mutation($m: ID!) { addReaction(messageId: $m, emoji: "👍") { id } }', {"m": first["id"]}
    )
    await alice.gql(
        'mutation($m: ID!) { addReaction(messageId: $m, emoji: "🎉") { id } }', {"m": first["id"]}
    )
    await bob.gql(
        'mutation($m: ID!) { removeReaction(messageId: $m, emoji: "👍") { id } }',
        {"m": first["id"]},
    )
    await alice.gql(
        "mutation($m: ID!) { pinMessage(messageId: $m, pinned: true) { id } }", {"m": first["id"]}
    )
    await alice.gql(
        "mutation($m: ID!) { pinMessage(messageId: $m, pinned: true) { id } }", {"m": second["id"]}
    )
    await bob.gql("mutation($m: ID!) { deleteMessage(messageId: $m) { id } }", {"m": second["id"]})
    await alice.gql(
        "mutation($t: ID!) { updateThread(threadId: $t, "
        'input: {title: "Renamed", description: "now with a topic"}) { id } }',
        {"t": tid},
    )
    await alice.gql(
        "mutation($t: ID!, $u: ID!) { addParticipant(threadId: $t, userId: $u) { role } }",
        {"t": tid, "u": carol.id},
    )
    await alice.gql(
        "mutation($t: ID!, $u: ID!) "
        "{ setParticipantRole(threadId: $t, userId: $u, role: ADMIN) { role } }",
        {"t": tid, "u": bob.id},
    )
    await factories.send(carol, tid, "hi all")
    await carol.gql("mutation($t: ID!) { leaveThread(threadId: $t) }", {"t": tid})


async def test_first_query_plus_events_equals_a_fresh_query(
    server: Server, clients: Clients
) -> None:
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    tid = await factories.thread(alice, bob)
    await factories.send(alice, tid, "before the subscription")
    initial = (await alice.gql(STATE, {"t": tid}))["thread"]
    state = state_of(initial)
    ws = await GraphQLWS.connect(server.ws_url, alice.token)
    # From the seq the first query saw: nothing to wait for, nothing lost.
    await ws.subscribe(EVENTS, {"t": tid, "after": initial["lastSeq"]})
    await mutate(alice, bob, carol, tid)
    final = (await alice.gql(STATE, {"t": tid}))["thread"]
    seq = initial["lastSeq"]
    kinds = set()
    while seq < final["lastSeq"]:
        event = (await ws.next())["payload"]["data"]["threadEvents"]
        assert event["seq"] == seq + 1
        seq = event["seq"]
        kinds.add(event["__typename"])
        apply(state, event)
    await ws.close()
    assert kinds == {
        "MessageCreated",
        "MessageEdited",
        "MessageDeleted",
        "ReactionChanged",
        "MessagePinned",
        "ParticipantChanged",
        "ThreadUpdated",
    }
    assert state == state_of(final)
