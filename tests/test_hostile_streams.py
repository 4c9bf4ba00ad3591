"""Live streams against a hostile but signed-in client: what a removed participant
keeps receiving, and what a replay hands back (defects found by an attack, 2026-12-03).

Each test fails on the code it was written against and states the rule it breaks.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
import websockets
from sqlalchemy.engine import make_url

from tests import factories
from tests.conftest import ON_POSTGRES, Clients, Server
from tests.live import fanout_members, listening, new_listener, until
from tests.wsclient import GraphQLWS
from threadline.config import Settings
from threadline.realtime.channels import thread_channel
from threadline.realtime.fanout import Member

REMOVE = "mutation($t: ID!, $u: ID!) { removeParticipant(threadId: $t, userId: $u) }"
SECRET = "secret after removal"
# Twelve copies of the body per event (~48 KB frames): a reader that stops reading
# fills the kernel's buffers after a few dozen events, and the server's socket pauses.
BIG = (
    "subscription($t: ID!) { threadEvents(threadId: $t) { seq __typename"
    " ... on MessageCreated { "
    + " ".join(f"b{i}: message {{ body }}" for i in range(12))
    + " } } }"
)


@pytest.fixture(params=[True, False], ids=["fast-paths", "general-paths"])
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    return settings.model_copy(update={"fast_paths": request.param})


def _member_of(server: Server, viewer_id: str) -> Member | None:
    for group in list(server.runtime.fanout._groups.values()):
        for member in list(group.members):
            if str(member.viewer_id) == viewer_id:
                found: Member = member
                return found
    return None


def _uvicorn_protocol(send: Any) -> Any:
    """The uvicorn protocol behind an ASGI ``send``, through the wrappers around it."""
    seen: list[Any] = [send]
    while seen:
        found = seen.pop()
        owner = getattr(found, "__self__", None)
        if owner is not None and hasattr(owner, "writable"):
            return owner
        seen.extend(cell.cell_contents for cell in getattr(found, "__closure__", None) or ())
    raise AssertionError(f"no uvicorn protocol behind {send!r}")


def _socket_paused(member: Member) -> bool:
    """Whether the server's side of the member's socket stopped taking writes (its
    transport is over the high-water mark): the next frame written has to wait."""
    sink = member.sink
    if sink.raw is not None:
        protocol = sink.raw._protocol  # type: ignore[attr-defined]
    else:  # Starlette's WebSocket, whose send is uvicorn's protocol's
        protocol = _uvicorn_protocol(sink.send_text.__self__._send)  # type: ignore[attr-defined]
    return not protocol.writable.is_set()


async def _stalling_subscriber(
    server: Server,
    token: str,
    query: str,
    variables: dict[str, Any],
    subprotocol: str = "graphql-transport-ws",
) -> Any:
    """A client, signed in and subscribed to ``query``, that stops reading from its socket
    while a message waits in its queue (a phone on a slow network)."""
    conn = await websockets.connect(
        server.ws_url,
        subprotocols=[subprotocol],  # type: ignore[list-item]
        max_queue=1,
        compression=None,
    )
    try:
        await conn.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
        assert json.loads(await conn.recv())["type"] == "connection_ack"
        start = "subscribe" if subprotocol == "graphql-transport-ws" else "start"
        payload = {"query": query, "variables": variables}
        await conn.send(json.dumps({"id": "1", "type": start, "payload": payload}))
    except BaseException:
        await conn.close()
        raise
    return conn


async def _frames_to_the_end(conn: Any, quiet: float) -> list[dict[str, Any]]:
    """What the subscription sends, keep-alives left out, up to its end (complete or
    error) or until ``quiet`` seconds pass with nothing."""
    frames: list[dict[str, Any]] = []
    while True:
        try:
            message = json.loads(await asyncio.wait_for(conn.recv(), quiet))
        except TimeoutError:
            return frames
        if message["type"] in ("ping", "pong", "ka"):
            continue
        frames.append(message)
        if message["type"] in ("complete", "error"):
            return frames


async def test_a_removal_whose_frame_has_to_wait_still_ends_the_removed_users_stream(
    server: Server, clients: Clients
) -> None:
    """A participant removed from a thread gets the removal, then the end of their
    threadEvents, and nothing sent after it: also when their socket was full at that
    moment (a phone on a slow network), so the removal's frame had to wait."""
    alice, carol = await clients.users("alice", "carol")
    tid = await factories.thread(alice, carol)
    conn = await _stalling_subscriber(server, carol.token, BIG, {"t": tid})
    try:
        await until(fanout_members(server, 1))
        member = _member_of(server, carol.id)
        assert member is not None
        # Carol's client reads nothing now: fill her socket until the server's side
        # pauses, each frame taken whole so far (none waiting, none queued).
        body = "x" * 4000
        for _ in range(1000):
            seq = (await factories.send(alice, tid, body))["seq"]
            await until(lambda: not member.busy and member.last >= seq)  # noqa: B023
            if _socket_paused(member):
                break
        else:
            pytest.fail("carol's socket never filled up")
        assert member.pending is None and not member.backlog
        # The removal is the first frame that must wait for the socket; then a secret.
        await alice.gql(REMOVE, {"t": tid, "u": carol.id})
        await until(lambda: member.pending is not None or member.waiting_on_socket)
        await factories.send(alice, tid, SECRET)
        # Carol reads again: the frames held for her, the removal, then the end (at once;
        # a leak would follow within the wait).
        frames = await _frames_to_the_end(conn, quiet=5)
    finally:
        await conn.close()
    kinds = [
        m["payload"]["data"]["threadEvents"]["__typename"] for m in frames if m["type"] == "next"
    ]
    leaked = [m for m in frames if SECRET in json.dumps(m)]
    assert not leaked, f"the removed user got what was sent after the removal: {leaked}"
    assert kinds[-1] == "ParticipantChanged"
    assert frames[-1]["type"] == "complete", "the removed user's stream did not end"


