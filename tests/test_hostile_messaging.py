"""Messaging features attacked as a hostile or unlucky user would: writes racing a
removal, receipt pages across a departure, notification floods, mentions added by edits."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from tests import factories
from tests.conftest import DEV_SECRET, ON_POSTGRES, Api, Clients
from tests.uploads import image, upload
from threadline.auth.tokens import mint_dev_token

REMOVE = "mutation($t: ID!, $u: ID!) { removeParticipant(threadId: $t, userId: $u) }"
SET_ROLE = """
mutation($t: ID!, $u: ID!, $r: ThreadRole!) {
  setParticipantRole(threadId: $t, userId: $u, role: $r) { role }
}
"""
REACT = "mutation($m: ID!, $e: String!) { addReaction(messageId: $m, emoji: $e) { id } }"
SEND = "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id } }"
PARTICIPANTS = "query($t: ID!) { thread(threadId: $t) { participants { totalCount } } }"


@contextlib.asynccontextmanager
async def holding(
    database_url: str, lock: str, *args: str
) -> AsyncIterator[Callable[[int], Awaitable[None]]]:
    """Run ``lock`` in a transaction held open, as a slow writer would; yields a wait for
    that many statements blocked behind it. The transaction rolls back when the block ends."""
    conn = await asyncpg.connect(database_url.replace("+asyncpg", "", 1))
    blocked = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )

    async def waiting(count: int) -> None:
        deadline = time.monotonic() + 10
        # Statistics read in a transaction stay as first read unless cleared.
        while await conn.fetchval(blocked) < count:
            await conn.execute("SELECT pg_stat_clear_snapshot()")
            assert time.monotonic() < deadline, f"fewer than {count} writers blocked"
            await asyncio.sleep(0.02)

    try:
        await conn.execute("BEGIN")
        await conn.execute(lock, *args)
        yield waiting
    finally:
        await conn.close()  # rolled back


LOCK_THREAD = "SELECT 1 FROM threads WHERE id = $1 FOR UPDATE"


@pytest.mark.skipif(not ON_POSTGRES, reason="row locks: SQLite runs one write at a time")
@pytest.mark.parametrize("write", ["react", "reply", "plain send", "remove someone"])
async def test_a_write_that_waited_behind_the_writers_removal_is_refused(
    clients: Clients, database_url: str, write: str
) -> None:
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    thread_id = await factories.thread(alice, bob, carol)
    await alice.gql(SET_ROLE, {"t": thread_id, "u": bob.id, "r": "ADMIN"})
    parent = await factories.send(alice, thread_id, "hi")
    writes: dict[str, tuple[str, dict[str, Any]]] = {
        "react": (REACT, {"m": parent["id"], "e": "👍"}),
        "reply": (SEND, {"i": {"threadId": thread_id, "body": "re", "parentId": parent["id"]}}),
        "plain send": (SEND, {"i": {"threadId": thread_id, "body": "still here?"}}),
        "remove someone": (REMOVE, {"t": thread_id, "u": carol.id}),
    }
    async with holding(database_url, LOCK_THREAD, thread_id) as waiting:
        removal = asyncio.create_task(alice.raw(REMOVE, {"t": thread_id, "u": bob.id}))
        await waiting(1)
        # bob's write starts while his removal waits, and runs after it commits.
        late = asyncio.create_task(bob.raw(*writes[write]))
        await waiting(2)
    assert "errors" not in await removal
    answer = await late
    assert answer.get("errors"), f"bob, removed, still did it: {answer}"
    assert answer["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    remaining = await alice.gql(PARTICIPANTS, {"t": thread_id})
    assert remaining["thread"]["participants"]["totalCount"] == 2


@pytest.mark.skipif(not ON_POSTGRES, reason="row locks: SQLite runs one write at a time")
async def test_a_mention_sent_while_its_user_is_removed_neither_mentions_nor_notifies_them(
    clients: Clients, database_url: str
) -> None:
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    thread_id = await factories.thread(alice, bob, carol)
    async with holding(database_url, LOCK_THREAD, thread_id) as waiting:
        removal = asyncio.create_task(alice.raw(REMOVE, {"t": thread_id, "u": bob.id}))
        await waiting(1)
        mention = asyncio.create_task(factories.send(carol, thread_id, "@bob can you look?"))
        await waiting(2)
    assert "errors" not in await removal
    sent = await mention
    mentions = await carol.gql(MENTIONS, {"m": sent["id"]})
    assert mentions["message"]["mentions"] == []
    assert await notified(bob, "MENTION") == []


MENTIONS = "query($m: ID!) { message(messageId: $m) { mentions { id } } }"
DELETE_THREAD = "mutation($t: ID!) { deleteThread(threadId: $t) }"
RENAME_THREAD = 'mutation($t: ID!) { updateThread(threadId: $t, input: {title: "Late"}) { id } }'


@pytest.mark.skipif(not ON_POSTGRES, reason="row locks: SQLite runs one write at a time")
@pytest.mark.parametrize("change", [RENAME_THREAD, DELETE_THREAD], ids=["rename", "delete"])
async def test_a_thread_change_that_waited_behind_its_deletion_is_not_found(
    clients: Clients, database_url: str, change: str
) -> None:
    alice, bob = await clients.users("alice", "bob")
    thread_id = await factories.thread(alice, bob)
    await alice.gql(SET_ROLE, {"t": thread_id, "u": bob.id, "r": "OWNER"})
    async with holding(database_url, LOCK_THREAD, thread_id) as waiting:
        deletion = asyncio.create_task(alice.raw(DELETE_THREAD, {"t": thread_id}))
        await waiting(1)
        late = asyncio.create_task(bob.raw(change, {"t": thread_id}))
        await waiting(2)
    assert "errors" not in await deletion
    answer = await late
    assert answer.get("errors"), f"changed after its deletion: {answer}"
    assert answer["errors"][0]["extensions"]["code"] == "NOT_FOUND"


MUTE = "mutation($t: ID!) { muteThread(threadId: $t, muted: true) { muted } }"


@pytest.mark.skipif(not ON_POSTGRES, reason="row locks: SQLite runs one write at a time")
async def test_muting_a_thread_while_being_removed_from_it_is_not_found(
    clients: Clients, database_url: str
) -> None:
    alice, bob = await clients.users("alice", "bob")
    thread_id = await factories.thread(alice, bob)
    last = await alice.gql("query($t: ID!) { thread(threadId: $t) { lastSeq } }", {"t": thread_id})
    # The event the removal will log, taken first (its foreign key unchecked, so that the
    # thread stays unlocked): the removal waits with bob's row deleted, uncommitted.
    taken = (
        "SET session_replication_role = replica; INSERT INTO thread_events"
        f" (thread_id, seq, kind, payload, at) VALUES ('{thread_id}',"
        f" {last['thread']['lastSeq'] + 1}, 'Taken', '{{}}', now())"
    )
    async with holding(database_url, taken) as waiting:
        removal = asyncio.create_task(alice.raw(REMOVE, {"t": thread_id, "u": bob.id}))
        await waiting(1)
        mute = asyncio.create_task(bob.raw(MUTE, {"t": thread_id}))
        await waiting(2)
    assert "errors" not in await removal
    answer = await mute
    assert answer.get("errors"), answer
    assert answer["errors"][0]["extensions"]["code"] == "NOT_FOUND"


@pytest.mark.skipif(not ON_POSTGRES, reason="row locks: SQLite runs one write at a time")
async def test_an_upload_does_not_wait_for_a_write_that_holds_its_threads_lock(
    clients: Clients, database_url: str
) -> None:
    alice, bob = await clients.users("alice", "bob")
    thread_id = await factories.thread(alice, bob)
    parent = await factories.send(alice, thread_id, "hi")
    reply = {"i": {"threadId": thread_id, "body": "re", "parentId": parent["id"]}}
    lock_parent = "SELECT 1 FROM messages WHERE id = $1 FOR UPDATE"
    async with holding(database_url, lock_parent, parent["id"]) as waiting:
        # The reply holds the thread's lock while it waits for its parent's.
        replied = asyncio.create_task(bob.raw(SEND, reply))
        await waiting(1)
        # The upload's row names the thread (a foreign key): it needs the thread's key kept.
        await asyncio.wait_for(upload(alice, thread_id, "dot.png", image()), 5)
    assert "errors" not in await replied


READ_BY = """
query($m: ID!, $after: String) {
  message(messageId: $m) {
    readBy(first: 2, after: $after) {
      edges { node { id } }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""
MARK_READ = "mutation($t: ID!, $s: Int!) { markRead(threadId: $t, seq: $s) { lastReadSeq } }"


async def test_read_by_pages_on_after_the_reader_whose_cursor_it_holds_left(
    clients: Clients,
) -> None:
    alice, *readers = await clients.users("alice", "r1", "r2", "r3", "r4", "r5")
    thread_id = await factories.thread(alice, *readers)
    message = await factories.send(alice, thread_id, "minutes attached")
    for reader in readers:
        await reader.gql(MARK_READ, {"t": thread_id, "s": 99})
    first = (await alice.gql(READ_BY, {"m": message["id"]}))["message"]["readBy"]
    shown = [e["node"]["id"] for e in first["edges"]]
    # The reader the cursor points at leaves before the next page is asked for.
    await alice.gql(REMOVE, {"t": thread_id, "u": shown[-1]})
    rest = await alice.gql(READ_BY, {"m": message["id"], "after": first["pageInfo"]["endCursor"]})
    page = rest["message"]["readBy"]
    assert [e["node"]["id"] for e in page["edges"]] == sorted(
        {r.id for r in readers} - set(shown), key=uuid.UUID
    )[:2]
    assert page["pageInfo"]["hasNextPage"] is True


NOTIFICATIONS = "{ notifications(first: 50) { edges { node { kind message { id } } } } }"
UNREACT = "mutation($m: ID!, $e: String!) { removeReaction(messageId: $m, emoji: $e) { id } }"
EDIT = "mutation($m: ID!, $b: String!) { editMessage(messageId: $m, body: $b) { id } }"


async def notified(api: Api, kind: str) -> list[str]:
    """The message ids of the caller's notifications of that kind."""
    edges = (await api.gql(NOTIFICATIONS))["notifications"]["edges"]
    return [e["node"]["message"]["id"] for e in edges if e["node"]["kind"] == kind]


async def test_reacting_again_and_again_to_one_message_notifies_its_author_once(
    clients: Clients,
) -> None:
    alice, bob = await clients.users("alice", "bob")
    thread_id = await factories.thread(alice, bob)
    message = await factories.send(alice, thread_id, "shipped")
    for _ in range(3):  # a thumb taken back and given again
        await bob.gql(REACT, {"m": message["id"], "e": "👍"})
        await bob.gql(UNREACT, {"m": message["id"], "e": "👍"})
    await bob.gql(REACT, {"m": message["id"], "e": "🎉"})
    assert await notified(alice, "REACTION") == [message["id"]]


async def test_a_mention_added_by_an_edit_notifies_once(clients: Clients) -> None:
    alice, bob = await clients.users("alice", "bob")
    thread_id = await factories.thread(alice, bob)
    message = await factories.send(alice, thread_id, "who reviews this?")
    await alice.gql(EDIT, {"m": message["id"], "b": "who reviews this? @bob"})
    assert await notified(bob, "MENTION") == [message["id"]]
    await alice.gql(EDIT, {"m": message["id"], "b": "who reviews this?"})
    await alice.gql(EDIT, {"m": message["id"], "b": "@bob, you review this"})
    assert await notified(bob, "MENTION") == [message["id"]]


async def test_an_edit_that_keeps_a_mention_tells_no_one(clients: Clients) -> None:
    alice, bob = await clients.users("alice", "bob")
    thread_id = await factories.thread(alice, bob)
    await bob.gql(MUTE, {"t": thread_id})
    message = await factories.send(alice, thread_id, "@bob see the draft")
    await bob.gql(
        "mutation($t: ID!) { muteThread(threadId: $t, muted: false) { muted } }", {"t": thread_id}
    )
    await alice.gql(EDIT, {"m": message["id"], "b": "@bob see the new draft"})
    assert await notified(bob, "MENTION") == []


SEARCH = "query($q: String!) { searchMessages(query: $q) { edges { node { body } } } }"


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("-release", ["release notes ready"]),  # a flag's name, not "all but release"
        ("notes or lunch", []),  # every word must match, "or" included
        ('"ready notes"', ["release notes ready"]),  # quotes are no phrase
    ],
)
async def test_search_takes_operators_as_words_on_every_database(
    clients: Clients, query: str, found: list[str]
) -> None:
    alice = await clients.user("alice")
    thread_id = await factories.thread(alice)
    await factories.send(alice, thread_id, "release notes ready")
    await factories.send(alice, thread_id, "lunch at noon")
    edges = (await alice.gql(SEARCH, {"q": query}))["searchMessages"]["edges"]
    assert [e["node"]["body"] for e in edges] == found


THREADS = "query($s: String) { threads(search: $s) { edges { node { title } } } }"
USERS = "query($s: String) { users(search: $s) { edges { node { displayName } } } }"
RENAME = "mutation($n: String!) { updateMe(input: {displayName: $n}) { id } }"


@pytest.mark.parametrize("typed", ["équipe", "ÉQUIPE", "Équipe"])
async def test_thread_and_user_searches_ignore_the_case_of_accented_letters(
    clients: Clients, typed: str
) -> None:
    alice, bob = await clients.users("alice", "bob")
    # Someone with no username, whose null the lowering must let through.
    await Api(clients.http, mint_dev_token(DEV_SECRET, "dev_nameless", "")).gql("{ me { id } }")
    await factories.thread(alice, bob, title="Équipe Ünïcode")
    await bob.gql(RENAME, {"n": "Bob de l'Équipe"})
    threads = (await alice.gql(THREADS, {"s": typed}))["threads"]["edges"]
    assert [e["node"]["title"] for e in threads] == ["Équipe Ünïcode"]
    users = (await alice.gql(USERS, {"s": typed}))["users"]["edges"]
    assert [e["node"]["displayName"] for e in users] == ["Bob de l'Équipe"]


DELETE_MESSAGE = "mutation($m: ID!) { deleteMessage(messageId: $m) { id } }"
PIN = "mutation($m: ID!) { pinMessage(messageId: $m, pinned: true) { id } }"


@pytest.mark.skipif(not ON_POSTGRES, reason="row locks: SQLite runs one write at a time")
@pytest.mark.parametrize("change", ["edit", "react", "delete", "pin"])
async def test_a_reply_and_a_change_to_its_parent_at_once_both_succeed(
    clients: Clients, database_url: str, change: str
) -> None:
    alice, bob = await clients.users("alice", "bob")
    thread_id = await factories.thread(alice, bob)
    parent = await factories.send(alice, thread_id, "hi")
    changes: dict[str, tuple[str, dict[str, Any]]] = {
        "edit": (EDIT, {"m": parent["id"], "b": "hi all"}),
        "react": (REACT, {"m": parent["id"], "e": "👍"}),
        "delete": (DELETE_MESSAGE, {"m": parent["id"]}),
        "pin": (PIN, {"m": parent["id"]}),
    }
    reply = {"i": {"threadId": thread_id, "body": "re", "parentId": parent["id"]}}
    async with holding(database_url, LOCK_THREAD, thread_id) as waiting:
        # The reply takes the thread's lock first, then its parent's key (a foreign key).
        replied = asyncio.create_task(bob.raw(SEND, reply))
        await waiting(1)
        changed = asyncio.create_task(alice.raw(*changes[change]))
        await waiting(2)
    answers = await asyncio.gather(replied, changed)
    assert [a.get("errors") for a in answers] == [None, None]
