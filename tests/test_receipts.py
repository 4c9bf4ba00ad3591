"""Read and delivery receipts: markers move forward only, unread counts, status, readBy."""

from __future__ import annotations

import asyncio
import gc
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from select import POLLOUT, poll
from typing import Any

import pytest
import websockets
from sqlalchemy import make_url, select, text
from starlette.websockets import WebSocketState
from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame, Opcode

from tests import factories
from tests.conftest import BACKEND, Api, Clients, Server, ServerErrors
from tests.deployment import Outage
from tests.live import listening, new_listener, until, watch_activity
from tests.test_hostile_streams import _uvicorn_protocol
from tests.test_role_changes_live import SET_ROLE, make_owner
from tests.wsclient import GraphQLWS, close_draining
from threadline.config import Settings
from threadline.db import Database, make_engine
from threadline.errors import ServiceUnavailable
from threadline.models import ThreadParticipant
from threadline.realtime import deliveries
from threadline.realtime.broker import BrokerClosed
from threadline.realtime.channels import (
    activity_channel,
    encode_activity,
    thread_channel,
    user_channel,
)
from threadline.realtime.deliveries import DeliveryTracker
from threadline.runtime import Runtime
from threadline.schema.context import Context
from threadline.services import receipts, users
from threadline.services.events import ActivityEvent
from threadline.services.permissions import access_thread
from threadline.services.receipts import mark_delivered_many
from threadline.uvicorn_seam import raw_socket

Key = tuple[uuid.UUID, uuid.UUID]

MARK_READ = "mutation($t: ID!, $s: Int!) { markRead(threadId: $t, seq: $s) { id lastReadSeq } }"
THREAD = "query($t: ID!) { thread(threadId: $t) { lastSeq lastReadSeq unreadCount } }"
FETCH = "query($t: ID!) { messages(threadId: $t, last: 50) { edges { node { id } } } }"
STATUS = """
query($m: ID!) {
  message(messageId: $m) { status readBy(first: 10) { edges { node { id } } } }
}
"""


async def thread_state(api: Api, thread_id: str) -> dict[str, Any]:
    data = await api.gql(THREAD, {"t": thread_id})
    result: dict[str, Any] = data["thread"]
    return result


async def status(api: Api, message_id: str) -> tuple[str, list[str]]:
    message = (await api.gql(STATUS, {"m": message_id}))["message"]
    return message["status"], [e["node"]["id"] for e in message["readBy"]["edges"]]


