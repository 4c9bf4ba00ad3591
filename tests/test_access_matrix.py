"""Who reaches a thread's content, by every path the schema offers.

The matrix: every field, mutation and subscription that leads to a thread, a
message, a participant or a reaction, times four viewers of one thread:

- participant: in the thread (MEMBER);
- removed: was a MEMBER, then removed (before the thread's later messages);
- outsider: never in it;
- admin: a system ADMIN who is not in it. The contract makes a system ADMIN a
  thread ADMIN everywhere, so they read the thread through every path that
  names it (thread, messages, node, subscriptions...). Lists defined as "the
  signed-in user's threads" (`threads`, `searchMessages`, `viewerEvents`) are
  about participation, so they do not list it.

Each cell asserts the exact outcome, and every answer to the removed and the
outsider is checked not to carry anything of the thread's later content.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from tests import factories
from tests.conftest import Api, Clients, Server
from tests.live import new_listener, watch_activity
from tests.wsclient import GraphQLWS
from threadline.errors import NotFound
from threadline.models import SystemRole, User
from threadline.realtime.channels import (
    activity_channel,
    encode_activity,
    encode_logged,
    is_logged_event,
    thread_channel,
)
from threadline.services import users
from threadline.services.events import ActivityEvent, EventKind, LoggedEvent
from threadline.services.permissions import access_thread, visible_threads

ROLES = ("participant", "removed", "outsider", "admin")
SECRET = "secret after removal"
LATE = "late reply to carol"
# Nothing sent after the removal may reach the removed participant or the outsider.
AFTER_REMOVAL = (SECRET, LATE, "since you left")

REMOVE = "mutation($t: ID!, $u: ID!) { removeParticipant(threadId: $t, userId: $u) }"
PIN = "mutation($m: ID!) { pinMessage(messageId: $m, pinned: true) { id } }"
REACT = "mutation($m: ID!, $e: String!) { addReaction(messageId: $m, emoji: $e) { id } }"
LEAVE = "mutation($t: ID!) { leaveThread(threadId: $t) }"
TYPING = "mutation($t: ID!) { setTyping(threadId: $t, isTyping: true) }"
DIRECT = """
mutation($u: ID!) { createDirectThread(userId: $u) {
  id myRole messages(last: 10) { edges { node { body } } } } }
