"""Notifications: who hears of mentions, replies, reactions and being added; reading them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update

from tests import factories
from tests.conftest import Api, Clients, Server
from threadline.models import Message, Notification

NOTIFICATIONS = """
query($unreadOnly: Boolean) {
  notifications(unreadOnly: $unreadOnly, first: 50) {
    unreadCount
    edges { node { id kind readAt actor { id } thread { id } message { id } } }
  }
}
"""
MARK = "mutation($ids: [ID!], $all: Boolean) { markNotificationsRead(ids: $ids, all: $all) }"
MENTIONS = "query($m: ID!) { message(messageId: $m) { mentions { id username } } }"
REACT = "mutation($m: ID!, $e: String!) { addReaction(messageId: $m, emoji: $e) { id } }"
UNREACT = "mutation($m: ID!, $e: String!) { removeReaction(messageId: $m, emoji: $e) { id } }"
MUTE = "mutation($t: ID!) { muteThread(threadId: $t, muted: true) { muted } }"
ADD = "mutation($t: ID!, $u: ID!) { addParticipant(threadId: $t, userId: $u) { role } }"


async def inbox(api: Api, unread_only: bool = False) -> dict[str, Any]:
    data = await api.gql(NOTIFICATIONS, {"unreadOnly": unread_only})
    result: dict[str, Any] = data["notifications"]
    return result


def kinds(box: dict[str, Any]) -> list[str]:
    return [e["node"]["kind"] for e in box["edges"]]


async def test_a_mention_of_a_participant_fills_mentions_and_notifies_them(
    clients: Clients,
) -> None:
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    thread_id = await factories.thread(alice, bob)
    # carol is not in the thread: naming her mentions nobody.
    sent = await factories.send(alice, thread_id, "@bob and @carol, look")
    mentioned = (await alice.gql(MENTIONS, {"m": sent["id"]}))["message"]["mentions"]
    assert mentioned == [{"id": bob.id, "username": "bob"}]
    box = await inbox(bob)
    mention = [e["node"] for e in box["edges"] if e["node"]["kind"] == "MENTION"]
    assert mention == [
        {
            "id": mention[0]["id"],
            "kind": "MENTION",
            "readAt": None,
            "actor": {"id": alice.id},
            "thread": {"id": thread_id},
            "message": {"id": sent["id"]},
        }
    ]
    assert (await inbox(carol))["edges"] == []


async def test_a_mention_right_after_han_letters_fills_mentions_and_notifies(
    clients: Clients,
) -> None:
    # Chinese and Japanese put no space before a name; a Latin letter there is an address.
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    thread_id = await factories.thread(alice, bob, carol)
    sent = await factories.send(alice, thread_id, "谢谢@bob, mail me@carol.example")
    mentioned = (await alice.gql(MENTIONS, {"m": sent["id"]}))["message"]["mentions"]
    assert mentioned == [{"id": bob.id, "username": "bob"}]
    assert kinds(await inbox(bob)) == ["MENTION", "ADDED_TO_THREAD"]
    assert kinds(await inbox(carol)) == ["ADDED_TO_THREAD"]


async def test_a_mention_running_into_han_or_kana_names_the_longest_participant(
    clients: Clients,
) -> None:
    # "@bob谢谢" is "@bob thanks": no space ends the name, so the longest name in the
    # thread that the mention starts with is the one meant (张三, not 张).
    alice, bob, zhang, zhang_san, carol = await clients.users("alice", "bob", "张", "张三", "carol")
    thread_id = await factories.thread(alice, bob, zhang, zhang_san, carol)
    sent = await factories.send(alice, thread_id, "@bob谢谢！@张三さん和@carol你们好")
    mentioned = (await alice.gql(MENTIONS, {"m": sent["id"]}))["message"]["mentions"]
    assert mentioned == [
        {"id": bob.id, "username": "bob"},
        {"id": zhang_san.id, "username": "张三"},
        {"id": carol.id, "username": "carol"},
    ]
    for mentioned_user in (bob, zhang_san, carol):
        assert kinds(await inbox(mentioned_user)) == ["MENTION", "ADDED_TO_THREAD"]
    assert kinds(await inbox(zhang)) == ["ADDED_TO_THREAD"]


async def test_a_reply_notifies_the_parent_author(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    parent = await factories.send(alice, thread_id, "question")
    reply = await factories.send(bob, thread_id, "answer", parentId=parent["id"])
    box = await inbox(alice)
    assert kinds(box) == ["REPLY"]
    assert box["edges"][0]["node"]["message"] == {"id": reply["id"]}
    assert box["edges"][0]["node"]["actor"] == {"id": bob.id}


async def test_a_reply_that_also_mentions_the_parent_author_notifies_once(
    clients: Clients,
) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    parent = await factories.send(alice, thread_id, "question")
    await factories.send(bob, thread_id, "@alice answer", parentId=parent["id"])
    assert kinds(await inbox(alice)) == ["MENTION"]


async def test_a_reaction_notifies_the_author(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    sent = await factories.send(alice, thread_id)
    await bob.gql(REACT, {"m": sent["id"], "e": "👍"})
    box = await inbox(alice)
    assert kinds(box) == ["REACTION"]
    assert box["edges"][0]["node"]["actor"] == {"id": bob.id}
    assert box["edges"][0]["node"]["message"] == {"id": sent["id"]}


async def test_being_added_to_a_thread_notifies_the_new_participant(clients: Clients) -> None:
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    thread_id = await factories.thread(alice, bob)
    await alice.gql(ADD, {"t": thread_id, "u": carol.id})
    for added in (bob, carol):
        box = await inbox(added)
        assert kinds(box) == ["ADDED_TO_THREAD"]
        assert box["edges"][0]["node"]["thread"] == {"id": thread_id}
        assert box["edges"][0]["node"]["actor"] == {"id": alice.id}


async def test_a_muted_thread_notifies_nobody(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    await bob.gql(MARK, {"all": True})
    await bob.gql(MUTE, {"t": thread_id})
    parent = await factories.send(bob, thread_id, "mine")
    await factories.send(alice, thread_id, "@bob hi", parentId=parent["id"])
    await alice.gql(REACT, {"m": parent["id"], "e": "👍"})
    assert (await inbox(bob, unread_only=True))["edges"] == []


async def test_nobody_is_notified_of_their_own_actions(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    parent = await factories.send(alice, thread_id, "@alice note to self")
    await factories.send(alice, thread_id, "again", parentId=parent["id"])
    await alice.gql(REACT, {"m": parent["id"], "e": "👍"})
    box = await inbox(alice)
    assert box["edges"] == []
    assert box["unreadCount"] == 0


async def test_unread_only_and_unread_count_follow_mark_read_by_ids(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    sent = await factories.send(alice, thread_id, "@bob one")
    await factories.send(alice, thread_id, "@bob two")
    await alice.gql(REACT, {"m": sent["id"], "e": "👍"})  # alice's own message: nothing
    box = await inbox(bob)
    assert box["unreadCount"] == 3  # ADDED_TO_THREAD and two mentions
    newest = box["edges"][0]["node"]["id"]
    assert (await bob.gql(MARK, {"ids": [newest]}))["markNotificationsRead"] == 1
    # Marking it again changes nothing.
    assert (await bob.gql(MARK, {"ids": [newest]}))["markNotificationsRead"] == 0
    unread = await inbox(bob, unread_only=True)
    assert unread["unreadCount"] == 2
    assert newest not in [e["node"]["id"] for e in unread["edges"]]
    everything = await inbox(bob)
    assert len(everything["edges"]) == 3
    assert [e["node"]["readAt"] is not None for e in everything["edges"]] == [True, False, False]


async def test_mark_all_notifications_read(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    await factories.send(alice, thread_id, "@bob one")
    assert (await bob.gql(MARK, {"all": True}))["markNotificationsRead"] == 2
    box = await inbox(bob)
    assert box["unreadCount"] == 0
    assert (await inbox(bob, unread_only=True))["edges"] == []


async def test_someone_elses_notification_cannot_be_marked_read(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    await factories.thread(alice, bob)
    bobs = (await inbox(bob))["edges"][0]["node"]["id"]
    assert (await alice.gql(MARK, {"ids": [bobs]}))["markNotificationsRead"] == 0
    assert (await inbox(bob))["unreadCount"] == 1


async def test_mark_notifications_read_needs_ids_or_all(clients: Clients) -> None:
    alice = await clients.user("alice")
    assert await alice.error(MARK, {}) == "BAD_USER_INPUT"


async def test_an_edit_that_mentions_someone_new_notifies_them_once(clients: Clients) -> None:
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    thread_id = await factories.thread(alice, bob, carol)
    sent = await factories.send(alice, thread_id, "hi @bob")
    edit = "mutation($m: ID!, $b: String!) { editMessage(messageId: $m, body: $b) { id } }"
    await alice.gql(edit, {"m": sent["id"], "b": "hi @bob and @carol"})
    await alice.gql(edit, {"m": sent["id"], "b": "hi @bob and @carol!"})
    mentioned = (await alice.gql(MENTIONS, {"m": sent["id"]}))["message"]["mentions"]
    assert sorted(m["username"] for m in mentioned) == ["bob", "carol"]
    # Newest first; bob, mentioned from the start, is not told again.
    assert kinds(await inbox(carol)) == ["MENTION", "ADDED_TO_THREAD"]
    assert kinds(await inbox(bob)) == ["MENTION", "ADDED_TO_THREAD"]


async def test_a_reaction_again_from_a_process_whose_clock_was_behind_notifies_once(
    server: Server, clients: Clients
) -> None:
    """Each process stamps with its own clock: the first REACTION written by one that
    was behind the message's still counts when the reaction comes again."""
    alice, bob = await clients.users("alice", "bob")
    thread_id = await factories.thread(alice, bob)
    sent = await factories.send(alice, thread_id)
    await bob.gql(REACT, {"m": sent["id"], "e": "👍"})
    async with server.runtime.db.transaction("test_skew") as uow:
        message = await uow.session.get(Message, uuid.UUID(sent["id"]))
        assert message is not None
        await uow.session.execute(
            update(Notification)
            .where(Notification.message_id == message.id)
            .values(created_at=message.created_at - timedelta(seconds=30))
        )
    await bob.gql(UNREACT, {"m": sent["id"], "e": "👍"})
    await bob.gql(REACT, {"m": sent["id"], "e": "👍"})
    assert kinds(await inbox(alice)) == ["REACTION"]


async def test_notifications_stamped_alike_page_once_each_in_order(
    server: Server, clients: Clients
) -> None:
    """Pages go by (time, id): notifications with one time come once each, in the order
    one long page gives, whatever the page size."""
    alice, bob = await clients.users("alice", "bob")
    thread_id = await factories.thread(alice, bob)
    for n in range(5):
        await factories.send(alice, thread_id, f"@bob number {n}")
    async with server.runtime.db.transaction("test_ties") as uow:
        await uow.session.execute(
            update(Notification).values(created_at=datetime(2026, 1, 1, tzinfo=UTC))
        )
    page_of = "query($n: Int, $c: String) { notifications(first: $n, after: $c) "
    page_of += "{ edges { cursor node { id } } pageInfo { hasNextPage } } }"
    whole = (await bob.gql(page_of, {"n": 50}))["notifications"]["edges"]
    assert len(whole) == 6  # added to the thread, then five mentions
    for size in (1, 2, 4):
        seen: list[str] = []
        after = None
        while True:
            page = (await bob.gql(page_of, {"n": size, "c": after}))["notifications"]
            seen += [e["node"]["id"] for e in page["edges"]]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["edges"][-1]["cursor"]
        assert seen == [e["node"]["id"] for e in whole]
