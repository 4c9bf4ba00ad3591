"""Emoji reactions: one per user and emoji, who reacted, removal, and what counts as an emoji."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests import factories
from tests.conftest import Api, Clients

ADD = """
mutation($m: ID!, $e: String!) {
  addReaction(messageId: $m, emoji: $e) { reactions { emoji count reactedByMe users { id } } }
}
"""
REMOVE = """
mutation($m: ID!, $e: String!) {
  removeReaction(messageId: $m, emoji: $e) { reactions { emoji count } }
}
"""
REACTIONS = """
query($m: ID!) { message(messageId: $m) { reactions { emoji count reactedByMe users { id } } } }
"""
# Twenty-one distinct, single-code-point emoji.
EMOJI = "😀😁😂😃😄😅😆😇😈😉😊😋😌😍😎😏😐😑😒😓😔"


async def reactions(api: Api, message_id: str) -> list[dict[str, Any]]:
    data = await api.gql(REACTIONS, {"m": message_id})
    result: list[dict[str, Any]] = data["message"]["reactions"]
    return result


async def test_adding_the_same_emoji_twice_counts_once(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    message = await factories.send(alice, thread_id)
    await bob.gql(ADD, {"m": message["id"], "e": "👍"})
    again = (await bob.gql(ADD, {"m": message["id"], "e": "👍"}))["addReaction"]["reactions"]
    assert again == [{"emoji": "👍", "count": 1, "reactedByMe": True, "users": [{"id": bob.id}]}]


async def test_reacted_by_me_is_true_for_the_reactor_only_and_users_lists_them_all(
    clients: Clients,
) -> None:
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    thread_id = await factories.thread(alice, bob, carol)
    message = await factories.send(alice, thread_id)
    await bob.gql(ADD, {"m": message["id"], "e": "🎉"})
    await carol.gql(ADD, {"m": message["id"], "e": "🎉"})
    await carol.gql(ADD, {"m": message["id"], "e": "❤️"})

    seen_by_bob = await reactions(bob, message["id"])
    assert [(g["emoji"], g["count"], g["reactedByMe"]) for g in seen_by_bob] == [
        ("🎉", 2, True),
        ("❤️", 1, False),
    ]
    assert [u["id"] for u in seen_by_bob[0]["users"]] == [bob.id, carol.id]
    seen_by_alice = await reactions(alice, message["id"])
    assert [g["reactedByMe"] for g in seen_by_alice] == [False, False]


async def test_remove_reaction_takes_back_only_the_callers_reaction(clients: Clients) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    message = await factories.send(alice, thread_id)
    await alice.gql(ADD, {"m": message["id"], "e": "👍"})
    await bob.gql(ADD, {"m": message["id"], "e": "👍"})
    left = (await bob.gql(REMOVE, {"m": message["id"], "e": "👍"}))["removeReaction"]
    assert left["reactions"] == [{"emoji": "👍", "count": 1}]
    await alice.gql(REMOVE, {"m": message["id"], "e": "👍"})
    assert await reactions(bob, message["id"]) == []


async def test_an_unqualified_heart_is_the_same_reaction_as_the_qualified_one(
    clients: Clients,
) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    message = await factories.send(alice, thread_id)
    await alice.gql(ADD, {"m": message["id"], "e": "\u2764"})
    await bob.gql(ADD, {"m": message["id"], "e": "\u2764\ufe0f"})
    groups = await reactions(alice, message["id"])
    assert [(g["emoji"], g["count"]) for g in groups] == [("\u2764\ufe0f", 2)]


@pytest.mark.parametrize("emoji", ["ab", "👍👍", "", "🏽"])
async def test_anything_but_one_emoji_is_bad_input(clients: Clients, emoji: str) -> None:
    alice = await clients.user("alice")
    thread_id = await factories.thread(alice)
    message = await factories.send(alice, thread_id)
    assert await alice.error(ADD, {"m": message["id"], "e": emoji}) == "BAD_USER_INPUT"
    assert await reactions(alice, message["id"]) == []


async def test_the_twenty_first_distinct_emoji_on_a_message_is_bad_input(
    clients: Clients,
) -> None:
    alice, bob = await clients.user("alice"), await clients.user("bob")
    thread_id = await factories.thread(alice, bob)
    message = await factories.send(alice, thread_id)
    for emoji in EMOJI[:20]:
        await alice.gql(ADD, {"m": message["id"], "e": emoji})
    assert await bob.error(ADD, {"m": message["id"], "e": EMOJI[20]}) == "BAD_USER_INPUT"
    # Joining one of the twenty is still fine.
    await bob.gql(ADD, {"m": message["id"], "e": EMOJI[0]})
    groups = await reactions(bob, message["id"])
    assert len(groups) == 20
    assert groups[0]["count"] == 2


async def test_reacting_in_someone_elses_thread_is_not_found(clients: Clients) -> None:
    alice, eve = await clients.user("alice"), await clients.user("eve")
    thread_id = await factories.thread(alice)
    message = await factories.send(alice, thread_id)
    assert await eve.error(ADD, {"m": message["id"], "e": "👍"}) == "NOT_FOUND"


async def test_thirty_people_reacting_at_once_all_count(clients: Clients) -> None:
    people = [await clients.user(f"fan{i:02}") for i in range(30)]
    thread_id = await factories.thread(people[0], *people[1:])
    message = await factories.send(people[0], thread_id)
    results = await asyncio.gather(*(p.raw(ADD, {"m": message["id"], "e": "🔥"}) for p in people))
    assert [r.get("errors") for r in results] == [None] * 30
    groups = await reactions(people[0], message["id"])
    assert [(g["emoji"], g["count"]) for g in groups] == [("🔥", 30)]


async def test_a_thumbs_up_with_a_stray_variation_selector_is_the_same_reaction(
    clients: Clients,
) -> None:
    alice, bob = await clients.users("alice", "bob")
    thread_id = await factories.thread(alice, bob)
    message = await factories.send(alice, thread_id)
    await alice.gql(ADD, {"m": message["id"], "e": "👍"})
    await bob.gql(ADD, {"m": message["id"], "e": "👍\ufe0f"})  # as some emoji pickers send it
    assert [(g["emoji"], g["count"]) for g in await reactions(bob, message["id"])] == [("👍", 2)]


async def test_distinct_emoji_racing_past_twenty_stop_at_twenty(clients: Clients) -> None:
    people = await clients.users(*(f"racer{i:02}" for i in range(25)))
    thread_id = await factories.thread(people[0], *people[1:])
    message = await factories.send(people[0], thread_id)
    distinct = [chr(0x1F600 + i) for i in range(25)]
    results = await asyncio.gather(
        *(p.raw(ADD, {"m": message["id"], "e": e}) for p, e in zip(people, distinct, strict=True))
    )
    refused = [r["errors"][0]["extensions"]["code"] for r in results if r.get("errors")]
    assert refused == ["BAD_USER_INPUT"] * 5
    assert len(await reactions(people[0], message["id"])) == 20


async def test_a_reaction_group_lists_its_first_twenty_users(clients: Clients) -> None:
    people = await clients.users(*(f"fan{i:02}" for i in range(21)))
    thread_id = await factories.thread(people[0], *people[1:])
    message = await factories.send(people[0], thread_id)
    for person in people:
        await person.gql(ADD, {"m": message["id"], "e": "🔥"})
    (group,) = await reactions(people[0], message["id"])
    assert group["count"] == 21
    assert [u["id"] for u in group["users"]] == [p.id for p in people[:20]]
