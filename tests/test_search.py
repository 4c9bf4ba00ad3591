"""Full-text search over messages: ranking, stemming, and only the caller's live messages.

PostgreSQL ranks with ts_rank_cd over an english tsvector, SQLite by the density of
matched words in a porter-stemmed FTS5 index; the cases here are ones both agree on.
"""

from __future__ import annotations

from typing import Any

from tests import factories
from tests.conftest import Api, Clients

SEARCH = """
query($q: String!, $t: ID, $first: Int, $after: String) {
  searchMessages(query: $q, threadId: $t, first: $first, after: $after) {
    edges { node { id body } }
    pageInfo { hasNextPage endCursor }
  }
}
"""
DELETE = "mutation($m: ID!) { deleteMessage(messageId: $m) { id } }"
EDIT = "mutation($m: ID!, $b: String!) { editMessage(messageId: $m, body: $b) { id } }"
LEAVE = "mutation($t: ID!) { leaveThread(threadId: $t) }"


async def search(api: Api, query: str, **extra: Any) -> list[str]:
    """The bodies found, best first."""
    data = await api.gql(SEARCH, {"q": query, **extra})
    return [e["node"]["body"] for e in data["searchMessages"]["edges"]]


async def test_a_message_with_the_word_more_often_ranks_first(clients: Clients) -> None:
    alice = await clients.user("alice")
    thread_id = await factories.thread(alice)
    once = "we might deploy on friday after the long review meeting with everyone"
    thrice = "deploy, deploy, deploy!"
    await factories.send(alice, thread_id, once)
    await factories.send(alice, thread_id, thrice)
    await factories.send(alice, thread_id, "nothing to see here")
    assert await search(alice, "deploy") == [thrice, once]


async def test_words_close_together_rank_above_words_far_apart(clients: Clients) -> None:
    alice = await clients.user("alice")
    thread_id = await factories.thread(alice)
    apart = (
        "the database was slow all week and nobody knew why until someone asked "
        "whether the schema migration had finished"
    )
    together = "database migration done"
    await factories.send(alice, thread_id, apart)
    await factories.send(alice, thread_id, together)
    await factories.send(alice, thread_id, "database only")
    assert await search(alice, "database migration") == [together, apart]


async def test_search_matches_other_forms_of_a_word(clients: Clients) -> None:
    alice = await clients.user("alice")
    thread_id = await factories.thread(alice)
    await factories.send(alice, thread_id, "she runs every morning")
    await factories.send(alice, thread_id, "the tests are running")
    found = await search(alice, "run")
    assert sorted(found) == ["she runs every morning", "the tests are running"]


async def test_search_input_with_query_syntax_is_taken_as_plain_words(clients: Clients) -> None:
    alice = await clients.user("alice")
    thread_id = await factories.thread(alice)
    await factories.send(alice, thread_id, "release notes ready")
    assert await search(alice, 'release^ "notes*') == ["release notes ready"]
    assert await search(alice, "(notes) +release:") == ["release notes ready"]
    assert await search(alice, "?!") == []


async def test_other_peoples_threads_never_appear(clients: Clients) -> None:
    alice, bob, eve = await clients.users("alice", "bob", "eve")
    shared = await factories.thread(alice, bob)
    secret = await factories.thread(eve)
    await factories.send(alice, shared, "budget for the offsite")
    await factories.send(eve, secret, "budget secret plans")
    assert await search(bob, "budget") == ["budget for the offsite"]
    assert await search(eve, "budget") == ["budget secret plans"]
    await bob.gql(LEAVE, {"t": shared})
    assert await search(bob, "budget") == []


async def test_thread_id_narrows_the_search_to_that_thread(clients: Clients) -> None:
    alice = await clients.user("alice")
    first, second = await factories.thread(alice), await factories.thread(alice)
    await factories.send(alice, first, "lunch at noon")
    await factories.send(alice, second, "lunch moved")
    assert await search(alice, "lunch", t=second) == ["lunch moved"]
    assert sorted(await search(alice, "lunch")) == ["lunch at noon", "lunch moved"]


