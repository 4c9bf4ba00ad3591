"""presence, viewerEvents and receipts over a real graphql-transport-ws connection."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy import update

from tests import factories
from tests.conftest import DEV_SECRET, Clients, Server, start_server, stop_server
from tests.live import listening, new_listener, watch_activity
from tests.wsclient import GraphQLWS
from threadline.auth.tokens import mint_dev_token
from threadline.config import Settings
from threadline.graphql_app import BEAT_TICKS
from threadline.models import User
from threadline.realtime.channels import thread_channel, user_channel
from threadline.services import sessions

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


async def test_presence_takes_at_most_200_users(server: Server, clients: Clients) -> None:
    alice, bob = await clients.users("alice", "bob")
    ws = await GraphQLWS.connect(server.ws_url, alice.token)
    strangers = [str(uuid.uuid4()) for _ in range(200)]
    await ws.subscribe(PRESENCE, {"u": [bob.id, *strangers]})
    refused = (await ws.next())["payload"]
    assert (refused["data"], refused["errors"][0]["extensions"]["code"]) == (None, "BAD_USER_INPUT")
    assert (await ws.next())["type"] == "complete"
    # 200, a repeated id counted once: bob's state comes first.
    await ws.subscribe(PRESENCE, {"u": [bob.id, bob.id, *strangers[:199]]})
    assert (await data(ws, "presence"))["user"]["username"] == "bob"
    await ws.close()


async def test_presence_of_no_known_user_waits_quietly_instead_of_failing(
    server: Server, clients: Clients
) -> None:
    """Rule: a stream of the given users' changes; with none of them a user there is
    nothing to show yet, which is no error. Evidence: presence(userIds: []), or only ids
    of deleted users, answered INTERNAL_SERVER_ERROR and the server logged a traceback
    ("subscribe to at least one channel")."""
    alice, bob = await clients.user("alice"), await clients.user("bob")
    watcher = await GraphQLWS.connect(server.ws_url, alice.token)
    quiet = [await watcher.subscribe(PRESENCE, {"u": ids}) for ids in ([], [str(uuid.uuid4())])]
    # Answered in turn after them: whatever the first two sent is read before.
    for _ in range(2):
        asked = await watcher.subscribe(PRESENCE, {"u": [bob.id]})
        message = await watcher.next()
        assert message["id"] == asked, message
        assert message["payload"]["data"]["presence"]["user"]["username"] == "bob"
    for op_id in quiet:  # still running: a client ends them as any other
        await watcher.conn.send(json.dumps({"id": op_id, "type": "complete"}))
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


async def test_a_read_marker_moved_elsewhere_reaches_the_readers_viewer_events(
    server: Server, clients: Clients
) -> None:
    # The reader's other tabs and devices show the new unread count.
    alice, bob = await clients.user("alice"), await clients.user("bob")
    tid = await factories.thread(alice, bob)
    sent = await factories.send(alice, tid, "read me")
    ws = await GraphQLWS.connect(server.ws_url, bob.token)
    ready = new_listener(server, user_channel(bob.id))
    await ws.subscribe(VIEWER)
    await ws.until(ready)
    await bob.gql(
        "mutation($t: ID!, $s: Int!) { markRead(threadId: $t, seq: $s) { id } }",
        {"t": tid, "s": sent["seq"]},
    )
    event = await data(ws, "viewerEvents")
    assert event["__typename"] == "ThreadActivityForViewer"
    assert (event["thread"]["id"], event["thread"]["unreadCount"]) == (tid, 0)
    await ws.close()


async def test_receipts_are_announced_when_markers_move(server: Server, clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    tid = await factories.thread(alice, bob)
    sent = await factories.send(alice, tid, "read me")
    ws = await GraphQLWS.connect(server.ws_url, alice.token)
    await watch_activity(server, ws, ACTIVITY, tid)
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
    # The server's own beat renews a part each second during its first upkeep beat
    # (the first 8 s): on a slow machine it ran between the ticks below and renewed
    # some sockets twice (CI: 18 renewals for 16). The ticks here are the only ones.
    beats = [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "").endswith(".maintain_connections")
    ]
    assert len(beats) == 1
    beats[0].cancel()
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
    # A live socket's row closed by mistake (its process was reaped after a stall,
    # then beat again) is open again after the next touch.
    state = next(iter(server.app.state.graphql.connections.values())).state
    await sessions.close_sessions(server.runtime.db, [state.session_id])
    gone = "{ mySessions { disconnectedAt } }"
    assert (await alice.gql(gone))["mySessions"][0]["disconnectedAt"] is not None
    await server.app.state.graphql._maintain(touch_sessions=True)
    assert (await alice.gql(gone))["mySessions"][0]["disconnectedAt"] is None

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


@pytest.mark.parametrize(
    ("change", "code"), [({"role": "MEMBER"}, 4403), ({"deleted_at": datetime.now(UTC)}, 4401)]
)
async def test_the_upkeep_closes_sockets_whose_user_changed_when_the_signal_was_lost(
    server: Server, clients: Clients, change: dict[str, Any], code: int
) -> None:
    """Rule: a demoted or deleted user's sockets close on every process (CONTRACT: 4401 for
    a deleted user; a role change reconnects). Evidence: the close is a signal through
    Redis; with it lost (a failed publish, a listener reconnecting, `threadline users
    set-role` run without REDIS_URL) a demoted ADMIN's socket went on streaming threads
    they are not in until their token went stale. Here the database changes with no
    signal at all, and the beat's upkeep closes the socket."""
    admin = await clients.user("root_admin")

    async def set_users(**values: Any) -> None:
        async with server.runtime.db.engine.begin() as connection:
            await connection.execute(
                update(User).where(User.id == uuid.UUID(admin.id)).values(**values)
            )

    await set_users(role="ADMIN")
    server.runtime.forget_viewers(user_ids={uuid.UUID(admin.id)})
    ws = await GraphQLWS.connect(server.ws_url, admin.token)
    assert (await admin.gql("{ me { role } }"))["me"]["role"] == "ADMIN"
    await server.app.state.graphql._maintain(touch_sessions=True)  # unchanged: stays open
    assert server.app.state.graphql.connections
    await set_users(**change)
    await server.app.state.graphql._maintain(touch_sessions=True)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.next(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code


async def test_a_peer_that_stops_answering_pings_is_closed_and_goes_offline(
    settings: Settings,
) -> None:
    """uvicorn's WebSocket pings are the sockets' keep-alive: a peer whose network
    path died answers none, and its socket, presence and session row end."""
    server = await start_server(settings, ws_ping_interval=0.2, ws_ping_timeout=0.3)
    try:
        async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
            alice, bob = await Clients(http).users("alice", "bob")
            host, port = server.base.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                b"GET /graphql HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
            )
            assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
            init = json.dumps({"type": "connection_init", "payload": {"token": bob.token}})
            writer.write(masked_text_frame(init.encode()))
            opcodes = []
            # Read every frame, answer none: the pings go unanswered.
            while frame := await read_frame(reader):
                opcodes.append(frame[0])
            assert 0x9 in opcodes  # a ping came
            assert opcodes[-1] == 0x8  # then the server closed the socket
            writer.close()
            # The server's side of the close (session row, presence) runs after it.
            for _ in range(100):
                status = (await alice.gql(USER_PRESENCE, {"u": bob.id}))["user"]["presence"]
                if status["status"] == "OFFLINE":
                    break
                await asyncio.sleep(0.05)
            assert status["status"] == "OFFLINE"
            assert not server.app.state.graphql.connections
            sessions = (await bob.gql("{ mySessions { disconnectedAt } }"))["mySessions"]
            assert sessions[0]["disconnectedAt"] is not None
    finally:
        await stop_server(server)


def masked_text_frame(payload: bytes) -> bytes:
    """One final text frame as a client sends it (masked; payload under 64 KiB)."""
    mask = os.urandom(4)
    size = (
        bytes([0x80 | len(payload)]) if len(payload) < 126 else b"\xfe" + len(payload).to_bytes(2)
    )
    return b"\x81" + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes] | None:
    """(opcode, payload) of the server's next frame, or None at the end of the stream."""
    try:
        head = await asyncio.wait_for(reader.readexactly(2), 10)
    except asyncio.IncompleteReadError:
        return None
    size = head[1] & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2))
    elif size == 127:
        size = int.from_bytes(await reader.readexactly(8))
    return head[0] & 0x0F, await reader.readexactly(size)