LAST_SEQ = "query($t: ID!) { thread(threadId: $t) { lastSeq } }"
EVENTS = """subscription($t: ID!, $after: Int) { threadEvents(threadId: $t, afterSeq: $after) {
  seq __typename ... on MessageCreated { message { body %s } } } }"""


async def test_an_after_seq_past_the_threads_last_event_does_not_outlive_a_removal(
    server: Server, clients: Clients
) -> None:
    """afterSeq is the last seq the client saw, so never past the thread's lastSeq. A
    participant who expects to be removed subscribes with afterSeq = lastSeq + 1: the
    removal (that seq) is then skipped as if seen, and nothing ends the stream, which
    goes on showing the thread's messages to someone no longer in it."""
    alice, carol = await clients.users("alice", "carol")
    tid = await factories.thread(alice, carol)
    await factories.send(alice, tid, "before")
    last = (await carol.gql(LAST_SEQ, {"t": tid}))["thread"]["lastSeq"]
    ws = await GraphQLWS.connect(server.ws_url, carol.token)
    try:
        variables = {"t": tid, "after": last + 1}
        # One selection rendered once for all subscribers, one rendered for carol.
        broadcast = await ws.subscribe(EVENTS % "", variables)
        await ws.until(fanout_members(server, 1))
        ready = new_listener(server, thread_channel(tid))
        own = await ws.subscribe(EVENTS % "reactions { reactedByMe }", variables)
        await ws.until(ready)
        await alice.gql(REMOVE, {"t": tid, "u": carol.id})
        await factories.send(alice, tid, SECRET)
        # Whatever carol gets until both operations have ended (refused or completed).
        running, seen = {broadcast, own}, []
        while running:
            message = await ws.next()
            seen.append(message)
            assert SECRET not in json.dumps(message), f"the removed user got: {message}"
            if message["type"] in ("error", "complete"):
                running.discard(message["id"])
    finally:
        await ws.close()


