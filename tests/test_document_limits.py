"""Document limits: depth at most 12, at most 15 aliases, at most 5000 tokens."""

from __future__ import annotations

from tests.conftest import Clients


def nested(depth: int) -> str:
    # thread(1) messages(2) edges(3) node(4), then parent per level, id at the bottom
    inner = "id"
    for _ in range(depth - 4):
        inner = f"parent {{ {inner} }}"
    return f'{{ thread(threadId: "x") {{ messages {{ edges {{ node {{ {inner} }} }} }} }} }}'


async def test_a_query_deeper_than_12_is_refused(clients: Clients) -> None:
    alice = await clients.user("alice")
    body = await alice.raw(nested(13))
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "depth" in body["errors"][0]["message"]
    allowed = await alice.raw(nested(12))
    assert allowed["errors"][0]["extensions"]["code"] == "NOT_FOUND"  # validated, then executed


async def test_more_than_15_aliases_are_refused(clients: Clients) -> None:
    alice = await clients.user("alice")
    query = "{ " + " ".join(f"a{i}: me {{ id }}" for i in range(16)) + " }"
    body = await alice.raw(query)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    ok = await alice.gql("{ " + " ".join(f"a{i}: me {{ id }}" for i in range(15)) + " }")
    assert len(ok) == 15


async def test_more_than_5000_tokens_are_refused(clients: Clients) -> None:
    alice = await clients.user("alice")
    query = "{ me { " + "id " * 5000 + "} }"
    body = await alice.raw(query)
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
