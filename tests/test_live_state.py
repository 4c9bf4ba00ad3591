"""presence, viewerEvents and receipts over a real graphql-transport-ws connection."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
import websockets

from tests import factories
from tests.conftest import DEV_SECRET, Clients, Server
from tests.live import listening, new_listener, until
from tests.wsclient import GraphQLWS
from threadline.auth.tokens import mint_dev_token
from threadline.graphql_app import BEAT_TICKS
from threadline.realtime.channels import activity_channel, thread_channel, user_channel

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
    ready = new_listener(server, user_channel(bob.id))
    await ws.subscribe(VIEWER)
    await ws.until(ready)
    tid = await factories.thread(alice, bob, title="Plans")
    seen: dict[str, Any] = {}
    while "ThreadMembershipChanged" not in seen or "NotificationCreated" not in seen:
        event = await data(ws, "viewerEvents")
        seen[event["__typename"]] = event
    assert seen["ThreadMembershipChanged"]["role"] == "MEMBER"
    assert seen["ThreadMembershipChanged"]["joined"]["title"] == "Plans"
    assert seen["NotificationCreated"]["notification"]["kind"] == "ADDED_TO_THREAD"
    await ws.until(listening(server, thread_channel(tid)))  # the stream follows the new thread
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
    ready = new_listener(server, activity_channel(tid))
    await ws.subscribe(ACTIVITY, {"t": tid})
    await ws.until(ready)
    await bob.gql(
        "mutation($t: ID!, $s: Int!) { markRead(threadId: $t, seq: $s) { id } }",
        {"t": tid, "s": sent["seq"]},
    )
    receipt = await data(ws, "threadActivity")
    assert receipt["user"]["username"] == "bob"
    assert receipt["lastReadSeq"] == receipt["lastDeliveredSeq"] == sent["seq"]
    await ws.close()


# -------------------------------------- the maintenance beat (every 8 s in service)


USER_PRESENCE = "query($u: ID!) { user(id: $u) { presence { status } } }"


async def test_the_beat_renews_leases_so_a_long_connection_stays_online(
    server: Server, clients: Clients
) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    server.runtime.presence.lease_seconds = 1.0  # the 20 s lease, shortened for the test
    bob_ws = await GraphQLWS.connect(server.ws_url, bob.token)
    for _ in range(3):  # 1.8 s in all: the first lease alone would have lapsed
        await asyncio.sleep(0.6)
        await server.app.state.graphql._maintain(touch_sessions=False)
    status = (await alice.gql(USER_PRESENCE, {"u": bob.id}))["user"]["presence"]["status"]
    assert status == "ONLINE"
    await bob_ws.close()
    await asyncio.sleep(1.2)
    status = (await alice.gql(USER_PRESENCE, {"u": bob.id}))["user"]["presence"]["status"]
    assert status == "OFFLINE"


async def test_the_beats_ticks_share_the_sockets_out_each_renewed_once_a_beat(
    server: Server, clients: Clients
) -> None:
    bob = await clients.user("bob")
    sockets = [await GraphQLWS.connect(server.ws_url, bob.token) for _ in range(16)]
    held = server.runtime.presence._leases[uuid.UUID(bob.id)]
    assert len(held) == 16
    renewed: list[set[str]] = []
    for part in range(BEAT_TICKS):
        before = dict(held)
        await asyncio.sleep(0.01)  # the clock moves: a renewal changes the expiry
        await server.app.state.graphql._maintain(part, touch_sessions=False)
        renewed.append({c for c, expiry in held.items() if expiry != before[c]})
    # Each socket in exactly one tick, none left out; not all in one burst.
    assert sum(len(r) for r in renewed) == 16
    assert set().union(*renewed) == set(held)
    assert max(len(r) for r in renewed) < 16
    for ws in sockets:
        await ws.close()


async def test_the_beat_touches_sessions_and_closes_sockets_whose_token_went_stale(
    server: Server, clients: Clients
) -> None:
    alice = await clients.user("alice")
    ws = await GraphQLWS.connect(server.ws_url, alice.token)
    before = (await alice.gql("{ mySessions { lastSeenAt } }"))["mySessions"][0]["lastSeenAt"]
    await asyncio.sleep(0.05)
    await server.app.state.graphql._maintain(touch_sessions=True)
    after = (await alice.gql("{ mySessions { lastSeenAt } }"))["mySessions"][0]["lastSeenAt"]
    assert after > before

    # A token that expired longer ago than WS_REAUTH_SECONDS (here 0) closes with 4403.
    server.runtime.settings.ws_reauth_seconds = 0
    short = mint_dev_token(DEV_SECRET, "dev_alice", "alice", ttl_seconds=1)
    stale = await GraphQLWS.connect(server.ws_url, short)
    await asyncio.sleep(1.5)
    await server.app.state.graphql._maintain(touch_sessions=False)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await stale.next(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    await ws.close()


async def test_the_server_pings_every_open_graphql_transport_ws_socket(
    server: Server, clients: Clients
) -> None:
    alice = await clients.user("alice")
    ws = await GraphQLWS.connect(server.ws_url, alice.token)
    handlers = list(server.app.state.graphql.pinged)
    assert len(handlers) == 1
    await asyncio.gather(*(h.ping() for h in handlers))  # what every other beat does
    message = json.loads(await asyncio.wait_for(ws.conn.recv(), 5))
    assert message == {"type": "ping"}
    await ws.close()
    # The server's side of the close runs after the client's.
    await until(lambda: not server.app.state.graphql.pinged)