async def test_an_after_seq_past_the_last_is_bad_input_naming_the_last_and_the_last_itself_resumes(
    server: Server, clients: Clients
) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    await factories.send(alice, tid, "one")
    last = (await alice.gql(LAST_SEQ, {"t": tid}))["thread"]["lastSeq"]
    ws = await GraphQLWS.connect(server.ws_url, alice.token)
    try:
        refused = await ws.subscribe(EVENTS % "", {"t": tid, "after": last + 1})
        message = await ws.next()
        # Refused as the source of events runs: a result with the error (graphql-ws
        # `next`), then the operation's `complete`.
        assert message["id"] == refused and message["type"] == "next", message
        assert message["payload"]["data"] is None
        extensions = message["payload"]["errors"][0]["extensions"]
        assert extensions["code"] == "BAD_USER_INPUT" and extensions["lastSeq"] == last
        assert await ws.next() == {"id": refused, "type": "complete"}
        await ws.subscribe(EVENTS % "", {"t": tid, "after": last})
        await ws.until(fanout_members(server, 1))
        await factories.send(alice, tid, "two")
        message = await ws.next()
        event = message["payload"]["data"]["threadEvents"]
        assert (event["seq"], event["message"]["body"]) == (last + 1, "two")
    finally:
        await ws.close()


DELETE = "mutation($m: ID!) { deleteMessage(messageId: $m) { id } }"
EDIT = 'mutation($m: ID!) { editMessage(messageId: $m, body: "second draft") { id } }'
ADD = "mutation($t: ID!, $u: ID!) { addParticipant(threadId: $t, userId: $u) { role } }"
REPLAY = """subscription($t: ID!) { threadEvents(threadId: $t, afterSeq: 0) {
  seq __typename
  ... on MessageCreated { message { body deletedAt edits { previousBody } } }
  ... on MessageEdited { message { body deletedAt edits { previousBody } } }
} }"""
DELETED = "deleted password hunter2"


async def test_a_deleted_messages_body_is_not_replayed_from_the_event_log(
    server: Server, clients: Clients
) -> None:
    """A deleted message's body is gone ("Empty when the message is deleted"): a
    participant added after the deletion who replays the thread's events with
    afterSeq 0 must not read it back, nor its earlier versions, from the log."""
    alice, dave = await clients.users("alice", "dave")
    tid = await factories.thread(alice)
    mistake = (await factories.send(alice, tid, DELETED))["id"]
    await alice.gql(EDIT, {"m": mistake})
    await alice.gql(DELETE, {"m": mistake})
    await factories.send(alice, tid, "after the clean-up")
    await alice.gql(ADD, {"t": tid, "u": dave.id})
    last = (await dave.gql(LAST_SEQ, {"t": tid}))["thread"]["lastSeq"]
    # What the thread shows now: the message, empty.
    shown = await dave.gql(
        "query($m: ID!) { message(messageId: $m) { body deletedAt edits { previousBody } } }",
        {"m": mistake},
    )
    assert shown["message"]["body"] == "" and shown["message"]["deletedAt"] is not None
    assert DELETED not in json.dumps(shown)
    ws = await GraphQLWS.connect(server.ws_url, dave.token)
    try:
        await ws.subscribe(REPLAY, {"t": tid})
        replayed: list[dict[str, Any]] = []
        while not replayed or replayed[-1]["payload"]["data"]["threadEvents"]["seq"] < last:
            message = await ws.next()
            assert message["type"] == "next", message
            replayed.append(message)
    finally:
        await ws.close()
    leaked = [m["payload"]["data"]["threadEvents"] for m in replayed if DELETED in json.dumps(m)]
    assert not leaked, f"the deleted message's text was replayed: {leaked}"


EDIT_TO = "mutation($m: ID!, $b: String!) { editMessage(messageId: $m, body: $b) { id } }"
REACT = 'mutation($m: ID!) { addReaction(messageId: $m, emoji: "🤫") { id } }'
# A replay that reads the thread as it is when each frame is rendered: a message's
# edits and reactions, the thread's last message (where the viewer is checked per frame,
# a thread no longer shown nulls the frame). Rendered once for every subscriber, or
# (reading reactedByMe, or over the legacy subprotocol) for carol alone.
REPLAYED_NOW = """subscription($t: ID!) { threadEvents(threadId: $t, afterSeq: 0) { seq __typename
  ... on MessageCreated { message { edits { previousBody } reactions { emoji } %s } } } }"""
BODIES = " ".join(f"b{i}: body" for i in range(12))