"""
NOTIFICATIONS = """
{ notifications(first: 20) { edges { node {
  id kind
  thread { id messages(last: 10) { edges { node { body } } } participants { totalCount } }
  message { body thread { id } parent { body } replies { edges { node { body } } } }
} } } }
"""


async def promote(server: Server, api: Api, role: SystemRole) -> None:
    """What `threadline users set-role` does, then forget the cached viewer."""
    async with server.runtime.db.transaction("test_set_role") as uow:
        await users.set_role_by_username(uow, str(api.username), role)
    server.runtime.forget_viewers(clerk_user_ids=[f"dev_{api.username}"])


@dataclass
class World:
    """One thread seen by four viewers; alice owns it and does everything."""

    server: Server
    alice: Api
    viewers: dict[str, Api]
    thread: str
    root: str  # alice's first message; `secret` replies to it
    secret: str  # sent, pinned and reacted to after carol's removal
    own: dict[str, str]  # a message each of the participant and the removed wrote

    def leaks(self, role: str, text: str) -> None:
        if role in ("removed", "outsider"):
            for words in AFTER_REMOVAL:
                assert words not in text, f"{role} got {words!r}: {text}"


async def world(server: Server, clients: Clients) -> World:
    alice, bob, carol, dave, erin = await clients.users("alice", "bob", "carol", "dave", "erin")
    await promote(server, erin, SystemRole.ADMIN)
    tid = await factories.thread(alice, bob, carol, title="Plans")
    root = (await factories.send(alice, tid, "root message"))["id"]
    from_bob = (await factories.send(bob, tid, "from bob"))["id"]
    from_carol = (await factories.send(carol, tid, "from carol"))["id"]
    await factories.send(alice, tid, "reply to bob", parentId=from_bob)
    await factories.send(alice, tid, "reply to carol", parentId=from_carol)
    await alice.gql(REMOVE, {"t": tid, "u": carol.id})
    secret = (await factories.send(alice, tid, SECRET, parentId=root))["id"]
    await alice.gql(PIN, {"m": secret})
    await alice.gql(REACT, {"m": secret, "e": "👍"})
    # Replies and reactions to the removed participant's message notify nobody now.
    await factories.send(alice, tid, LATE, parentId=from_carol)
    await alice.gql(REACT, {"m": from_carol, "e": "🎉"})
    viewers = {"participant": bob, "removed": carol, "outsider": dave, "admin": erin}
    own = {"participant": from_bob, "removed": from_carol}
    return World(server, alice, viewers, tid, root, secret, own)


Outcome = Any
Path = Callable[[World, str], Awaitable[Outcome]]


async def answer(
    w: World, role: str, query: str, variables: dict[str, Any], pick: Callable[[Any], Outcome]
) -> Outcome:
    """``pick(data)`` of a successful answer, else the one error code it carries."""
    body = await w.viewers[role].raw(query, variables)
    w.leaks(role, json.dumps(body))
    errors = body.get("errors")
    if errors:
        codes = {e.get("extensions", {}).get("code") for e in errors}
        assert len(codes) == 1, errors
        return codes.pop()
    return pick(body["data"])


def bodies(connection: dict[str, Any]) -> list[str]:
    return [e["node"]["body"] for e in connection["edges"]]


VISIBLE_BODIES = [
    "root message",
    "from bob",
    "from carol",
    "reply to bob",
    "reply to carol",
    SECRET,
    LATE,
]

# ---------------------------------------------------------------- the paths


async def thread(w: World, role: str) -> Outcome:
    return await answer(
        w, role, "query($t: ID!) { thread(threadId: $t) { id } }", {"t": w.thread},
        lambda d: d["thread"]["id"] == w.thread,
    )  # fmt: skip


async def thread_messages(w: World, role: str) -> Outcome:
    query = (
        "query($t: ID!) { thread(threadId: $t) { messages(last: 20) { edges { node { body } } } } }"
    )
    return await answer(w, role, query, {"t": w.thread}, lambda d: bodies(d["thread"]["messages"]))


async def thread_participants(w: World, role: str) -> Outcome:
    query = "query($t: ID!) { thread(threadId: $t) { participants { totalCount } } }"
    return await answer(
        w, role, query, {"t": w.thread}, lambda d: d["thread"]["participants"]["totalCount"]
    )


async def thread_pinned(w: World, role: str) -> Outcome:
    query = "query($t: ID!) { thread(threadId: $t) { pinnedMessages { body } } }"
    return await answer(
        w,
        role,
        query,
        {"t": w.thread},
        lambda d: [m["body"] for m in d["thread"]["pinnedMessages"]],
    )


async def thread_last_message(w: World, role: str) -> Outcome:
    query = "query($t: ID!) { thread(threadId: $t) { lastMessage { body } } }"
    return await answer(
        w, role, query, {"t": w.thread}, lambda d: d["thread"]["lastMessage"]["body"]
    )


async def messages(w: World, role: str) -> Outcome:
    query = "query($t: ID!) { messages(threadId: $t, last: 20) { edges { node { body } } } }"
    return await answer(w, role, query, {"t": w.thread}, lambda d: bodies(d["messages"]))


async def message(w: World, role: str) -> Outcome:
    query = "query($m: ID!) { message(messageId: $m) { body } }"
    return await answer(w, role, query, {"m": w.secret}, lambda d: d["message"]["body"])


async def message_thread(w: World, role: str) -> Outcome:
    """From a message the viewer wrote before the removal, on to the thread."""
    query = """query($m: ID!) { message(messageId: $m) {
      thread { participants { totalCount } messages(last: 20) { edges { node { body } } } } } }"""
    mine = w.own.get(role, w.root)
    return await answer(
        w, role, query, {"m": mine}, lambda d: bodies(d["message"]["thread"]["messages"])
    )


async def message_parent(w: World, role: str) -> Outcome:
    query = "query($m: ID!) { message(messageId: $m) { parent { body } } }"
    return await answer(w, role, query, {"m": w.secret}, lambda d: d["message"]["parent"]["body"])


async def message_replies(w: World, role: str) -> Outcome:
    query = "query($m: ID!) { message(messageId: $m) { replies { edges { node { body } } } } }"
    return await answer(w, role, query, {"m": w.root}, lambda d: bodies(d["message"]["replies"]))


async def message_reactions(w: World, role: str) -> Outcome:
    query = "query($m: ID!) { message(messageId: $m) { reactions { emoji count } } }"
    return await answer(
        w, role, query, {"m": w.secret},
        lambda d: [(r["emoji"], r["count"]) for r in d["message"]["reactions"]],
    )  # fmt: skip


async def node_thread(w: World, role: str) -> Outcome:
    query = """query($id: ID!) { node(id: $id) { id ... on Thread {
      messages(last: 20) { edges { node { body } } } } } }"""
    return await answer(
        w, role, query, {"id": w.thread},
        lambda d: None if d["node"] is None else bodies(d["node"]["messages"]),
    )  # fmt: skip


async def node_message(w: World, role: str) -> Outcome:
    query = "query($id: ID!) { node(id: $id) { ... on Message { body thread { id } } } }"
    return await answer(
        w, role, query, {"id": w.secret},
        lambda d: None if d["node"] is None else d["node"]["body"],
    )  # fmt: skip


async def notification_list(api: Api) -> list[dict[str, Any]]:
    return [e["node"] for e in (await api.gql(NOTIFICATIONS))["notifications"]["edges"]]


def shown(notification: dict[str, Any]) -> tuple[str, bool, str | None]:
    """(kind, whether its thread shows, the body of its message if that shows)."""
    body = notification["message"]["body"] if notification["message"] else None
    return notification["kind"], notification["thread"] is not None, body


async def notifications(w: World, role: str) -> Outcome:
    found = await notification_list(w.viewers[role])
    w.leaks(role, json.dumps(found))
    for n in found:
        if n["thread"] is not None:
            assert n["thread"]["id"] == w.thread
            assert bodies(n["thread"]["messages"])[-1] == LATE
        if n["message"] is not None:
            assert n["message"]["thread"]["id"] == w.thread
    return sorted(shown(n) for n in found)


async def node_notification(w: World, role: str) -> Outcome:
    """The viewer's own REPLY notification by id; who has none asks for bob's."""
    owner = w.viewers[role] if role in w.own else w.viewers["participant"]
    (reply,) = [n for n in await notification_list(owner) if n["kind"] == "REPLY"]
    query = """query($id: ID!) { node(id: $id) { ... on Notification {
      kind thread { id } message { body parent { body } } } } }"""
    return await answer(
        w, role, query, {"id": reply["id"]},
        lambda d: None if d["node"] is None else (
            d["node"]["kind"], d["node"]["thread"] is not None,
            d["node"]["message"]["body"] if d["node"]["message"] else None,
        ),
    )  # fmt: skip


async def threads(w: World, role: str) -> Outcome:
    query = "{ threads(first: 50) { edges { node { id } } } }"
    return await answer(
        w, role, query, {}, lambda d: w.thread in {e["node"]["id"] for e in d["threads"]["edges"]}
    )


async def search(w: World, role: str) -> Outcome:
    query = "query($q: String!) { searchMessages(query: $q) { edges { node { body } } } }"
    return await answer(w, role, query, {"q": "secret"}, lambda d: bodies(d["searchMessages"]))


async def search_in_thread(w: World, role: str) -> Outcome:
    query = """query($q: String!, $t: ID!) {
      searchMessages(query: $q, threadId: $t) { edges { node { body } } } }"""
    return await answer(
        w, role, query, {"q": "secret", "t": w.thread}, lambda d: bodies(d["searchMessages"])
    )


async def mark_read(w: World, role: str) -> Outcome:
    query = "mutation($t: ID!) { markRead(threadId: $t, seq: 100) { id unreadCount } }"
    return await answer(w, role, query, {"t": w.thread}, lambda d: d["markRead"]["unreadCount"])


async def add_reaction(w: World, role: str) -> Outcome:
    query = """mutation($m: ID!) { addReaction(messageId: $m, emoji: "🔥") {
      reactions { emoji count } } }"""
    return await answer(
        w, role, query, {"m": w.secret},
        lambda d: [(r["emoji"], r["count"]) for r in d["addReaction"]["reactions"]],
    )  # fmt: skip


async def send_message(w: World, role: str) -> Outcome:
    query = """mutation($t: ID!) { sendMessage(input: {threadId: $t, body: "mine"}) {
      body thread { lastMessage { body } } } }"""
    return await answer(
        w, role, query, {"t": w.thread}, lambda d: d["sendMessage"]["thread"]["lastMessage"]["body"]
    )


async def edit_message(w: World, role: str) -> Outcome:
    """The viewer's own message if they wrote one, else alice's."""
    query = 'mutation($m: ID!) { editMessage(messageId: $m, body: "edited") { body } }'
    target = w.own.get(role, w.secret)
    return await answer(w, role, query, {"m": target}, lambda d: d["editMessage"]["body"])


async def delete_message(w: World, role: str) -> Outcome:
    """The viewer's own message if they wrote one, else alice's (moderation)."""
    query = "mutation($m: ID!) { deleteMessage(messageId: $m) { body deletedAt } }"
    target = w.own.get(role, w.secret)
    return await answer(
        w, role, query, {"m": target}, lambda d: d["deleteMessage"]["deletedAt"] is not None
    )


async def pin_message(w: World, role: str) -> Outcome:
    query = "mutation($m: ID!) { pinMessage(messageId: $m, pinned: true) { pinned } }"
    return await answer(w, role, query, {"m": w.root}, lambda d: d["pinMessage"]["pinned"])


async def remove_reaction(w: World, role: str) -> Outcome:
    query = """mutation($m: ID!) { removeReaction(messageId: $m, emoji: "👍") {
      reactions { emoji count } } }"""
    return await answer(
        w, role, query, {"m": w.secret},
        lambda d: [(r["emoji"], r["count"]) for r in d["removeReaction"]["reactions"]],
    )  # fmt: skip


async def update_thread(w: World, role: str) -> Outcome:
    query = 'mutation($t: ID!) { updateThread(threadId: $t, input: {title: "New"}) { title } }'
    return await answer(w, role, query, {"t": w.thread}, lambda d: d["updateThread"]["title"])


async def set_typing(w: World, role: str) -> Outcome:
    return await answer(w, role, TYPING, {"t": w.thread}, lambda d: d["setTyping"])


async def mute_thread(w: World, role: str) -> Outcome:
    query = "mutation($t: ID!) { muteThread(threadId: $t, muted: true) { muted } }"
    return await answer(w, role, query, {"t": w.thread}, lambda d: d["muteThread"]["muted"])


async def leave_thread(w: World, role: str) -> Outcome:
    return await answer(w, role, LEAVE, {"t": w.thread}, lambda d: d["leaveThread"] == w.thread)


async def create_direct_thread(w: World, role: str) -> Outcome:
    """With alice: the participant and the removed each had a direct thread with
    her (the removed one left it); messages went on after that."""
    viewer = w.viewers[role]
    direct: str | None = None
    if role in ("participant", "removed"):
        direct = (await viewer.gql(DIRECT, {"u": w.alice.id}))["createDirectThread"]["id"]
        await factories.send(w.alice, direct, "before")
        if role == "removed":
            await viewer.gql(LEAVE, {"t": direct})
            thread_query = "query($t: ID!) { thread(threadId: $t) { id } }"
            assert await viewer.error(thread_query, {"t": direct}) == "NOT_FOUND"
        await factories.send(w.alice, direct, "since you left")
        w.leaks(role, json.dumps(await viewer.raw(NOTIFICATIONS)))
    found = (await viewer.gql(DIRECT, {"u": w.alice.id}))["createDirectThread"]
    same = "same thread" if found["id"] == direct else "a new thread"
    return same, found["myRole"], bodies(found["messages"])


async def first_message(ws: GraphQLWS) -> dict[str, Any]:
    message = await ws.next()
    if message["type"] == "error":
        return {"errors": message["payload"]}
    payload: dict[str, Any] = message["payload"]
    return payload


def code_or(payload: dict[str, Any], pick: Callable[[Any], Outcome]) -> Outcome:
    if payload.get("errors"):
        codes = {e.get("extensions", {}).get("code") for e in payload["errors"]}
        assert len(codes) == 1, payload
        return codes.pop()
    return pick(payload["data"])


LAST_SEQ = "query($t: ID!) { thread(threadId: $t) { lastSeq } }"


async def thread_events(w: World, role: str) -> Outcome:
    query = """subscription($t: ID!, $after: Int) { threadEvents(threadId: $t, afterSeq: $after) {
      seq ... on MessageCreated { message { body thread { participants { totalCount } } } } } }"""
    last = (await w.alice.gql(LAST_SEQ, {"t": w.thread}))["thread"]["lastSeq"]
    ws = await GraphQLWS.connect(w.server.ws_url, w.viewers[role].token)
    try:
        # From the thread's current seq: the next event is the one sent below.
        await ws.subscribe(query, {"t": w.thread, "after": last})
        await factories.send(w.alice, w.thread, "live")
        payload = await first_message(ws)
        w.leaks(role, json.dumps(payload))
        return code_or(payload, lambda d: d["threadEvents"]["message"]["body"])
    finally:
        await ws.close()


async def thread_activity(w: World, role: str) -> Outcome:
    query = """subscription($t: ID!) { threadActivity(threadId: $t) {
      __typename ... on TypingChanged { user { username } isTyping } } }"""
    ws = await GraphQLWS.connect(w.server.ws_url, w.viewers[role].token)
    try:
        ready = new_listener(w.server, activity_channel(w.thread))
        await ws.subscribe(query, {"t": w.thread})
        await ws.until(ready)  # or refused
        await w.alice.gql(TYPING, {"t": w.thread})
        payload = await first_message(ws)

        def typing(d: Any) -> Outcome:
            return d["threadActivity"]["user"]["username"], d["threadActivity"]["isTyping"]

        return code_or(payload, typing)
    finally:
        await ws.close()


VIEWER_EVENTS = """subscription { viewerEvents {
  __typename
  ... on ThreadActivityForViewer { thread { id lastMessage { body } } }
  ... on NotificationCreated { notification { kind thread { id } message { body } } }
  ... on ThreadMembershipChanged { threadId role }
} }"""


async def viewer_events(w: World, role: str) -> Outcome:
    """What reaches the viewer about the thread before a sentinel message in another
    thread they are in (so that "nothing" needs no waiting)."""
    viewer = w.viewers[role]
    sentinel = await factories.thread(w.alice, viewer, title="Sentinel")
    ws = await GraphQLWS.connect(w.server.ws_url, viewer.token)
    try:
        # Ready once the stream follows the viewer's threads (the sentinel's among them).
        ready = new_listener(w.server, thread_channel(sentinel))
        await ws.subscribe(VIEWER_EVENTS)
        await ws.until(ready)
        await factories.send(w.alice, w.thread, "live", parentId=w.own.get(role, w.root))
        await factories.send(w.alice, sentinel, "sentinel")
        seen: list[str] = []
        while True:
            payload = await first_message(ws)
            w.leaks(role, json.dumps(payload))
            event = payload["data"]["viewerEvents"]
            kind = event["__typename"]
            if kind == "ThreadActivityForViewer":
                if event["thread"]["id"] == sentinel:
                    return sorted(seen)
                assert event["thread"]["id"] == w.thread
                seen.append(f"activity: {event['thread']['lastMessage']['body']}")
            elif kind == "NotificationCreated":
                n = event["notification"]
                assert n["thread"] is None or n["thread"]["id"] == w.thread
                body = n["message"]["body"] if n["message"] else None
                seen.append(f"notification: {n['kind']} {body}")
            else:
                assert event["threadId"] != w.thread
    finally:
        await ws.close()


# ---------------------------------------------------------------- the matrix

NOT_FOUND = "NOT_FOUND"
ALL_BODIES = VISIBLE_BODIES
REACTED = [("👍", 1)]
SEEN_NOTIFICATIONS = [("ADDED_TO_THREAD", True, None), ("REPLY", True, "reply to bob")]
GONE_NOTIFICATIONS = [("ADDED_TO_THREAD", False, None), ("REPLY", False, None)]

# path -> (participant, removed, outsider, admin)
MATRIX: dict[str, tuple[Path, tuple[Outcome, Outcome, Outcome, Outcome]]] = {
    "Query.thread": (thread, (True, NOT_FOUND, NOT_FOUND, True)),
    "Thread.messages": (thread_messages, (ALL_BODIES, NOT_FOUND, NOT_FOUND, ALL_BODIES)),
    "Thread.participants": (thread_participants, (2, NOT_FOUND, NOT_FOUND, 2)),
    "Thread.pinnedMessages": (thread_pinned, ([SECRET], NOT_FOUND, NOT_FOUND, [SECRET])),
    "Thread.lastMessage": (thread_last_message, (LATE, NOT_FOUND, NOT_FOUND, LATE)),
    "Query.messages": (messages, (ALL_BODIES, NOT_FOUND, NOT_FOUND, ALL_BODIES)),
    "Query.message": (message, (SECRET, NOT_FOUND, NOT_FOUND, SECRET)),
    "Message.thread": (message_thread, (ALL_BODIES, NOT_FOUND, NOT_FOUND, ALL_BODIES)),
    "Message.parent": (message_parent, ("root message", NOT_FOUND, NOT_FOUND, "root message")),
    "Message.replies": (message_replies, ([SECRET], NOT_FOUND, NOT_FOUND, [SECRET])),
    "Message.reactions": (message_reactions, (REACTED, NOT_FOUND, NOT_FOUND, REACTED)),
    "Query.node(Thread)": (node_thread, (ALL_BODIES, None, None, ALL_BODIES)),
    "Query.node(Message)": (node_message, (SECRET, None, None, SECRET)),
    "Query.node(Notification)": (
        node_notification,
        (("REPLY", True, "reply to bob"), ("REPLY", False, None), None, None),
    ),
    "Query.notifications": (notifications, (SEEN_NOTIFICATIONS, GONE_NOTIFICATIONS, [], [])),
    "Query.threads": (threads, (True, False, False, False)),
    "Query.searchMessages": (search, ([SECRET], [], [], [])),
    "Query.searchMessages(threadId)": (search_in_thread, ([SECRET], [], [], [])),
    "Mutation.markRead": (mark_read, (0, NOT_FOUND, NOT_FOUND, 0)),
    "Mutation.addReaction": (
        add_reaction,
        ([("👍", 1), ("🔥", 1)], NOT_FOUND, NOT_FOUND, [("👍", 1), ("🔥", 1)]),
    ),
    "Mutation.sendMessage": (send_message, ("mine", NOT_FOUND, NOT_FOUND, "mine")),
    "Mutation.editMessage": (edit_message, ("edited", NOT_FOUND, NOT_FOUND, "FORBIDDEN")),
    "Mutation.deleteMessage": (delete_message, (True, NOT_FOUND, NOT_FOUND, True)),
    "Mutation.pinMessage": (pin_message, ("FORBIDDEN", NOT_FOUND, NOT_FOUND, True)),
    "Mutation.removeReaction": (remove_reaction, (REACTED, NOT_FOUND, NOT_FOUND, REACTED)),
    "Mutation.updateThread": (update_thread, ("FORBIDDEN", NOT_FOUND, NOT_FOUND, "New")),
    "Mutation.setTyping": (set_typing, (True, NOT_FOUND, NOT_FOUND, True)),
    "Mutation.muteThread": (mute_thread, (True, NOT_FOUND, NOT_FOUND, "CONFLICT")),
    "Mutation.leaveThread": (leave_thread, (True, NOT_FOUND, NOT_FOUND, NOT_FOUND)),
    "Mutation.createDirectThread": (
        create_direct_thread,
        (
            ("same thread", "OWNER", ["before", "since you left"]),
            ("same thread", "OWNER", ["before", "since you left"]),
            ("a new thread", "OWNER", []),
            ("a new thread", "OWNER", []),
        ),
    ),
    "Subscription.threadEvents": (thread_events, ("live", NOT_FOUND, NOT_FOUND, "live")),
    "Subscription.threadActivity": (
        thread_activity,
        (("alice", True), NOT_FOUND, NOT_FOUND, ("alice", True)),
    ),
    "Subscription.viewerEvents": (
        viewer_events,
        (["activity: live", "notification: REPLY live"], [], [], []),
    ),
}

CELLS = [(path, role) for path in MATRIX for role in ROLES]
# Paths that only read: one world answers all four viewers (a read changes nothing
# another viewer's answer depends on). A path that writes or listens gets a world
# per cell.
READS = [p for p in MATRIX if p.split(".")[0] in {"Query", "Thread", "Message"}]
WRITE_CELLS = [(path, role) for path, role in CELLS if path not in READS]


def test_the_matrix_has_a_cell_for_every_path_and_role() -> None:
    print(f"\naccess matrix: {len(MATRIX)} paths x {len(ROLES)} roles = {len(CELLS)} cells")
    assert len(CELLS) == len(MATRIX) * len(ROLES) == 132
    assert len(READS) * len(ROLES) + len(WRITE_CELLS) == len(CELLS)


@pytest.mark.parametrize("path", READS)
async def test_read_access(server: Server, clients: Clients, path: str) -> None:
    w = await world(server, clients)
    run, expected = MATRIX[path]
    assert {role: await run(w, role) for role in ROLES} == dict(zip(ROLES, expected, strict=True))


@pytest.mark.parametrize(("path", "role"), WRITE_CELLS, ids=[f"{p}-{r}" for p, r in WRITE_CELLS])
async def test_access(server: Server, clients: Clients, path: str, role: str) -> None:
    w = await world(server, clients)
    run, expected = MATRIX[path]
    assert await run(w, role) == expected[ROLES.index(role)]


async def test_the_batched_check_agrees_with_the_single_one(
    server: Server, clients: Clients
) -> None:
    """permissions.visible_threads (what the loaders use) and access_thread decide
    alike, through the ORM and, on PostgreSQL, through the driver's read path."""
    w = await world(server, clients)
    deleted = await factories.thread(w.alice, w.viewers["participant"])
    await w.alice.gql("mutation($t: ID!) { deleteThread(threadId: $t) }", {"t": deleted})
    others = await factories.thread(w.viewers["outsider"])
    ids = [uuid.UUID(t) for t in (w.thread, deleted, others)]
    theirs, main = uuid.UUID(others), uuid.UUID(w.thread)
    expected = {
        "owner": {main: "OWNER"},
        "participant": {main: "MEMBER"},
        "removed": {},
        "outsider": {theirs: "OWNER"},
        "admin": {main: "ADMIN", theirs: "ADMIN"},
    }
    db = server.runtime.db
    for role, api in [("owner", w.alice), *w.viewers.items()]:
        async with db.reading() as session:
            actor = await session.get(User, uuid.UUID(api.id))
        assert actor is not None
        for sessions in (db.read_sessions, db.shared_sessions):  # ORM; driver on PostgreSQL
            single: dict[uuid.UUID, str] = {}
            for tid in ids:
                async with sessions() as session:
                    with contextlib.suppress(NotFound):
                        single[tid] = (await access_thread(session, actor, tid)).role.value
            async with sessions() as session:
                batch = await visible_threads(session, actor, ids)
            assert {t: a.role.value for t, a in batch.items()} == single == expected[role]


