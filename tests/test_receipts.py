"""Read and delivery receipts: markers move forward only, unread counts, status, readBy."""

from __future__ import annotations

import asyncio
from typing import Any

from tests import factories
from tests.conftest import Api, Clients

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