def _paused(server: Server, user_id: str) -> bool:
    """Whether the server's side of this user's socket stopped taking writes."""
    for websocket, context in list(server.app.state.graphql.connections.items()):
        viewer = context.viewer_or_none
        if viewer is not None and str(viewer.id) == user_id:
            return not _uvicorn_protocol(websocket._send).writable.is_set()
    return False


@pytest.mark.parametrize(
    ("subprotocol", "nested"),
    [
        ("graphql-transport-ws", "thread { lastMessage { body } }"),
        ("graphql-transport-ws", "reactions { reactedByMe }"),
        ("graphql-ws", ""),
    ],
    ids=["broadcast", "per-viewer", "legacy"],
)
async def test_a_replay_still_being_written_at_a_removal_shows_nothing_from_after_it(
    server: Server, clients: Clients, subprotocol: str, nested: str
) -> None:
    """A replay's frames are rendered as they are written, and what they nest (the
    thread's last message, a message's edits and reactions) is read then: a participant
    removed while their replay waited for a full socket got, in the frames of events
    from before the removal, messages, edits and reactions made after it."""
    alice, carol = await clients.users("alice", "carol")
    tid = await factories.thread(alice, carol)
    body = "x" * 4000
    for _ in range(150):
        last = (await factories.send(alice, tid, body))["id"]
    query = REPLAYED_NOW % f"{nested} {BODIES}"
    conn = await _stalling_subscriber(server, carol.token, query, {"t": tid}, subprotocol)
    try:
        # The replay fills carol's socket long before it is through.
        await until(lambda: _paused(server, carol.id))
        await alice.gql(REMOVE, {"t": tid, "u": carol.id})
        await alice.gql(EDIT_TO, {"m": last, "b": SECRET})
        await alice.gql(EDIT_TO, {"m": last, "b": "edited again"})
        await alice.gql(REACT, {"m": last})
        await factories.send(alice, tid, SECRET)
        frames = await _frames_to_the_end(conn, quiet=10)
    finally:
        await conn.close()
    # As sent: json.dumps would escape the emoji, which then matched nothing.
    leaked = [m for m in frames if SECRET in (s := json.dumps(m, ensure_ascii=False)) or "🤫" in s]
    assert not leaked, f"the removed user got what came after the removal: {leaked[0]}"
    assert frames[-1]["type"] == "complete"


LIVE_NOW = """subscription($t: ID!) { threadEvents(threadId: $t) { seq __typename
  ... on MessageCreated { message { edits { previousBody } thread { lastMessage { body } } } }
} }"""


@pytest.mark.skipif(not ON_POSTGRES, reason="holds a PostgreSQL table lock")
async def test_a_live_frame_rendered_after_a_removal_shows_nothing_from_after_it(
    server: Server, clients: Clients, settings: Settings
) -> None:
    """The fan-out renders each event once for all subscribers when it comes: if that
    is late (a slow read, a busy process), the thread may have moved on, past a
    subscriber's removal, and the frame of an event from before it showed a message
    sent after it."""
    alice, carol = await clients.users("alice", "carol")
    tid = await factories.thread(alice, carol)
    ws = await GraphQLWS.connect(server.ws_url, carol.token)
    url = make_url(settings.database_url).set(drivername="postgresql")
    holder = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        await ws.subscribe(LIVE_NOW, {"t": tid})
        await ws.until(fanout_members(server, 1))
        # The frame of the next message waits for its edits until the lock is let go.
        locked = holder.transaction()
        await locked.start()
        await holder.execute("LOCK TABLE message_edits IN ACCESS EXCLUSIVE MODE")
        await factories.send(alice, tid, "before")
        await alice.gql(REMOVE, {"t": tid, "u": carol.id})
        await factories.send(alice, tid, SECRET)
        await locked.rollback()
        seen = [await ws.next()]
        while seen[-1]["type"] not in ("complete", "error"):
            seen.append(await ws.next())
    finally:
        await holder.close()
        await ws.close()
    leaked = [m for m in seen if SECRET in json.dumps(m)]
    assert not leaked, f"the removed user got what came after the removal: {leaked[0]}"
    # The frame could not be shown as it was: the stream ends as a new one would.
    assert seen[-1]["payload"][0]["extensions"]["code"] == "NOT_FOUND"