# ---------------------------------------------------------------- after a removal


async def test_messages_posted_after_a_removal_are_not_visible_to_the_removed(
    server: Server, clients: Clients
) -> None:
    """The issue's own route (an old notification, on to its thread), and the others."""
    w = await world(server, clients)
    carol = w.viewers["removed"]
    replies = [shown(n) for n in await notification_list(carol) if n["kind"] == "REPLY"]
    assert replies == [("REPLY", False, None)]
    everything = """query($t: ID!, $m: ID!) {
      a: node(id: $t) { id } b: node(id: $m) { id }
      c: searchMessages(query: "secret") { edges { node { id } } }
      d: threads(first: 50) { edges { node { id lastMessage { body } } } }
    }"""
    body = await carol.raw(everything, {"t": w.thread, "m": w.secret})
    assert body["data"]["a"] is None and body["data"]["b"] is None
    assert body["data"]["c"]["edges"] == []
    assert w.thread not in {e["node"]["id"] for e in body["data"]["d"]["edges"]}
    w.leaks("removed", json.dumps(body))
    for query, variables in (
        ("query($m: ID!) { message(messageId: $m) { body } }", {"m": w.secret}),
        ("query($t: ID!) { thread(threadId: $t) { id } }", {"t": w.thread}),
        ("query($t: ID!) { messages(threadId: $t) { edges { node { body } } } }", {"t": w.thread}),
    ):
        assert await carol.error(query, variables) == NOT_FOUND
    # They exist: the participant reads them.
    assert await messages(w, "participant") == VISIBLE_BODIES


