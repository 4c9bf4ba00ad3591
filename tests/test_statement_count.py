"""A page of messages costs a fixed number of SQL statements, however many messages it holds.

Every field that fans out (authors, reactions and their users, attachments,
parents, reply counts, edits, mentions, readers) goes through a DataLoader, so
a page of 50 messages costs what a page of 5 costs. Run with ``-s`` to see the
counts and the statements.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from tests import factories
from tests.conftest import ON_POSTGRES, Api, Clients, Server

MAX_STATEMENTS = 12

PAGE = """
query($t: ID!) {
  thread(threadId: $t) {
    messages(last: 50) {
      edges {
        node {
          author { id }
          reactions { emoji users { id } }
          attachments { id }
          parent { author { id } }
          replyCount
          edits { id }
          mentions { id }
          readBy(first: 3) { edges { node { id } } }
        }
      }
    }
  }
}
"""
REACT = "mutation($m: ID!, $e: String!) { addReaction(messageId: $m, emoji: $e) { id } }"
EDIT = "mutation($m: ID!, $b: String!) { editMessage(messageId: $m, body: $b) { id } }"
MARK_READ = "mutation($t: ID!, $s: Int!) { markRead(threadId: $t, seq: $s) { id } }"


@contextmanager
def statements_of(server: Server) -> Iterator[list[str]]:
    """The SQL statements the server runs while the block runs.

    Those SQLAlchemy runs, and on PostgreSQL also those run on a pooled
    connection's asyncpg driver directly (the page's batch reads, BEGIN and
    COMMIT): asyncpg logs its own queries but not SQLAlchemy's prepared ones, so
    nothing is counted twice.
    """
    seen: list[str] = []
    hooked: list[Any] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    def logged(query: Any) -> None:
        seen.append(query.query)

    def checkout(dbapi_connection: Any, *_: Any) -> None:
        driver = getattr(dbapi_connection, "driver_connection", None)
        if hasattr(driver, "add_query_logger"):
            driver.add_query_logger(logged)
            hooked.append(driver)

    engine = server.runtime.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine.pool, "checkout", checkout)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)
        event.remove(engine.pool, "checkout", checkout)
        for driver in hooked:
            driver.remove_query_logger(logged)


async def conversation(people: list[Api], size: int) -> str:
    """A thread of ``size`` messages with replies, reactions, edits, mentions and a reader."""
    alice, bob, carol = people
    thread_id = await factories.thread(alice, bob, carol)
    sent: list[dict[str, Any]] = []
    for i in range(size):
        author = people[i % 3]
        extra = {"parentId": sent[i - 1]["id"]} if i % 4 == 3 else {}
        body = f"message {i} for @bob" if i % 2 == 0 else f"message {i}"
        sent.append(await factories.send(author, thread_id, body, **extra))
        if i % 3 == 0:
            await people[(i + 1) % 3].gql(REACT, {"m": sent[i]["id"], "e": "👍"})
            await people[(i + 2) % 3].gql(REACT, {"m": sent[i]["id"], "e": "🎉"})
        if i % 5 == 1:
            await author.gql(EDIT, {"m": sent[i]["id"], "b": f"message {i}, edited"})
    await bob.gql(MARK_READ, {"t": thread_id, "s": sent[size // 2]["seq"]})
    return thread_id


async def count_page(server: Server, viewer: Api, thread_id: str) -> list[str]:
    """The statements of one request for the page, from the same starting state each time."""
    # The viewer has fetched the page before (so no delivered marker moves now),
    # the viewer cache is warm and the process's short-lived user cache is cold.
    await viewer.gql(PAGE, {"t": thread_id})
    await viewer.gql("{ me { id } }")
    server.runtime.user_cache.discard(lambda _key, _user: True)
    with statements_of(server) as seen:
        body = await viewer.raw(PAGE, {"t": thread_id})
    assert not body.get("errors"), body
    assert body["data"]["thread"]["messages"]["edges"]
    return list(seen)


async def test_a_page_of_50_messages_costs_the_same_few_statements_as_a_page_of_5(
    server: Server, clients: Clients
) -> None:
    people = await clients.users("alice", "bob", "carol")
    big = await conversation(people, 50)
    small = await conversation(people, 5)

    for_50 = await count_page(server, people[0], big)
    for_5 = await count_page(server, people[0], small)

    print(f"\nstatements for 50 messages: {len(for_50)}, for 5 messages: {len(for_5)}")
    for statement in for_50:
        print("  ", " ".join(statement.split())[:160])
    assert len(for_50) <= MAX_STATEMENTS
    assert len(for_50) == len(for_5)


async def test_the_first_fetch_that_moves_the_delivered_marker_also_costs_a_fixed_number(
    server: Server, clients: Clients
) -> None:
    people = await clients.users("alice", "bob", "carol")
    big = await conversation(people, 50)
    small = await conversation(people, 5)
    counts = []
    for thread_id in (big, small):
        await people[0].gql("{ me { id } }")
        server.runtime.user_cache.discard(lambda _key, _user: True)
        with statements_of(server) as seen:
            body = await people[0].raw(PAGE, {"t": thread_id})
        assert not body.get("errors"), body
        counts.append(len(seen))
    print(f"\nfirst fetch, statements for 50 messages: {counts[0]}, for 5 messages: {counts[1]}")
    assert counts[0] <= MAX_STATEMENTS
    assert counts[0] == counts[1]


FIELDS = """
  author { id } reactions { emoji count users { id } } attachments { id }
  parent { author { id } } replyCount edits { previousBody } mentions { id }
  status readBy(first: 2) { edges { node { id } } pageInfo { hasNextPage } }