async def test_deleted_messages_are_not_found_and_edits_are(clients: Clients) -> None:
    alice = await clients.user("alice")
    thread_id = await factories.thread(alice)
    gone = await factories.send(alice, thread_id, "password is hunter2")
    changed = await factories.send(alice, thread_id, "meet in room blue")
    await alice.gql(DELETE, {"m": gone["id"]})
    await alice.gql(EDIT, {"m": changed["id"], "b": "meet in room green"})
    assert await search(alice, "hunter2") == []
    assert await search(alice, "blue") == []
    assert await search(alice, "green") == ["meet in room green"]


async def test_search_pages_without_overlap(clients: Clients) -> None:
    alice = await clients.user("alice")
    thread_id = await factories.thread(alice)
    for i in range(5):
        await factories.send(alice, thread_id, f"standup note {i}")
    first = (await alice.gql(SEARCH, {"q": "standup", "first": 3}))["searchMessages"]
    assert first["pageInfo"]["hasNextPage"] is True
    after = first["pageInfo"]["endCursor"]
    rest = await alice.gql(SEARCH, {"q": "standup", "first": 3, "after": after})
    second = rest["searchMessages"]
    assert second["pageInfo"]["hasNextPage"] is False
    ids = [e["node"]["id"] for e in first["edges"] + second["edges"]]
    assert len(ids) == len(set(ids)) == 5


async def test_an_empty_query_is_bad_input(clients: Clients) -> None:
    alice = await clients.user("alice")
    assert await alice.error(SEARCH, {"q": "   "}) == "BAD_USER_INPUT"


async def test_pages_stay_whole_while_messages_come_and_go(clients: Clients) -> None:
    """Following cursors shows every matching message left unchanged exactly once, though
    messages ranking above and below arrive and one already shown is deleted meanwhile."""
    alice = await clients.user("alice")
    thread_id = await factories.thread(alice)
    old = [await factories.send(alice, thread_id, f"deploy deploy {'x' * i}") for i in range(1, 8)]
    page = (await alice.gql(SEARCH, {"q": "deploy", "first": 3}))["searchMessages"]
    seen = [e["node"]["id"] for e in page["edges"]]
    above = ["deploy deploy deploy", "deploy deploy deploy!"]
    below = ["we may deploy on a later day, or not", "someone said deploy once, long ago"]
    for body in above + below:
        await factories.send(alice, thread_id, body)
    await alice.gql(DELETE, {"m": seen[0]})
    while page["pageInfo"]["hasNextPage"]:
        after = page["pageInfo"]["endCursor"]
        page = (await alice.gql(SEARCH, {"q": "deploy", "first": 3, "after": after}))[
            "searchMessages"
        ]
        seen += [e["node"]["id"] for e in page["edges"]]
    assert len(seen) == len(set(seen)), "a message shown twice"
    assert {m["id"] for m in old} <= set(seen), "a message skipped"


async def test_stop_words_and_hyphens_match_alike_on_both_databases(
    clients: Clients,
) -> None:
    """Stop words are left out of a query and a hyphen between letters separates words,
    as PostgreSQL's english configuration has them. (Accents still differ: SQLite's index
    folds them, so "cafe" finds "café" there, which users expect; PostgreSQL's keeps them.)"""
    alice = await clients.user("alice")
    thread_id = await factories.thread(alice)
    for body in ("the e-mail is late", "mail it, e first", "email me"):
        await factories.send(alice, thread_id, body)
    assert await search(alice, "the") == []
    assert await search(alice, "to be or not to be") == []
    assert await search(alice, "the email") == ["email me"]
    assert sorted(await search(alice, "e-mail")) == ["mail it, e first", "the e-mail is late"]