def test_thread_activity_tells_logged_events_from_activity_on_the_thread_channels() -> None:
    thread, user = uuid.uuid4(), uuid.uuid4()
    removed = LoggedEvent(
        thread, 7, EventKind.PARTICIPANT_CHANGED, {"user_id": str(user), "role": None}, user,
        datetime.now(UTC),
    )  # fmt: skip
    assert is_logged_event(encode_logged(removed))
    for kind, data in (("typing", {"is_typing": True}), ("receipt", {"s": 1})):
        assert not is_logged_event(encode_activity(ActivityEvent(thread, kind, user, data)))


ACTIVITY = """subscription($t: ID!) { threadActivity(threadId: $t) {
  __typename ... on TypingChanged { user { username } isTyping } } }"""


async def test_thread_activity_ends_when_the_viewer_is_removed(
    server: Server, clients: Clients
) -> None:
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    ws = await GraphQLWS.connect(server.ws_url, bob.token)
    await watch_activity(server, ws, ACTIVITY, tid)
    await alice.gql(TYPING, {"t": tid})
    assert (await ws.next())["payload"]["data"]["threadActivity"]["isTyping"] is True
    await alice.gql(REMOVE, {"t": tid, "u": bob.id})
    assert (await ws.next())["type"] == "complete"
    await alice.gql("mutation($t: ID!) { setTyping(threadId: $t, isTyping: false) }", {"t": tid})
    with pytest.raises(TimeoutError):
        await ws.next(timeout=0.5)
    await ws.close()


