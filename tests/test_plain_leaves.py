"""The plain-leaves executor answers a page's scalar fields itself, and answers them right."""

from __future__ import annotations

import pytest

from tests import factories
from tests.conftest import Clients, Server
from threadline.config import Settings
from threadline.schema.engine.plain_leaves import plain_leaves


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # These tests are about the fast paths: on, whatever this run's FAST_PATHS says.
    return settings.model_copy(update={"fast_paths": True})


PAGE = """
query($t: ID!) { thread(threadId: $t) { messages(last: 10) {
  edges { node { seq body clientId status } } } } }
"""


async def test_a_page_of_messages_has_its_scalar_fields_read_by_the_plain_leaves_executor(
    server: Server, clients: Clients
) -> None:
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    for i in range(10):
        await factories.send(alice, tid, f"m{i}", clientId=f"c{i}" if i % 2 else None)
    schema = server.app.state.graphql.schema
    executor = schema.runner.executor_class
    # Of the selected fields, those with no resolver of their own (seq, clientId...).
    plain = {"seq", "body", "clientId", "status"} & set(plain_leaves(schema)["Message"])
    assert {"seq", "clientId"} <= plain
    before = executor.answered.count
    page = (await bob.gql(PAGE, {"t": tid}))["thread"]["messages"]["edges"]
    # Each of them, for each of the 10 messages (the null clientIds included).
    assert executor.answered.count - before == 10 * len(plain)
    assert [e["node"] for e in page] == [
        {"seq": i + 1, "body": f"m{i}", "clientId": f"c{i}" if i % 2 else None, "status": "SENT"}
        for i in range(10)
    ]


async def test_a_request_leaves_the_executor_classes_as_they_were(
    server: Server, clients: Clients
) -> None:
    """Nothing is assigned to the executor's classes per request: each assignment to a
    class drops CPython's caches of its attributes and the lookups specialised on it
    (a count kept on the class cost a page some 10 % of its CPU)."""
    alice, bob = await clients.users("alice", "bob")
    tid = await factories.thread(alice, bob)
    await factories.send(alice, tid, "hello", clientId="c-1")
    executor = server.app.state.graphql.schema.runner.executor_class
    before = [dict(vars(klass)) for klass in executor.__mro__]
    await bob.gql(PAGE, {"t": tid})
    assert [dict(vars(klass)) for klass in executor.__mro__] == before