async def test_mark_read_moves_the_marker_forward_and_never_back(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    for body in ("one", "two", "three"):
        await factories.send(alice, thread_id, body)
    assert (await bob.gql(MARK_READ, {"t": thread_id, "s": 2}))["markRead"]["lastReadSeq"] == 2
    assert (await thread_state(bob, thread_id))["unreadCount"] == 1
    await bob.gql(MARK_READ, {"t": thread_id, "s": 3})
    back = (await bob.gql(MARK_READ, {"t": thread_id, "s": 1}))["markRead"]
    assert back["lastReadSeq"] == 3
    state = await thread_state(bob, thread_id)
    assert (state["lastReadSeq"], state["unreadCount"]) == (3, 0)


async def test_mark_read_past_the_end_stops_at_the_last_seq(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    await factories.send(alice, thread_id)
    await bob.gql(MARK_READ, {"t": thread_id, "s": 1000})
    state = await thread_state(bob, thread_id)
    assert state["lastReadSeq"] == state["lastSeq"]


async def test_unread_count_leaves_out_the_viewers_own_messages(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    await factories.send(alice, thread_id, "a1")
    await factories.send(alice, thread_id, "a2")
    await factories.send(bob, thread_id, "b1")
    assert (await thread_state(bob, thread_id))["unreadCount"] == 2
    assert (await thread_state(alice, thread_id))["unreadCount"] == 1


async def test_status_goes_from_sent_to_delivered_to_read(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    sent = await factories.send(alice, thread_id, "did you get this?")
    assert await status(alice, sent["id"]) == ("SENT", [])
    await bob.gql(FETCH, {"t": thread_id})
    assert await status(alice, sent["id"]) == ("DELIVERED", [])
    await bob.gql(MARK_READ, {"t": thread_id, "s": sent["seq"]})
    assert await status(alice, sent["id"]) == ("READ", [bob.id])


async def test_read_needs_every_other_participant_and_read_by_lists_those_who_did(
    clients: Clients,
) -> None:
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    thread_id = await factories.thread(alice, bob, carol)
    sent = await factories.send(alice, thread_id, "all hands")
    await bob.gql(MARK_READ, {"t": thread_id, "s": sent["seq"]})
    assert await status(alice, sent["id"]) == ("SENT", [bob.id])
    await carol.gql(MARK_READ, {"t": thread_id, "s": sent["seq"]})
    state, readers = await status(alice, sent["id"])
    assert state == "READ"
    assert sorted(readers) == sorted([bob.id, carol.id])


async def test_the_author_fetching_their_own_messages_delivers_nothing(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    sent = await factories.send(alice, thread_id)
    await alice.gql(FETCH, {"t": thread_id})
    assert await status(alice, sent["id"]) == ("SENT", [])


async def test_forty_participants_fetching_at_once_all_get_the_message_delivered(
    clients: Clients,
) -> None:
    people = [await clients.user(f"reader{i:02}") for i in range(40)]
    author = people[0]
    thread_id = await factories.thread(author, *people[1:])
    sent = await factories.send(author, thread_id, "everyone look")
    results = await asyncio.gather(*(p.raw(FETCH, {"t": thread_id}) for p in people[1:]))
    assert [r.get("errors") for r in results] == [None] * 39
    assert await status(author, sent["id"]) == ("DELIVERED", [])


async def test_fetching_an_older_page_leaves_the_delivered_marker_where_it_was(
    clients: Clients,
) -> None:
    alice, bob = await clients.users("alice", "bob")
    thread_id = await factories.thread(alice, bob)
    for body in ("one", "two", "three"):
        await factories.send(alice, thread_id, body)
    markers = """query($t: ID!) { thread(threadId: $t) { participants {
      edges { node { user { id } lastDeliveredSeq } } } } }"""

    async def bobs_delivered() -> int:
        edges = (await alice.gql(markers, {"t": thread_id}))["thread"]["participants"]["edges"]
        return int(
            next(e["node"]["lastDeliveredSeq"] for e in edges if e["node"]["user"]["id"] == bob.id)
        )

    await bob.gql(FETCH, {"t": thread_id})
    for _ in range(100):  # the marker is written just after the answer
        if await bobs_delivered() == 3:
            break
        await asyncio.sleep(0.05)
    await bob.gql(
        "query($t: ID!) { messages(threadId: $t, first: 1) { edges { node { id } } } }",
        {"t": thread_id},
    )
    await asyncio.sleep(0.5)
    assert await bobs_delivered() == 3


async def delivered_markers(db: Database, thread_ids: list[uuid.UUID]) -> dict[Key, int]:
    async with db.reading() as session:
        rows = await session.execute(
            select(
                ThreadParticipant.user_id,
                ThreadParticipant.thread_id,
                ThreadParticipant.last_delivered_seq,
            ).where(ThreadParticipant.thread_id.in_(thread_ids))
        )
    return {(user_id, thread_id): seq for user_id, thread_id, seq in rows}


async def lock_waits(db: Database, until: Callable[[list[datetime]], bool]) -> list[datetime]:
    """Waits until the statements of this database that wait on a lock (their start
    times) are as wanted."""
    for _ in range(250):
        async with db.reading() as session:  # a transaction sees one snapshot of this
            waiting = list(
                await session.scalars(
                    text(
                        "SELECT query_start FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
            )
        if until(waiting):
            return waiting
        await asyncio.sleep(0.02)
    raise AssertionError(f"{len(waiting)} statements waiting on a lock")


async def test_flushes_of_the_same_markers_at_once_never_deadlock(
    server: Server, clients: Clients
) -> None:
    """Two processes flush the same (user, thread) markers in opposite orders, held
    up by a row in the middle: each flush locks its rows in key order, so neither
    holds a row the other waits for."""
    if BACKEND != "postgres":
        pytest.skip("SQLite has one writer at a time")
    people = await clients.users(*(f"reader{n}" for n in range(6)))
    thread_ids = [uuid.UUID(await factories.thread(*people, title=f"T{n}")) for n in range(3)]
    keys = [(uuid.UUID(p.id), t) for t in thread_ids for p in people]
    db = server.runtime.db
    async with db.transaction("test_analyze") as uow:  # plans as on a real table
        await uow.session.execute(text("ANALYZE thread_participants"))
    middle = keys[len(keys) // 2]
    async with db.sessions() as holder, holder.begin():
        await holder.get(ThreadParticipant, middle[::-1], with_for_update=True)
        flushes = [
            asyncio.create_task(mark_delivered_many(db, dict.fromkeys(order, 1)))
            for order in (keys, keys[::-1])
        ]
        await lock_waits(db, lambda waiting: len(waiting) >= 2)
    await asyncio.gather(*flushes)
    assert set((await delivered_markers(db, thread_ids)).values()) == {1}


async def test_markers_a_failed_flush_could_not_write_are_written_by_the_next(
    settings: Settings, clients: Clients
) -> None:
    alice, bob = await clients.users("alice", "bob")
    thread_id = uuid.UUID(await factories.thread(alice, bob))
    key = (uuid.UUID(bob.id), thread_id)
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        pytest.skip("a file database cannot be cut off")
    outage = Outage(url.port or 5432)
    forwarded = url.set(port=await outage.start()).render_as_string(hide_password=False)
    db = Database(make_engine(forwarded, pooled=settings.pooled))
    tracker = DeliveryTracker(db)
    try:
        await outage.cut()
        tracker.delivered(*key, 7)
        with pytest.raises(ServiceUnavailable):
            await tracker.flush()
        await outage.start()
        tracker.delivered(*key, 5)  # an older push meanwhile keeps the newer marker
        await tracker.flush()
        assert (await delivered_markers(db, [thread_id]))[key] == 7
    finally:
        await db.dispose()


async def test_a_flush_of_more_markers_than_one_statement_takes_writes_them_all(
    server: Server, clients: Clients
) -> None:
    """A busy process (or one that kept its markers through an outage) flushes more
    markers than one statement's parameters can carry: written in several statements
    of one transaction, not failed for ever."""
    alice, bob = await clients.users("alice", "bob")
    thread_id = uuid.UUID(await factories.thread(alice, bob))
    key = (uuid.UUID(bob.id), thread_id)
    tracker = DeliveryTracker(server.runtime.db)
    for _ in range(12_000):  # 3 parameters each: past PostgreSQL's 32,767
        tracker.delivered(uuid.uuid4(), thread_id, 3)  # left since, say
    tracker.delivered(*key, 2)
    await tracker.flush()
    assert (await delivered_markers(server.runtime.db, [thread_id]))[key] == 2


@pytest.mark.expect_server_errors
async def test_a_stop_with_postgresql_cut_off_still_stops_everything_else(
    settings: Settings, clients: Clients, server_errors: ServerErrors
) -> None:
    """The last flush at shutdown fails with PostgreSQL unreachable: logged, and the
    rest of the stop (presence, broker, pools) still runs."""
    alice, bob = await clients.users("alice", "bob")
    thread_id = uuid.UUID(await factories.thread(alice, bob))
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        pytest.skip("a file database cannot be cut off")
    outage = Outage(url.port or 5432)
    forwarded = url.set(port=await outage.start()).render_as_string(hide_password=False)
    runtime = Runtime(settings.model_copy(update={"database_url": forwarded}))
    await runtime.start()
    runtime.deliveries.delivered(uuid.UUID(bob.id), thread_id, 1)
    await outage.cut()
    await runtime.stop()
    with pytest.raises(BrokerClosed):
        await runtime.broker.publish("anything", "{}")
    assert "last flush of delivered markers failed" in server_errors.text()


RECEIPTS = """subscription($t: ID!) { threadActivity(threadId: $t) {
  ... on ReceiptChanged { user { username } lastReadSeq } } }"""


async def carol_read_to_2_as_bob_watches(
    server: Server, clients: Clients, messages: int
) -> tuple[Api, Api, str, GraphQLWS]:
    """alice's thread of ``messages`` with bob and carol; bob watches its receipts and
    has seen carol's read marker at 2."""
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    thread_id = await factories.thread(alice, bob, carol)
    for n in range(messages):
        await factories.send(alice, thread_id, f"message {n}")
    ws = await GraphQLWS.connect(server.ws_url, bob.token)
    await watch_activity(server, ws, RECEIPTS, thread_id)
    await carol.gql(MARK_READ, {"t": thread_id, "s": 2})
    assert (await ws.next())["payload"]["data"]["threadActivity"]["lastReadSeq"] == 2
    return alice, carol, thread_id, ws


async def test_a_participant_removed_and_added_again_shows_their_new_markers_from_zero(
    server: Server, clients: Clients
) -> None:
    """Receipts only move forward as shown, but a participant added again starts a
    new marker: theirs are shown again from the start."""
    alice, carol, thread_id, ws = await carol_read_to_2_as_bob_watches(server, clients, 2)
    remove = "mutation($t: ID!, $u: ID!) { removeParticipant(threadId: $t, userId: $u) }"
    await alice.gql(remove, {"t": thread_id, "u": carol.id})
    add = "mutation($t: ID!, $u: ID!) { addParticipant(threadId: $t, userId: $u) { role } }"
    await alice.gql(add, {"t": thread_id, "u": carol.id})
    await carol.gql(MARK_READ, {"t": thread_id, "s": 1})
    again = (await ws.next())["payload"]["data"]["threadActivity"]
    assert again == {"user": {"username": "carol"}, "lastReadSeq": 1}
    await ws.close()


async def test_a_flush_cut_short_by_the_stop_leaves_its_markers_to_the_last_flush(
    server: Server, clients: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The background flush, stuck behind a lock when the server stops, is cancelled;
    the markers it held go to the stop's own flush, not nowhere."""
    if BACKEND != "postgres":
        pytest.skip("SQLite has one writer at a time")
    monkeypatch.setattr(deliveries, "STOP_SECONDS", 0.5)  # the wait before the cancel
    alice, bob = await clients.users("alice", "bob")
    thread_id = uuid.UUID(await factories.thread(alice, bob))
    key = (uuid.UUID(bob.id), thread_id)
    db = server.runtime.db
    tracker = DeliveryTracker(db)
    async with db.sessions() as holder, holder.begin():
        await holder.get(ThreadParticipant, key[::-1], with_for_update=True)
        tracker.delivered(*key, 7)
        tracker.start()
        stuck = await lock_waits(db, lambda waiting: len(waiting) == 1)  # the background flush
        stopping = asyncio.create_task(tracker.stop())
        await lock_waits(db, lambda waiting: waiting != stuck)  # cancelled
    await stopping
    assert (await delivered_markers(db, [thread_id]))[key] == 7


async def shown_after_a_late_receipt(
    server: Server,
    alice: Api,
    carol: Api,
    thread_id: str,
    ws: GraphQLWS,
    late: dict[str, int],
    read: int,
) -> Any:
    """What bob's threadActivity shows once carol reads to ``read``, after a receipt of
    hers with the ``late`` markers (made before what alice just did) is published."""
    # Typing names the thread's last seq: once it shows, the stream has had alice's change.
    typing = "mutation($t: ID!) { setTyping(threadId: $t, isTyping: true) }"
    await alice.gql(typing, {"t": thread_id})
    assert (await ws.next())["payload"]["data"]["threadActivity"] == {}
    receipt = ActivityEvent(uuid.UUID(thread_id), "receipt", uuid.UUID(carol.id), late)
    await server.runtime.broker.publish(activity_channel(thread_id), encode_activity(receipt))
    await carol.gql(MARK_READ, {"t": thread_id, "s": read})
    return (await ws.next())["payload"]["data"]["threadActivity"]


async def test_a_receipt_late_from_before_a_role_change_does_not_show_a_marker_moving_back(
    server: Server, clients: Clients
) -> None:
    """A role change is no new marker: an older receipt that reaches Redis after it (from
    another process) still shows nothing."""
    alice, carol, thread_id, ws = await carol_read_to_2_as_bob_watches(server, clients, 3)
    role = (
        "mutation($t: ID!, $u: ID!) { setParticipantRole(threadId: $t, userId: $u, role: ADMIN) {"
    )
    await alice.gql(role + " role } }", {"t": thread_id, "u": carol.id})
    late = {"last_read_seq": 1, "last_delivered_seq": 1, "seq": 1}
    shown = await shown_after_a_late_receipt(server, alice, carol, thread_id, ws, late, 3)
    assert shown == {"user": {"username": "carol"}, "lastReadSeq": 3}
    await ws.close()


async def test_a_receipt_late_from_before_a_removal_does_not_show_as_the_added_again_users_markers(
    server: Server, clients: Clients
) -> None:
    """Removed and added again, carol's markers start from 0. A receipt of hers made
    before the removal that reaches Redis after it (from another process) showed her
    old marker again as if it were her new one."""
    alice, carol, thread_id, ws = await carol_read_to_2_as_bob_watches(server, clients, 3)
    made_at = (await thread_state(alice, thread_id))["lastSeq"]
    remove = "mutation($t: ID!, $u: ID!) { removeParticipant(threadId: $t, userId: $u) }"
    await alice.gql(remove, {"t": thread_id, "u": carol.id})
    add = "mutation($t: ID!, $u: ID!) { addParticipant(threadId: $t, userId: $u) { role } }"
    await alice.gql(add, {"t": thread_id, "u": carol.id})
    late = {"last_read_seq": 3, "last_delivered_seq": 3, "seq": made_at}
    shown = await shown_after_a_late_receipt(server, alice, carol, thread_id, ws, late, 1)
    assert shown == {"user": {"username": "carol"}, "lastReadSeq": 1}
    await ws.close()


async def test_messages_from_before_a_removal_delivered_after_it_show_the_added_again_users_marker(
    server: Server, clients: Clients
) -> None:
    """A delivery receipt names its thread's last seq, not the seq delivered: carol,
    added again, fetching messages from before her removal moves her new marker, and
    the stream (which drops her receipts made before the removal) shows it."""
    alice, carol, thread_id, ws = await carol_read_to_2_as_bob_watches(server, clients, 3)
    remove = "mutation($t: ID!, $u: ID!) { removeParticipant(threadId: $t, userId: $u) }"
    await alice.gql(remove, {"t": thread_id, "u": carol.id})
    add = "mutation($t: ID!, $u: ID!) { addParticipant(threadId: $t, userId: $u) { role } }"
    await alice.gql(add, {"t": thread_id, "u": carol.id})
    await carol.gql(FETCH, {"t": thread_id})
    shown = (await ws.next())["payload"]["data"]["threadActivity"]
    assert shown == {"user": {"username": "carol"}, "lastReadSeq": 0}
    await ws.close()


# Reads the viewer (reactedByMe): served per subscriber (the general path), not by the
# fan-out. Twelve copies of the body (~48 KB frames): a client that stops reading soon
# fills its socket, and the server's next write has to wait.
PER_VIEWER = (
    "subscription($t: ID!, $a: Int) { threadEvents(threadId: $t, afterSeq: $a) { seq"
    " ... on MessageCreated { message { reactions { reactedByMe } } "
    + " ".join(f"b{i}: message {{ body }}" for i in range(12))
    + " } } }"
)
SMALL_PER_VIEWER = """subscription($t: ID!) { threadEvents(threadId: $t) {
  seq ... on MessageCreated { message { body reactions { reactedByMe } } } } }"""
BIG_BODY = "x" * 4000
TRANSPORT, LEGACY = "graphql-transport-ws", "graphql-ws"


async def delivered_to(server: Server, user: Api, thread_id: str, flush: bool = True) -> int:
    """``user``'s delivered marker in ``thread_id`` as stored (after a flush, if asked)."""
    if flush:
        await server.runtime.deliveries.flush()
    markers = await delivered_markers(server.runtime.db, [uuid.UUID(thread_id)])
    return markers[uuid.UUID(user.id), uuid.UUID(thread_id)]


def uvicorn_of(websocket: Any) -> Any:
    """The uvicorn protocol of a server-side WebSocket (with FAST_PATHS=off, no RawSocket)."""
    raw = raw_socket(websocket.scope)
    return raw._protocol if raw else _uvicorn_protocol(websocket._send)  # type: ignore[attr-defined]


async def not_reading(server: Server, user: Api) -> tuple[ClientConnection, Any, Context]:
    """``user``'s graphql-transport-ws socket that stops reading after a message (its
    queue holds one), with the server's uvicorn protocol and context for it."""
    conn = await websockets.connect(
        server.ws_url,
        subprotocols=[TRANSPORT],  # type: ignore[list-item]
        max_queue=1,
        compression=None,
    )
    await conn.send(json.dumps({"type": "connection_init", "payload": {"token": user.token}}))
    assert json.loads(await conn.recv())["type"] == "connection_ack"
    for websocket, context in server.app.state.graphql.connections.items():
        viewer = context.viewer_or_none
        if viewer is not None and str(viewer.id) == user.id:
            return conn, uvicorn_of(websocket), context
    raise AssertionError(f"no socket of {user.username}")


async def fill_socket(
    alice: Api, tid: str, uvicorn: Any, settled: Callable[[int], Awaitable[object]]
) -> int:
    """Big messages one at a time, each ``settled`` before the next, until the server's
    side of bob's socket (``uvicorn``, its protocol) stops taking data; the last seq."""
    for _ in range(300):
        written = (await factories.send(alice, tid, BIG_BODY))["seq"]
        await settled(written)
        if not uvicorn.writable.is_set():
            return written
    pytest.fail("bob's socket never filled up")


async def test_a_frame_still_waiting_for_the_socket_is_not_marked_delivered(
    server: Server, clients: Clients
) -> None:
    """bob's client stops reading while his per-viewer stream replays: the server's
    writes soon wait, and he ends the subscription while one does. His delivered
    marker (alice sees DELIVERED by it) stops at the last frame he got, not at the
    one that was never written. (graphql-transport-ws only: strawberry's legacy
    handler closes the stream before it cancels the write, which can then finish.)"""
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    for _ in range(150):  # about 7 MB of frames: more than the socket buffers take
        await factories.send(alice, tid, BIG_BODY)
    conn, uvicorn, _ = await not_reading(server, bob)
    try:
        query = {"query": PER_VIEWER, "variables": {"t": tid, "a": 0}}
        await conn.send(json.dumps({"id": "1", "type": "subscribe", "payload": query}))
        # The operation ends while its stream waits on a write, not on a read: a
        # cancelled read on SQLite loses its connection with a logged traceback.
        await until(lambda: bool(uvicorn.writable._waiters))
        await conn.send(json.dumps({"id": "1", "type": "complete"}))
        # Then a query: its answer comes after every frame written.
        ask = {"query": "{ me { id } }"}
        await conn.send(json.dumps({"id": "2", "type": "subscribe", "payload": ask}))
        received = []
        while True:
            message = json.loads(await asyncio.wait_for(conn.recv(), 10))
            if message.get("id") == "2":
                break
            if message["type"] == "next":
                received.append(message["payload"]["data"]["threadEvents"]["seq"])
    finally:
        await close_draining(conn)
    assert received == list(range(1, len(received) + 1))
    assert 0 < len(received) < 150, "the socket filled up before the replay ended"
    assert await delivered_to(server, bob, tid) == received[-1]


class StopsAsTheServerCanWrite(ClientConnection):
    """A client that sends ``stop`` (``then``: a masked frame) from within the read
    that lets the server's socket take data again: the server then hears the stop and
    can write, in one turn of the loop."""

    then: bytes | None = None
    server_fd = -1

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.then is None:
            return
        poller = poll()
        poller.register(self.server_fd, POLLOUT)
        if poller.poll(0):
            self.transport.write(self.then)
            self.then = None


async def test_a_legacy_stop_while_a_frame_waits_ends_the_operation_with_complete(
    server: Server, clients: Clients, server_errors: ServerErrors
) -> None:
    """graphql-ws: bob stops his subscription while the server's write to him waits,
    and the write completes as the stop is handled. strawberry's handler closed the
    stream first and cancelled its task after: the task, resumed by its write, asked
    the closing stream for more, died ("asynchronous generator is already running",
    logged as never retrieved) and sent no `complete`."""
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    conn = await websockets.connect(
        server.ws_url,
        subprotocols=[LEGACY],  # type: ignore[list-item]
        max_queue=1,
        compression=None,
        create_connection=StopsAsTheServerCanWrite,
    )
    assert isinstance(conn, StopsAsTheServerCanWrite)
    await conn.send(json.dumps({"type": "connection_init", "payload": {"token": bob.token}}))
    assert json.loads(await conn.recv())["type"] == "connection_ack"
    context = next(c for c in server.app.state.graphql.connections.values() if c.token == bob.token)
    uvicorn = uvicorn_of(context.connection)
    try:
        ready = new_listener(server, thread_channel(tid))
        query = {"query": PER_VIEWER, "variables": {"t": tid}}
        await conn.send(json.dumps({"id": "1", "type": "start", "payload": query}))
        await until(ready)
        for _ in range(300):
            await factories.send(alice, tid, BIG_BODY)
            if uvicorn.writable._waiters:
                break
        else:
            pytest.fail("bob's socket never filled up")
        conn.server_fd = uvicorn.transport.get_extra_info("socket").fileno()
        stop = json.dumps({"id": "1", "type": "stop"}).encode()
        conn.then = Frame(Opcode.TEXT, stop).serialize(mask=True)
        while True:
            message = json.loads(await asyncio.wait_for(conn.recv(), 5))
            if message["type"] not in ("data", "ka"):
                break
        assert conn.then is None, "the stop went out as the server could write again"
        assert message == {"type": "complete", "id": "1"}
        assert context.state.subscriptions == 0
    finally:
        await close_draining(conn)
    gc.collect()  # a task's exception nobody retrieved is logged as the task goes
    assert not server_errors.records, server_errors.text()


async def test_a_result_refused_by_a_socket_the_server_closed_ends_the_stream_undelivered(
    server: Server, clients: Clients
) -> None:
    """bob's socket is full when the server closes it (his role changed): the close
    waits behind the frames, and a new event's frame is refused at once. That event is
    not marked delivered, and his stream ends instead of marking every later one."""
    alice, bob = await clients.users("alice", "bob")
    await make_owner(server, alice)
    tid = await factories.thread(alice, bob)
    conn, uvicorn, context = await not_reading(server, bob)
    try:
        ready = new_listener(server, thread_channel(tid))
        query = {"query": PER_VIEWER, "variables": {"t": tid}}
        await conn.send(json.dumps({"id": "1", "type": "subscribe", "payload": query}))
        await until(ready)

        async def marked(seq: int) -> None:  # each frame written whole and marked
            for _ in range(500):
                if await delivered_to(server, bob, tid) >= seq:
                    return
                await asyncio.sleep(0.01)

        written = await fill_socket(alice, tid, uvicorn, marked)
        await alice.gql(SET_ROLE, {"u": bob.id, "r": "ADMIN"})
        websocket = context.connection
        await until(lambda: websocket.application_state is WebSocketState.DISCONNECTED)
        assert context.state.subscriptions == 1
        never = (await factories.send(alice, tid, "never sent"))["seq"]
        for _ in range(500):
            if not context.state.subscriptions or await delivered_to(server, bob, tid) == never:
                break
            await asyncio.sleep(0.02)
        assert await delivered_to(server, bob, tid) == written
        assert context.state.subscriptions == 0
    finally:
        await close_draining(conn)


async def test_a_socket_that_stopped_reading_holds_up_no_other_sockets_close(
    server: Server, clients: Clients
) -> None:
    """Closing bob's full socket waits until it drains, or until uvicorn's keep-alive
    gives up on it: carol's role change, heard just after his, still closes hers at once."""
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    await make_owner(server, alice)
    tid = await factories.thread(alice, bob, carol)
    conn, uvicorn, context = await not_reading(server, bob)
    other = await websockets.connect(server.ws_url, subprotocols=[TRANSPORT])  # type: ignore[list-item]
    try:
        await other.send(json.dumps({"type": "connection_init", "payload": {"token": carol.token}}))
        assert json.loads(await other.recv())["type"] == "connection_ack"
        ready = new_listener(server, thread_channel(tid))
        query = {"query": PER_VIEWER, "variables": {"t": tid}}
        await conn.send(json.dumps({"id": "1", "type": "subscribe", "payload": query}))
        await until(ready)
        await fill_socket(alice, tid, uvicorn, lambda _: asyncio.sleep(0))
        await alice.gql(SET_ROLE, {"u": bob.id, "r": "ADMIN"})
        websocket = context.connection
        await until(lambda: websocket.application_state is WebSocketState.DISCONNECTED)
        assert not uvicorn.writable.is_set(), "bob's close is waiting for his socket"
        await alice.gql(SET_ROLE, {"u": carol.id, "r": "ADMIN"})
        await asyncio.wait_for(other.wait_closed(), 5)
        assert other.close_code == 4403
    finally:
        await other.close()
        await close_draining(conn)


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_the_last_event_pushed_is_marked_delivered_without_waiting_for_another(
    server: Server, clients: Clients, protocol: str
) -> None:
    """The general path marks an event once its frame is written: the last one too,
    with no later event to move the stream on."""
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    conn = await websockets.connect(server.ws_url, subprotocols=[protocol])  # type: ignore[list-item]
    try:
        init = {"type": "connection_init", "payload": {"token": bob.token}}
        await conn.send(json.dumps(init))
        assert json.loads(await asyncio.wait_for(conn.recv(), 10))["type"] == "connection_ack"
        ready = new_listener(server, thread_channel(tid))
        query = {"query": SMALL_PER_VIEWER, "variables": {"t": tid}}
        start = "subscribe" if protocol == TRANSPORT else "start"
        await conn.send(json.dumps({"id": "1", "type": start, "payload": query}))
        await until(ready)
        sent = await factories.send(alice, tid, "only one")
        while True:
            message = json.loads(await asyncio.wait_for(conn.recv(), 10))
            if message["type"] in ("next", "data"):
                break
        assert message["payload"]["data"]["threadEvents"]["seq"] == sent["seq"]
        # No later event: the background flush (each second) writes it.
        for _ in range(100):
            if await delivered_to(server, bob, tid, flush=False) == sent["seq"]:
                break
            await asyncio.sleep(0.05)
        assert await delivered_to(server, bob, tid, flush=False) == sent["seq"]
        assert await status(alice, sent["id"]) == ("DELIVERED", [])
    finally:
        await close_draining(conn)


async def test_a_removals_second_copy_heard_late_does_not_reset_markers_shown_since(
    server: Server, clients: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A removal goes on the thread's and the activity channel, which a Redis Cluster may
    deliver over two shards' connections: the copy heard last reset carol's markers a
    second time, after her new ones showed, and a late receipt of hers from before her
    read showed her read marker moving back."""
    broker = server.runtime.broker
    publish, copies = broker.publish, []

    async def recording(channel: str, message: str) -> None:
        if '"k":"ParticipantChanged"' in message:
            copies.append((channel, message))
        await publish(channel, message)

    monkeypatch.setattr(broker, "publish", recording)
    alice, carol, thread_id, ws = await carol_read_to_2_as_bob_watches(server, clients, 4)
    remove = "mutation($t: ID!, $u: ID!) { removeParticipant(threadId: $t, userId: $u) }"
    await alice.gql(remove, {"t": thread_id, "u": carol.id})
    (removal,) = {message for _, message in copies}
    add = "mutation($t: ID!, $u: ID!) { addParticipant(threadId: $t, userId: $u) { role } }"
    await alice.gql(add, {"t": thread_id, "u": carol.id})
    made_at = (await thread_state(alice, thread_id))["lastSeq"]
    await carol.gql(MARK_READ, {"t": thread_id, "s": 3})
    shown = (await ws.next())["payload"]["data"]["threadActivity"]
    assert shown == {"user": {"username": "carol"}, "lastReadSeq": 3}
    await publish(thread_channel(thread_id), removal)  # the copy heard late
    late = {"last_read_seq": 1, "last_delivered_seq": 3, "seq": made_at}
    receipt = ActivityEvent(uuid.UUID(thread_id), "receipt", uuid.UUID(carol.id), late)
    await publish(activity_channel(thread_id), encode_activity(receipt))
    await carol.gql(MARK_READ, {"t": thread_id, "s": 4})
    shown = (await ws.next())["payload"]["data"]["threadActivity"]
    await ws.close()
    assert shown == {"user": {"username": "carol"}, "lastReadSeq": 4}


LISTED = "query { threads(first: 50) { edges { node { id unreadCount } } } }"
VIEWER_THREADS = """subscription { viewerEvents {
  ... on ThreadActivityForViewer { thread { lastSeq unreadCount } }
  ... on ThreadMembershipChanged { role } } }"""
ADD = "mutation($t: ID!, $u: ID!) { addParticipant(threadId: $t, userId: $u) { role } }"
REMOVE = "mutation($t: ID!, $u: ID!) { removeParticipant(threadId: $t, userId: $u) }"


async def unread_everywhere(api: Api, thread_id: str) -> tuple[int, int]:
    """The viewer's unreadCount of the thread, asked for itself and in their thread list."""
    alone = (await thread_state(api, thread_id))["unreadCount"]
    listed = (await api.gql(LISTED))["threads"]["edges"]
    return alone, next(e["node"]["unreadCount"] for e in listed if e["node"]["id"] == thread_id)


async def test_history_from_before_a_participant_joined_is_not_unread_and_not_read_by_them(
    server: Server, clients: Clients
) -> None:
    """Added to a thread of many messages, carol saw them all as unread (a badge of
    thousands), and alice saw her messages that bob had read turn back from READ; an add
    after a removal the same. Now nothing before her join counts, and her read marker,
    and so readBy of the old messages, stays hers to move."""
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    thread_id = await factories.thread(alice, bob)
    old = [await factories.send(alice, thread_id, f"before {n}") for n in range(6)]
    await bob.gql(MARK_READ, {"t": thread_id, "s": old[-1]["seq"]})
    ws = await GraphQLWS.connect(server.ws_url, carol.token)
    ready = new_listener(server, user_channel(carol.id))
    await ws.subscribe(VIEWER_THREADS)
    await ws.until(ready)

    async def viewer_event() -> Any:
        return (await ws.next())["payload"]["data"]["viewerEvents"]

    for round in range(2):
        await alice.gql(ADD, {"t": thread_id, "u": carol.id})
        assert await unread_everywhere(carol, thread_id) == (0, 0)
        assert (await thread_state(carol, thread_id))["lastReadSeq"] == 0
        # Not read by carol, and still READ: she was not there when it was sent.
        assert await status(alice, old[0]["id"]) == ("READ", [bob.id])
        while (await viewer_event()).get("role") != "MEMBER":
            pass  # the stream follows the thread from here
        await ws.until(listening(server, thread_channel(thread_id)))
        sent = await factories.send(alice, thread_id, f"after joining {round}")
        while (shown := await viewer_event()).get("thread", {}).get("lastSeq") != sent["seq"]:
            pass
        assert shown["thread"]["unreadCount"] == 1
        assert await unread_everywhere(carol, thread_id) == (1, 1)
        await alice.gql(REMOVE, {"t": thread_id, "u": carol.id})
        old.append(await factories.send(alice, thread_id, "while carol is away"))
    await ws.close()


async def test_a_direct_thread_rejoined_counts_as_unread_only_what_came_after(
    clients: Clients,
) -> None:
    alice, bob = await clients.users("alice", "bob")
    direct = "mutation($u: ID!) { createDirectThread(userId: $u) { id unreadCount } }"
    thread_id = (await alice.gql(direct, {"u": bob.id}))["createDirectThread"]["id"]
    await bob.gql("mutation($t: ID!) { leaveThread(threadId: $t) }", {"t": thread_id})
    for n in range(3):
        await factories.send(alice, thread_id, f"are you there? {n}")
    assert (await bob.gql(direct, {"u": alice.id}))["createDirectThread"]["unreadCount"] == 0
    await factories.send(alice, thread_id, "welcome back")
    assert await unread_everywhere(bob, thread_id) == (1, 1)


async def test_a_mark_read_checked_before_a_removal_leaves_the_membership_added_since_alone(
    server: Server, clients: Clients
) -> None:
    """markRead checks access (@threadRole), then writes in a transaction of its own. Carol
    removed and added again between the two had her new membership's marker moved by a
    markRead of her old one, in readBy, while live receipts, which drop what was made
    before a removal, went on showing her at 0."""
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    thread_id = await factories.thread(alice, bob, carol)
    sent = [await factories.send(alice, thread_id, f"m{n}") for n in range(3)]
    db = server.runtime.db
    async with db.reading() as session:  # the check, as @threadRole makes it
        reader = await users.get_user(session, carol.id)
        checked = await access_thread(session, reader, thread_id)
    await alice.gql(REMOVE, {"t": thread_id, "u": carol.id})
    await alice.gql(ADD, {"t": thread_id, "u": carol.id})
    async with db.transaction("mark_read") as uow:  # the write, as the resolver makes it
        await receipts.mark_read(uow, reader, checked, sent[1]["seq"])
    assert (await thread_state(carol, thread_id))["lastReadSeq"] == 0
    assert await status(alice, sent[0]["id"]) == ("SENT", [])
    await carol.gql(MARK_READ, {"t": thread_id, "s": sent[1]["seq"]})  # checked anew: moves
    assert (await thread_state(carol, thread_id))["lastReadSeq"] == sent[1]["seq"]


async def test_a_message_sent_before_anyone_else_joined_is_read_once_those_who_joined_read_it(
    clients: Clients,
) -> None:
    """alice wrote in a thread of her own, then added bob, who read it: readBy named bob,
    but its status stayed SENT for good, nobody having been there when it was sent."""
    alice, bob = await clients.users("alice", "bob")
    thread_id = await factories.thread(alice)
    sent = await factories.send(alice, thread_id, "welcome, whoever comes")
    await alice.gql(ADD, {"t": thread_id, "u": bob.id})
    assert await status(alice, sent["id"]) == ("SENT", [])
    await bob.gql(MARK_READ, {"t": thread_id, "s": sent["seq"]})
    assert await status(alice, sent["id"]) == ("READ", [bob.id])