async def test_thread_activity_of_a_removed_system_admin_goes_on(
    server: Server, clients: Clients
) -> None:
    """On a membership change the stream checks access again, rather than ending
    blindly: a system ADMIN still reads every thread once removed from it."""
    alice, erin = await clients.users("alice", "erin")
    await promote(server, erin, SystemRole.ADMIN)
    tid = await factories.thread(alice, erin)
    ws = await GraphQLWS.connect(server.ws_url, erin.token)
    await watch_activity(server, ws, ACTIVITY, tid)
    await alice.gql(REMOVE, {"t": tid, "u": erin.id})
    await alice.gql(TYPING, {"t": tid})
    event = (await ws.next())["payload"]["data"]["threadActivity"]
    assert (event["user"]["username"], event["isTyping"]) == ("alice", True)
    await ws.close()


async def test_viewer_events_stop_showing_a_thread_once_the_viewer_is_removed(
    server: Server, clients: Clients
) -> None:
    alice, carol = await clients.users("alice", "carol")
    tid = await factories.thread(alice, carol, title="Plans")
    mine = (await factories.send(carol, tid, "from carol"))["id"]
    sentinel = await factories.thread(alice, carol, title="Sentinel")
    ws = await GraphQLWS.connect(server.ws_url, carol.token)
    ready = new_listener(server, thread_channel(sentinel))
    await ws.subscribe(VIEWER_EVENTS)
    await ws.until(ready)
    await alice.gql(REMOVE, {"t": tid, "u": carol.id})
    await factories.send(alice, tid, SECRET, parentId=mine)  # would notify a participant
    await alice.gql(REACT, {"m": mine, "e": "🎉"})
    await factories.send(alice, sentinel, "sentinel")
    seen = []
    while True:
        payload = await first_message(ws)
        assert SECRET not in json.dumps(payload)
        event = payload["data"]["viewerEvents"]
        if event["__typename"] == "ThreadActivityForViewer" and event["thread"]["id"] == sentinel:
            break
        seen.append(event)
    assert seen == [
        {"__typename": "ThreadMembershipChanged", "threadId": tid, "role": None},
    ]
    await ws.close()
