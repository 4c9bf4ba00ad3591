"""Messages: idempotent, gap-free sending; replies, edits, deletion, pins, paging, text rules."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests import factories
from tests.conftest import Api, Clients

MESSAGE = """
query($m: ID!) {
  message(messageId: $m) {
    id seq body editedAt deletedAt pinned replyCount
    author { id } parent { id }
    edits { previousBody editedBy { id } }
    reactions { emoji count }
  }
}
"""
LAST_SEQ = "query($t: ID!) { thread(threadId: $t) { lastSeq } }"
HISTORY = """
query($t: ID!, $first: Int, $after: String, $last: Int, $before: String) {
  messages(threadId: $t, first: $first, after: $after, last: $last, before: $before) {
    edges { node { seq body } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""
EDIT = (
    "mutation($m: ID!, $b: String!) { editMessage(messageId: $m, body: $b) { id body editedAt } }"
)
DELETE = """
mutation($m: ID!) {
  deleteMessage(messageId: $m) { id body deletedAt reactions { emoji } edits { previousBody } }
}
"""
PIN = "mutation($m: ID!, $p: Boolean!) { pinMessage(messageId: $m, pinned: $p) { id pinned } }"
PINNED = "query($t: ID!) { thread(threadId: $t) { pinnedMessages { id } } }"
REACT = "mutation($m: ID!, $e: String!) { addReaction(messageId: $m, emoji: $e) { id } }"
ADD = """
mutation($t: ID!, $u: ID!, $r: ThreadRole) {
  addParticipant(threadId: $t, userId: $u, role: $r) { role }
}
"""


async def last_seq(api: Api, thread_id: str) -> int:
    return int((await api.gql(LAST_SEQ, {"t": thread_id}))["thread"]["lastSeq"])


async def history(api: Api, thread_id: str, **page: Any) -> dict[str, Any]:
    data = await api.gql(HISTORY, {"t": thread_id, **page})
    result: dict[str, Any] = data["messages"]
    return result


def seqs(connection: dict[str, Any]) -> list[int]:
    return [e["node"]["seq"] for e in connection["edges"]]


# ---------------------------------------------------------------- sending


async def test_send_message_stores_a_cleaned_body_at_the_next_seq(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    before = await last_seq(alice, thread_id)
    sent = await factories.send(alice, thread_id, "  Cafe\u0301\x07 au lait \n", clientId="c-1")
    assert sent["body"] == "Café au lait"
    assert sent["seq"] == before + 1
    assert sent["clientId"] == "c-1"
    seen = (await bob.gql(MESSAGE, {"m": sent["id"]}))["message"]
    assert seen["author"] == {"id": alice.id}
    assert seen["body"] == "Café au lait"
    assert await last_seq(bob, thread_id) == before + 1


async def test_a_reply_names_its_parent_and_counts_on_it(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    parent = await factories.send(alice, thread_id, "question")
    reply = await factories.send(bob, thread_id, "answer", parentId=parent["id"])
    assert (await alice.gql(MESSAGE, {"m": reply["id"]}))["message"]["parent"] == {
        "id": parent["id"]
    }
    assert (await alice.gql(MESSAGE, {"m": parent["id"]}))["message"]["replyCount"] == 1


async def test_deleted_replies_do_not_count_on_their_parent(clients: Clients) -> None:
    # On PostgreSQL the count runs as the driver's own SQL, on SQLite as the
    # SQLAlchemy statement: each backend's run checks its form.
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    parent = await factories.send(alice, thread_id, "question")
    replies = [
        await factories.send(bob, thread_id, f"answer {i}", parentId=parent["id"]) for i in range(3)
    ]
    await bob.gql(DELETE, {"m": replies[1]["id"]})
    assert (await alice.gql(MESSAGE, {"m": parent["id"]}))["message"]["replyCount"] == 2
    page = await alice.gql(
        "query($t: ID!) { thread(threadId: $t) { messages(last: 10) {"
        " edges { node { id replyCount } } } } }",
        {"t": thread_id},
    )
    counts = {e["node"]["id"]: e["node"]["replyCount"] for e in page["thread"]["messages"]["edges"]}
    assert counts[parent["id"]] == 2
    # Every reply deleted: no count at all, not a stale one.
    for reply in (replies[0], replies[2]):
        await bob.gql(DELETE, {"m": reply["id"]})
    assert (await alice.gql(MESSAGE, {"m": parent["id"]}))["message"]["replyCount"] == 0


async def test_a_reply_to_a_message_of_another_thread_is_not_found(clients: Clients) -> None:
    alice = await clients.user("alice")
    here, elsewhere = await factories.thread(alice), await factories.thread(alice)
    parent = await factories.send(alice, elsewhere, "over there")
    code = await alice.error(
        factories.SEND, {"i": {"threadId": here, "body": "hi", "parentId": parent["id"]}}
    )
    assert code == "NOT_FOUND"
    assert (await history(alice, here))["edges"] == []


async def test_sending_to_someone_elses_thread_is_not_found(clients: Clients) -> None:
    alice, eve = await clients.user("alice"), await clients.user("eve")
    thread_id = await factories.thread(alice)
    code = await eve.error(factories.SEND, {"i": {"threadId": thread_id, "body": "hi"}})
    assert code == "NOT_FOUND"


async def test_twenty_concurrent_sends_with_one_client_id_store_one_message(
    clients: Clients,
) -> None:
    alice = await clients.user("alice")
    thread_id = await factories.thread(alice)
    before = await last_seq(alice, thread_id)
    results = await asyncio.gather(
        *(factories.send(alice, thread_id, "once", clientId="same-key") for _ in range(20))
    )
    assert len({r["id"] for r in results}) == 1
    assert {r["seq"] for r in results} == {before + 1}
    assert await last_seq(alice, thread_id) == before + 1
    assert seqs(await history(alice, thread_id)) == [before + 1]


async def test_a_client_id_is_one_authors_key_in_one_thread(clients: Clients) -> None:
    alice, bob = await clients.users("alice", "bob")
    first_thread = await factories.thread(alice, bob)
    second_thread = await factories.thread(alice, bob)
    sent = await factories.send(alice, first_thread, "from alice", clientId="k")
    by_bob = await factories.send(bob, first_thread, "from bob", clientId="k")
    elsewhere = await factories.send(alice, second_thread, "elsewhere", clientId="k")
    # A reply takes the general path: the same rule there.
    reply = await factories.send(bob, second_thread, "re", clientId="k", parentId=elsewhere["id"])
    assert len({sent["id"], by_bob["id"], elsewhere["id"], reply["id"]}) == 4
    assert [m["body"] for m in (by_bob, elsewhere, reply)] == ["from bob", "elsewhere", "re"]
    assert await factories.send(alice, first_thread, "from alice", clientId="k") == sent
    assert await last_seq(alice, first_thread) == 2


async def test_a_resend_with_a_used_client_id_returns_the_first_message_whatever_its_body(
    clients: Clients,
) -> None:
    alice, eve = await clients.users("alice", "eve")
    thread_id = await factories.thread(alice)
    sent = await factories.send(alice, thread_id, "hello", clientId="k")
    for body in ("hello again", "", " \x00 ", "x" * 4001):
        assert await factories.send(alice, thread_id, body, clientId="k") == sent
    assert await last_seq(alice, thread_id) == 1
    # Whoever may not see the thread learns only that, whatever the body.
    for body in ("", "x" * 4001):
        variables = {"i": {"threadId": thread_id, "body": body}}
        assert await eve.error(factories.SEND, variables) == "NOT_FOUND"


async def test_fifty_concurrent_senders_get_seqs_without_gaps_or_duplicates(
    clients: Clients,
) -> None:
    people = [await clients.user(f"user{i:02}") for i in range(50)]
    thread_id = await factories.thread(people[0], *people[1:])
    before = await last_seq(people[0], thread_id)
    results = await asyncio.gather(
        *(factories.send(p, thread_id, f"from {p.username}") for p in people)
    )
    expected = list(range(before + 1, before + 51))
    assert sorted(r["seq"] for r in results) == expected
    assert await last_seq(people[0], thread_id) == before + 50
    assert seqs(await history(people[0], thread_id, first=100)) == expected


# ---------------------------------------------------------------- editing and deleting


async def test_only_the_author_may_edit_and_edits_keep_earlier_bodies_oldest_first(
    clients: Clients,
) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    sent = await factories.send(bob, thread_id, "first")
    assert await alice.error(EDIT, {"m": sent["id"], "b": "owner edit"}) == "FORBIDDEN"
    edited = (await bob.gql(EDIT, {"m": sent["id"], "b": "second"}))["editMessage"]
    assert edited["body"] == "second"
    assert edited["editedAt"] is not None
    await bob.gql(EDIT, {"m": sent["id"], "b": "third"})
    seen = (await alice.gql(MESSAGE, {"m": sent["id"]}))["message"]
    assert seen["body"] == "third"
    assert seen["editedAt"] is not None
    assert seen["edits"] == [
        {"previousBody": "first", "editedBy": {"id": bob.id}},
        {"previousBody": "second", "editedBy": {"id": bob.id}},
    ]


async def test_an_edit_follows_the_body_rules(clients: Clients) -> None:
    alice = await clients.user("alice")
    thread_id = await factories.thread(alice)
    sent = await factories.send(alice, thread_id, "first")
    assert await alice.error(EDIT, {"m": sent["id"], "b": "  \x00 "}) == "BAD_USER_INPUT"
    assert (await alice.gql(MESSAGE, {"m": sent["id"]}))["message"]["edits"] == []


async def test_the_author_may_delete_and_the_message_keeps_its_place_with_nothing_in_it(
    clients: Clients,
) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    sent = await factories.send(bob, thread_id, "oops")
    await bob.gql(EDIT, {"m": sent["id"], "b": "oops, edited"})
    await alice.gql(REACT, {"m": sent["id"], "e": "👍"})
    deleted = (await bob.gql(DELETE, {"m": sent["id"]}))["deleteMessage"]
    assert deleted["body"] == ""
    assert deleted["deletedAt"] is not None
    assert deleted["reactions"] == []
    assert deleted["edits"] == []
    seen = (await alice.gql(MESSAGE, {"m": sent["id"]}))["message"]
    assert (seen["body"], seen["reactions"], seen["edits"]) == ("", [], [])
    assert seqs(await history(alice, thread_id)) == [sent["seq"]]


async def test_editing_a_deleted_message_is_a_conflict_and_changes_nothing(
    clients: Clients,
) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    sent = await factories.send(bob, thread_id, "gone soon")
    await bob.gql(DELETE, {"m": sent["id"]})
    last_seq = (await alice.gql(LAST_SEQ, {"t": thread_id}))["thread"]["lastSeq"]
    assert await bob.error(EDIT, {"m": sent["id"], "b": "back from the dead"}) == "CONFLICT"
    seen = (await alice.gql(MESSAGE, {"m": sent["id"]}))["message"]
    assert (seen["body"], seen["editedAt"], seen["edits"]) == ("", None, [])
    assert (await alice.gql(LAST_SEQ, {"t": thread_id}))["thread"]["lastSeq"] == last_seq


async def test_a_thread_admin_may_delete_anyones_message_and_a_member_may_not(
    clients: Clients,
) -> None:
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    thread_id = await factories.thread(alice, bob)
    await alice.gql(ADD, {"t": thread_id, "u": carol.id, "r": "ADMIN"})
    sent = await factories.send(alice, thread_id, "the owner speaks")
    assert await bob.error(DELETE, {"m": sent["id"]}) == "FORBIDDEN"
    by_admin = (await carol.gql(DELETE, {"m": sent["id"]}))["deleteMessage"]
    assert by_admin["deletedAt"] is not None


async def test_pin_message_is_for_thread_admins_and_lists_in_pinned_messages(
    clients: Clients,
) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    sent = await factories.send(bob, thread_id, "important")
    assert await bob.error(PIN, {"m": sent["id"], "p": True}) == "FORBIDDEN"
    assert (await alice.gql(PIN, {"m": sent["id"], "p": True}))["pinMessage"]["pinned"] is True
    assert (await bob.gql(PINNED, {"t": thread_id}))["thread"]["pinnedMessages"] == [
        {"id": sent["id"]}
    ]
    await alice.gql(PIN, {"m": sent["id"], "p": False})
    assert (await bob.gql(PINNED, {"t": thread_id}))["thread"]["pinnedMessages"] == []


async def test_a_thread_pins_at_most_max_pinned_messages_and_one_more_is_a_conflict(
    clients: Clients,
) -> None:
    from threadline.services.messages import MAX_PINNED

    alice = await clients.user("alice")
    thread_id = await factories.thread(alice)
    sent = [await factories.send(alice, thread_id, f"m{i}") for i in range(MAX_PINNED + 1)]
    for message in sent[:MAX_PINNED]:
        await alice.gql(PIN, {"m": message["id"], "p": True})
    before = await last_seq(alice, thread_id)
    body = await alice.raw(PIN, {"m": sent[-1]["id"], "p": True})
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "CONFLICT"
    assert f"at most {MAX_PINNED} pinned" in error["message"]
    assert await last_seq(alice, thread_id) == before  # no event, no seq used
    pinned = (await alice.gql(PINNED, {"t": thread_id}))["thread"]["pinnedMessages"]
    assert len(pinned) == MAX_PINNED and {"id": sent[-1]["id"]} not in pinned
    # Unpinning one makes room.
    await alice.gql(PIN, {"m": sent[0]["id"], "p": False})
    assert (await alice.gql(PIN, {"m": sent[-1]["id"], "p": True}))["pinMessage"]["pinned"]


async def test_edits_answer_the_newest_50_oldest_first(clients: Clients) -> None:
    from threadline.services.messages import EDITS_SHOWN

    alice = await clients.user("alice")
    thread_id = await factories.thread(alice)
    sent = await factories.send(alice, thread_id, "v0")
    edited = EDITS_SHOWN + 5
    for i in range(1, edited + 1):
        await alice.gql(EDIT, {"m": sent["id"], "b": f"v{i}"})
    query = "query($m: ID!) { message(messageId: $m) { body edits { previousBody } } }"
    got = (await alice.gql(query, {"m": sent["id"]}))["message"]
    assert got["body"] == f"v{edited}"
    assert [e["previousBody"] for e in got["edits"]] == [
        f"v{i}" for i in range(edited - EDITS_SHOWN, edited)
    ]
    # The same through a page of history (the batched read).
    page = (
        "query($t: ID!) { messages(threadId: $t, last: 5) {"
        " edges { node { edits { previousBody } } } } }"
    )
    (edge,) = (await alice.gql(page, {"t": thread_id}))["messages"]["edges"]
    assert [e["previousBody"] for e in edge["node"]["edits"]] == [
        e["previousBody"] for e in got["edits"]
    ]


async def test_a_message_mentions_at_most_50_people(clients: Clients) -> None:
    from threadline.services.messages import MAX_MENTIONS

    alice = await clients.user("alice")
    others = await clients.users(*(f"user{i}" for i in range(MAX_MENTIONS + 1)))
    thread_id = await factories.thread(alice, *others)
    names = [f"@user{i}" for i in range(MAX_MENTIONS + 1)]
    mentions = "mentions { id }"
    send = f"""mutation($i: SendMessageInput!) {{ sendMessage(input: $i) {{ id {mentions} }} }}"""
    too_many = {"i": {"threadId": thread_id, "body": " ".join(names)}}
    body = await alice.raw(send, too_many)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", body
    assert f"at most {MAX_MENTIONS}" in body["errors"][0]["message"]
    enough = {"i": {"threadId": thread_id, "body": " ".join(names[:-1])}}
    sent = (await alice.gql(send, enough))["sendMessage"]
    assert len(sent["mentions"]) == MAX_MENTIONS
    # An edit is held to the same bound.
    edit = "mutation($m: ID!, $b: String!) { editMessage(messageId: $m, body: $b) { id } }"
    assert await alice.error(edit, {"m": sent["id"], "b": " ".join(names)}) == "BAD_USER_INPUT"


# ---------------------------------------------------------------- paging


async def test_history_pages_forwards_and_backwards_over_250_messages_without_loss(
    clients: Clients,
) -> None:
    alice = await clients.user("alice")
    thread_id = await factories.thread(alice)
    for i in range(250):
        await factories.send(alice, thread_id, f"m{i}")
    everything = list(range(1, 251))

    forwards: list[list[int]] = []
    after = None
    while True:
        page = await history(alice, thread_id, first=100, after=after)
        forwards.append(seqs(page))
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert [len(p) for p in forwards] == [100, 100, 50]
    assert [s for p in forwards for s in p] == everything

    backwards: list[list[int]] = []
    before = None
    while True:
        page = await history(alice, thread_id, last=100, before=before)
        backwards.append(seqs(page))
        if not page["pageInfo"]["hasPreviousPage"]:
            break
        before = page["pageInfo"]["startCursor"]
    assert [len(p) for p in backwards] == [100, 100, 50]
    assert [s for p in reversed(backwards) for s in p] == everything


async def test_a_page_of_more_than_100_is_bad_input(clients: Clients) -> None:
    alice = await clients.user("alice")
    thread_id = await factories.thread(alice)
    variables = {"t": thread_id, "first": 101}
    assert await alice.error(HISTORY, variables) == "BAD_USER_INPUT"
    variables = {"t": thread_id, "last": 101}
    assert await alice.error(HISTORY, variables) == "BAD_USER_INPUT"


# ---------------------------------------------------------------- text rules, through the API


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("Cafe\u0301", "Café"),  # NFC
        ("a\x00b\x07c\x1bd\x7fe", "abcde"),  # control characters removed
        ("line one\n\tindented", "line one\n\tindented"),  # newline and tab kept
        ("  \n padded \t\n ", "padded"),  # surrounding whitespace trimmed
        ("x" * 4000, "x" * 4000),  # the longest body
    ],
)
async def test_bodies_are_stored_cleaned(clients: Clients, typed: str, stored: str) -> None:
    alice = await clients.user("alice")
    thread_id = await factories.thread(alice)
    sent = await factories.send(alice, thread_id, typed)
    assert sent["body"] == stored
    assert (await alice.gql(MESSAGE, {"m": sent["id"]}))["message"]["body"] == stored


async def test_a_lone_surrogate_escape_in_the_request_is_removed(clients: Clients) -> None:
    """JSON may carry "\\ud800", which no UTF-8 text column can store: it is dropped."""
    alice = await clients.user("alice")
    thread_id = await factories.thread(alice)
    document = {
        "query": factories.SEND,
        "variables": {"i": {"threadId": thread_id, "body": "a\ud800b"}},
    }
    response = await alice.http.post(
        "/graphql",
        content=json.dumps(document),  # ASCII, with the surrogate as an escape
        headers={"authorization": f"Bearer {alice.token}", "content-type": "application/json"},
    )
    assert response.json()["data"]["sendMessage"]["body"] == "ab"


@pytest.mark.parametrize("body", ["", "   \n\t ", "\x00\x07", "x" * 4001])
async def test_an_empty_or_too_long_body_is_bad_input_and_nothing_is_stored(
    clients: Clients, body: str
) -> None:
    alice = await clients.user("alice")
    thread_id = await factories.thread(alice)
    before = await last_seq(alice, thread_id)
    code = await alice.error(factories.SEND, {"i": {"threadId": thread_id, "body": body}})
    assert code == "BAD_USER_INPUT"
    assert await last_seq(alice, thread_id) == before
    assert (await history(alice, thread_id))["edges"] == []


async def test_a_title_of_201_characters_is_bad_input_and_200_is_fine(clients: Clients) -> None:
    alice = await clients.user("alice")
    create = factories.CREATE_THREAD
    assert await alice.error(create, {"i": {"title": "t" * 201}}) == "BAD_USER_INPUT"
    assert await alice.error(create, {"i": {"title": " \x07 "}}) == "BAD_USER_INPUT"
    made = await alice.gql(create, {"i": {"title": "t" * 200}})
    assert made["createThread"]["title"] == "t" * 200


REPLIES = """
query($m: ID!, $first: Int, $after: String, $last: Int, $before: String) {
  message(messageId: $m) {
    replies(first: $first, after: $after, last: $last, before: $before) {
      edges { cursor node { body } } pageInfo { hasNextPage hasPreviousPage }
    }
  }
}
"""


async def test_replies_page_both_ways_without_other_messages(clients: Clients) -> None:
    alice = await clients.user("alice")
    thread_id = await factories.thread(alice)
    parent = await factories.send(alice, thread_id, "parent")
    other = await factories.send(alice, thread_id, "other parent")
    for i in range(5):
        await factories.send(alice, thread_id, f"reply {i}", parentId=parent["id"])
        await factories.send(alice, thread_id, f"elsewhere {i}", parentId=other["id"])
    await factories.send(alice, thread_id, "not a reply")

    def page(data: dict[str, Any]) -> tuple[list[str], dict[str, bool]]:
        replies = data["message"]["replies"]
        return [e["node"]["body"] for e in replies["edges"]], replies["pageInfo"]

    first = await alice.gql(REPLIES, {"m": parent["id"], "first": 3})
    bodies, info = page(first)
    assert bodies == ["reply 0", "reply 1", "reply 2"] and info["hasNextPage"] is True
    after = first["message"]["replies"]["edges"][-1]["cursor"]
    bodies, info = page(await alice.gql(REPLIES, {"m": parent["id"], "first": 3, "after": after}))
    assert bodies == ["reply 3", "reply 4"] and info["hasNextPage"] is False
    last = await alice.gql(REPLIES, {"m": parent["id"], "last": 2})
    bodies, info = page(last)
    assert bodies == ["reply 3", "reply 4"] and info["hasPreviousPage"] is True
    before = last["message"]["replies"]["edges"][0]["cursor"]
    bodies, _ = page(await alice.gql(REPLIES, {"m": parent["id"], "last": 5, "before": before}))
    assert bodies == ["reply 0", "reply 1", "reply 2"]
