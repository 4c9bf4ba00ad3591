"""threads(search): a case-insensitive substring of the title, in the caller's threads."""

from __future__ import annotations

from tests import factories
from tests.conftest import Api, Clients

THREADS = """
query($s: String, $first: Int, $after: String) {
  threads(search: $s, first: $first, after: $after) {
    edges { node { title } } pageInfo { hasNextPage endCursor } } }
"""


async def test_threads_search_matches_titles_of_the_callers_threads_only(clients: Clients) -> None:
    alice, bob = await clients.users("alice", "bob")
    for title in ("Launch plan", "lunch", "Q3 LAUNCH review", "100% done", "a_b"):
        await factories.thread(alice, bob, title=title)
    await factories.thread(bob, title="Launch secrets")  # alice is not in it

    async def titles(api: Api, search: str | None) -> set[str]:
        data = await api.gql(THREADS, {"s": search, "first": 50})
        return {e["node"]["title"] for e in data["threads"]["edges"]}

    assert await titles(alice, "launch") == {"Launch plan", "Q3 LAUNCH review"}
    assert await titles(bob, "launch") == {"Launch plan", "Q3 LAUNCH review", "Launch secrets"}
    # LIKE's wildcards are plain characters in a search.
    assert await titles(alice, "100%") == {"100% done"}
    assert await titles(alice, "a_") == {"a_b"}
    assert len(await titles(alice, "  ")) == 5  # blank: no filter
    assert await titles(alice, "nothing like it") == set()


async def test_threads_search_pages_without_overlap(clients: Clients) -> None:
    alice = await clients.user("alice")
    for n in range(5):
        await factories.thread(alice, title=f"Standup {n}")
    await factories.thread(alice, title="Other")
    seen: list[str] = []
    after = None
    while True:
        data = await alice.gql(THREADS, {"s": "standup", "first": 2, "after": after})
        seen += [e["node"]["title"] for e in data["threads"]["edges"]]
        if not data["threads"]["pageInfo"]["hasNextPage"]:
            break
        after = data["threads"]["pageInfo"]["endCursor"]
    assert sorted(seen) == [f"Standup {n}" for n in range(5)]


async def test_threads_search_ignores_case_beyond_ascii(clients: Clients) -> None:
    alice = await clients.user("alice")
    for title in ("Équipe Été", "Straße", "ΣΟΦΙΑ notes"):
        await factories.thread(alice, title=title)

    async def titles(search: str) -> set[str]:
        data = await alice.gql(THREADS, {"s": search, "first": 50})
        return {e["node"]["title"] for e in data["threads"]["edges"]}

    assert await titles("Équipe") == {"Équipe Été"}
    assert await titles("équipe été") == {"Équipe Été"}
    assert await titles("ÉTÉ") == {"Équipe Été"}
    assert await titles("straße") == {"Straße"}
    assert await titles("σοφια") == {"ΣΟΦΙΑ notes"}