PER_VIEWER_NOW = """subscription($t: ID!) { threadEvents(threadId: $t) { seq __typename
  ... on MessageCreated { message { edits { previousBody } reactions { emoji reactedByMe } } }
} }"""


@pytest.mark.skipif(not ON_POSTGRES, reason="holds a PostgreSQL table lock")
async def test_a_per_viewer_frame_rendered_after_a_removal_shows_nothing_from_after_it(
    server: Server, clients: Clients, settings: Settings
) -> None:
    """A per-viewer stream (reactedByMe) checked carol's access before each event, but
    its fields are read after that, when the frame is executed: a removal and a
    reaction committed in between showed in the frame of a message from before it."""
    alice, carol = await clients.users("alice", "carol")
    tid = await factories.thread(alice, carol)
    ws = await GraphQLWS.connect(server.ws_url, carol.token)
    url = make_url(settings.database_url).set(drivername="postgresql")
    holder = await asyncpg.connect(url.render_as_string(hide_password=False))
    waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    try:
        await ws.subscribe(PER_VIEWER_NOW, {"t": tid})
        await ws.until(listening(server, thread_channel(tid)))
        assert server.runtime.fanout.stats()["members"] == 0  # executed per viewer
        locked = holder.transaction()
        await locked.start()
        await holder.execute("LOCK TABLE message_edits IN ACCESS EXCLUSIVE MODE")
        before = (await factories.send(alice, tid, "before"))["id"]
        # carol's stream has checked her access and waits to read the message's edits.
        for _ in range(500):
            if await holder.fetchval(waiting):
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("carol's frame never waited for the lock")
        await alice.gql(REMOVE, {"t": tid, "u": carol.id})
        await alice.gql(REACT, {"m": before})
        await locked.rollback()
        seen = [await ws.next()]
        while seen[-1]["type"] not in ("complete", "error"):
            seen.append(await ws.next())
    finally:
        await holder.close()
        await ws.close()
    leaked = [m for m in seen if "🤫" in json.dumps(m, ensure_ascii=False)]
    assert not leaked, f"the removed user got what came after the removal: {leaked[0]}"
    assert seen[0]["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND"


# Only what the event carries: rendering it reads nothing from the database.
PAYLOAD_ONLY = (
    "subscription($t: ID!) { threadEvents(threadId: $t, afterSeq: 0) { seq __typename"
    " ... on MessageCreated { message { deletedAt " + BODIES + " } } } }"
)


async def test_a_replay_read_from_the_log_after_a_removal_does_not_show_a_deletion_made_after_it(
    server: Server, clients: Clients
) -> None:
    """A replay reads its events from the log in batches, each message as it is then
    (deleted since: empty, with its deletedAt). A participant removed while their replay
    waited for a full socket got, in the next batch, the frame of a message from before
    the removal showing its deletion, made after it: the shared frame read nothing else
    from the database, so nobody looked for the removal."""
    alice, carol = await clients.users("alice", "carol")
    tid = await factories.thread(alice, carol)
    body = "x" * 4000
    # More than one replay batch (500 events): the last message is in the second.
    for _ in range(505):
        await factories.send(alice, tid, body)
    later = (await factories.send(alice, tid, "deleted after the removal"))["id"]
    conn = await _stalling_subscriber(server, carol.token, PAYLOAD_ONLY, {"t": tid})
    try:
        # The first batch fills carol's socket long before it is written.
        await until(lambda: _paused(server, carol.id))
        await alice.gql(REMOVE, {"t": tid, "u": carol.id})
        await alice.gql(DELETE, {"m": later})
        frames = await _frames_to_the_end(conn, quiet=10)
    finally:
        await conn.close()
    shown = [
        event["seq"]
        for m in frames
        if m["type"] == "next"
        and (event := m["payload"]["data"]["threadEvents"]).get("message", {}).get("deletedAt")
    ]
    assert not shown, f"the removed user saw a deletion made after the removal: seqs {shown}"
    assert frames[-1]["type"] in ("complete", "error")
