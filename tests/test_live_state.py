"""presence, viewerEvents and receipts over a real graphql-transport-ws connection."""

from __future__ import annotations

import asyncio
from typing import Any

from tests import factories
from tests.conftest import Clients, Server
from tests.wsclient import GraphQLWS

PRESENCE = """
subscription($u: [ID!]!) { presence(userIds: $u) { user { username } presence { status } } }
"""
VIEWER = """
subscription { viewerEvents {
  __typename
  ... on ThreadActivityForViewer { thread { id lastSeq unreadCount lastMessage { body } } }
  ... on NotificationCreated { notification { kind actor { username } } }
  ... on ThreadMembershipChanged { threadId role joined: thread { title } }
} }
"""
ACTIVITY = """
subscription($t: ID!) { threadActivity(threadId: $t) {
  __typename ... on ReceiptChanged { user { username } lastReadSeq lastDeliveredSeq } } }
"""


async def data(ws: GraphQLWS, field: str, timeout: float = 10) -> Any:
    message = await ws.next(timeout)
    assert message["type"] == "next", message
    assert not message["payload"].get("errors"), message
    return message["payload"]["data"][field]


async def test_presence_shows_online_away_and_offline(server: Server, clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    watcher = await GraphQLWS.connect(server.ws_url, alice.token)
    await watcher.subscribe(PRESENCE, {"u": [bob.id]})
    first = await data(watcher, "presence")
    assert (first["user"]["username"], first["presence"]["status"]) == ("bob", "OFFLINE")
    bob_ws = await GraphQLWS.connect(server.ws_url, bob.token)
    assert (await data(watcher, "presence"))["presence"]["status"] == "ONLINE"
    await bob.gql("mutation { setPresence(status: AWAY) { status } }")
    assert (await data(watcher, "presence"))["presence"]["status"] == "AWAY"
    await bob.gql("mutation { setPresence(status: ONLINE) { status } }")
    assert (await data(watcher, "presence"))["presence"]["status"] == "ONLINE"
    await bob_ws.close()
    assert (await data(watcher, "presence"))["presence"]["status"] == "OFFLINE"
    await watcher.close()


async def test_viewer_events_follow_threads_notifications_and_membership(
    server: Server, clients: Clients
) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    ws = await GraphQLWS.connect(server.ws_url, bob.token)
    await ws.subscribe(VIEWER)
    await asyncio.sleep(0.2)
    tid = await factories.thread(alice, bob, title="Plans")
    seen: dict[str, Any] = {}
    while "ThreadMembershipChanged" not in seen or "NotificationCreated" not in seen:
        event = await data(ws, "viewerEvents")
        seen[event["__typename"]] = event
    assert seen["ThreadMembershipChanged"]["role"] == "MEMBER"
    assert seen["ThreadMembershipChanged"]["joined"]["title"] == "Plans"
    assert seen["NotificationCreated"]["notification"]["kind"] == "ADDED_TO_THREAD"
    await asyncio.sleep(0.3)  # the stream re-subscribes with the new thread
    await factories.send(alice, tid, "lunch?")
    event = await data(ws, "viewerEvents")
    while event["__typename"] != "ThreadActivityForViewer":
        event = await data(ws, "viewerEvents")
    assert event["thread"]["id"] == tid
    assert event["thread"]["unreadCount"] == 1
    assert event["thread"]["lastMessage"]["body"] == "lunch?"
    await ws.close()


async def test_receipts_are_announced_when_markers_move(server: Server, clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    tid = await factories.thread(alice, bob)
    sent = await factories.send(alice, tid, "read me")
    ws = await GraphQLWS.connect(server.ws_url, alice.token)
    await ws.subscribe(ACTIVITY, {"t": tid})
    await asyncio.sleep(0.2)
    await bob.gql(
        "mutation($t: ID!, $s: Int!) { markRead(threadId: $t, seq: $s) { id } }",
        {"t": tid, "s": sent["seq"]},
    )
    receipt = await data(ws, "threadActivity")
    assert receipt["user"]["username"] == "bob"
    assert receipt["lastReadSeq"] == receipt["lastDeliveredSeq"] == sent["seq"]
    await ws.close()