"""
PLAIN = (
    "query($t: ID!) { messages(threadId: $t, last: 50) { edges { node { seq " + FIELDS + "} } } }"
)
FRAGMENTS = (
    "query($t: ID!) { messages(threadId: $t, last: 50) { edges { node { seq ...Rich } } } }"
    " fragment Rich on Message { ... on Message { " + FIELDS + " } }"
)
ONE = "query($m: ID!) { message(messageId: $m) { seq " + FIELDS + " } }"


async def test_a_page_answers_the_same_through_fragments_and_message_by_message(
    clients: Clients,
) -> None:
    """Fields answer from the batches the page loaded up front, or load their own
    when reached another way (fragments, a single message): the same data either way."""
    people = await clients.users("alice", "bob", "carol")
    thread_id = await conversation(people, 12)
    viewer = people[1]
    plain = (await viewer.gql(PLAIN, {"t": thread_id}))["messages"]["edges"]
    through_fragments = (await viewer.gql(FRAGMENTS, {"t": thread_id}))["messages"]["edges"]
    assert through_fragments == plain
    history = await viewer.gql(
        "query($t: ID!) { messages(threadId: $t, last: 50) { edges { node { id } } } }",
        {"t": thread_id},
    )
    one_by_one = [
        {"node": (await viewer.gql(ONE, {"m": e["node"]["id"]}))["message"]}
        for e in history["messages"]["edges"]
    ]
    assert one_by_one == plain
    assert any(e["node"]["reactions"] for e in plain)
    assert any(e["node"]["readBy"]["edges"] for e in plain)
    assert any(e["node"]["parent"] for e in plain)


# A connection's first use of some types asks the server about them, once.
_INTROSPECTION = (
    "WITH RECURSIVE typeinfo_tree",
    "SELECT current_setting('jit')",
    "SELECT set_config",
)


async def test_an_edit_and_a_reaction_cost_a_fixed_few_statements(
    server: Server, clients: Clients
) -> None:
    alice, bob = await clients.users("alice", "bob")
    thread_id = await factories.thread(alice, bob)
    message = (await factories.send(alice, thread_id, "first"))["id"]
    await bob.gql(REACT, {"m": message, "e": "👍"})  # its author told, once
    counts = []
    for api, query, variables in [
        (alice, EDIT, {"m": message, "b": "first, edited"}),
        (bob, REACT, {"m": message, "e": "🎉"}),
    ]:
        await api.gql("{ me { id } }")  # the viewer cache warm, as on a busy server
        with statements_of(server) as seen:
            await api.gql(query, variables)
        counts.append(len([s for s in seen if not s.startswith(_INTROSPECTION)]))
    # One statement locks the message and its thread; access is then read afresh (a
    # removal that committed meanwhile counts). SQLite shows no BEGIN or COMMIT.
    assert counts == ([11, 14] if ON_POSTGRES else [9, 12])
