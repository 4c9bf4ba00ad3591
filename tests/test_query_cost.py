"""Query cost: an operation whose estimated cost is over MAX_QUERY_COST is refused before it runs.

The cost is the sum over selected fields of the product of the page sizes along
their path (CONTRACT.md, document limits). Refused with QUERY_TOO_COSTLY and
``cost``/``maxCost``, on every path: JSON POST, GET, WebSocket queries and
subscriptions. A server with MAX_QUERY_COST=1 refuses everything, which shows
the cost of any operation in its error: that is how costs are compared here.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from tests import factories
from tests.conftest import Api, Clients, Server, start_server, stop_server, token_for
from tests.wsclient import GraphQLWS
from threadline.config import Settings

# Issue 11, item 3: 43 s of server CPU and a 63 MiB answer before this limit.
ISSUE_QUERY = """
{
  threads(first: 100) { edges { node {
    messages(last: 100) { edges { node {
      reactions { emoji count }
      readBy(first: 100) { edges { node { id } } }
      replies(last: 100) { edges { node {
        readBy(first: 100) { edges { node { id } } }
      } } }
    } } }
  } } }
}
"""
# The README's worked example.
README_PAGE = """
query($t: ID!) {
  thread(threadId: $t) {
    unreadCount
    messages(last: 20) {
      pageInfo { hasPreviousPage startCursor }
      edges { node { seq body author { displayName } replyCount status } }
    }
  }
}
"""
THREAD_LIST = """
{ threads(first: 20) { edges { node {
  id title unreadCount lastMessage { id body createdAt author { id displayName } }
} } } }
"""
# CONTRACT.md: a thread of 50 messages with authors, reactions and readBy of 10.
RICH_PAGE = """
query($t: ID!) {
  thread(threadId: $t) {
    messages(last: 50) { edges { node {
      id body createdAt author { id displayName imageUrl }
      reactions { emoji count reactedByMe }
      readBy(first: 10) { edges { node { id displayName } } }
    } } }
  }
}
"""


def refusal(body: dict[str, Any]) -> dict[str, Any]:
    assert body.get("data") is None, body
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "QUERY_TOO_COSTLY", error
    extensions: dict[str, Any] = error["extensions"]
    return extensions


async def test_the_issues_query_is_refused_before_it_runs_in_milliseconds(
    clients: Clients,
) -> None:
    alice = await clients.user("alice")
    await factories.thread(alice)
    timings = []
    for _ in range(10):  # the first is parsed and costed, the others come from the cache
        started = time.perf_counter()
        body = await alice.raw(ISSUE_QUERY)
        timings.append((time.perf_counter() - started) * 1000)
        extensions = refusal(body)
        assert extensions["maxCost"] == 50_000
        assert extensions["cost"] > 100_000_000
    print(
        f"\nissue query refused (wall, over HTTP): first {timings[0]:.1f} ms, "
        f"then median {statistics.median(timings[1:]):.1f} ms, max {max(timings[1:]):.1f} ms"
    )
    # The issue asks for under 50 ms; the margin is for a loaded 2-core machine.
    assert max(timings) < 500


async def test_a_costly_mutation_changes_nothing(clients: Clients) -> None:
    alice = await clients.user("alice")
    thread_id = await factories.thread(alice)
    costly = """
    mutation($t: ID!) {
      sendMessage(input: {threadId: $t, body: "never stored"}) {
        thread { messages { edges { node {
          readBy { edges { node { id } } }
          replies { edges { node { id } } }
        } } } }
      }
    }
    """
    refusal(await alice.raw(costly, {"t": thread_id}))
    page = await alice.gql(
        "query($t: ID!) { thread(threadId: $t) { lastSeq messages { edges { node { id } } } } }",
        {"t": thread_id},
    )
    assert page["thread"]["lastSeq"] == 0
    assert page["thread"]["messages"]["edges"] == []


async def test_realistic_pages_are_answered(clients: Clients) -> None:
    alice, bob = await clients.users("alice", "bob")
    thread_id = await factories.thread(alice, bob)
    for i in range(3):
        await factories.send(alice, thread_id, f"m{i}")
    page = await alice.gql(README_PAGE, {"t": thread_id})
    assert len(page["thread"]["messages"]["edges"]) == 3
    threads = await bob.gql(THREAD_LIST)
    assert threads["threads"]["edges"][0]["node"]["lastMessage"]["body"] == "m2"
    rich = await bob.gql(RICH_PAGE, {"t": thread_id})
    assert rich["thread"]["messages"]["edges"][0]["node"]["author"]["displayName"]


async def test_get_and_websocket_operations_are_costed_too(
    clients: Clients, server: Server
) -> None:
    alice = await clients.user("alice")
    thread_id = await factories.thread(alice)
    response = await clients.http.get(
        "/graphql",
        params={"query": ISSUE_QUERY},
        headers={"authorization": f"Bearer {alice.token}"},
    )
    refusal(response.json())

    ws = await GraphQLWS.connect(server.ws_url, token_for("alice"))
    try:
        await ws.subscribe(ISSUE_QUERY)
        message = await ws.next()
        assert message["type"] in {"next", "error"}, message
        errors = message["payload"]["errors"] if message["type"] == "next" else message["payload"]
        assert errors[0]["extensions"]["code"] == "QUERY_TOO_COSTLY", message
        # A subscription whose every event would cost too much.
        await ws.subscribe(
            """subscription($t: ID!) { threadEvents(threadId: $t) { seq
              ... on MessageCreated { message { replies { edges { node { id
                readBy { edges { node { id displayName imageUrl } } } } } } } } } }""",
            {"t": thread_id},
        )
        message = await ws.next()
        assert message["type"] == "error", message
        assert message["payload"][0]["extensions"]["code"] == "QUERY_TOO_COSTLY"
        assert message["payload"][0]["extensions"]["cost"] > 50_000
        # The socket still serves what is within the limit.
        await ws.subscribe("{ me { username } }")
        message = await ws.next()
        assert message["payload"]["data"] == {"me": {"username": "alice"}}
    finally:
        await ws.close()


async def costs_on(settings: Settings) -> Any:
    """A server that refuses every operation, and a function giving an operation's cost."""
    server = await start_server(settings.model_copy(update={"max_query_cost": 1}))

    async def cost(api: Api, query: str, variables: dict[str, Any] | None = None) -> int:
        headers = {"authorization": f"Bearer {api.token}"}
        response = await api.http.post(
            server.base + "/graphql",
            content=json.dumps({"query": query, "variables": variables or {}}),
            headers={**headers, "content-type": "application/json"},
        )
        extensions = refusal(response.json())
        assert extensions["maxCost"] == 1
        return int(extensions["cost"])

    return server, cost


async def test_costs_follow_the_page_sizes_fragments_count_as_inlined(
    clients: Clients, settings: Settings
) -> None:
    alice = await clients.user("alice")
    strict, cost = await costs_on(settings)
    try:
        # thread 1, messages 1, 50 x (edges, node, 6 fields), 50 x 3 author fields,
        # 50 x 10 reaction groups x 3, 50 x 10 readers x (edges, node, id, displayName)
        assert await cost(alice, RICH_PAGE, {"t": "x"}) == 4052
        inlined = """
        query($t: ID!, $n: Int) {
          thread(threadId: $t) {
            messages(last: $n) { edges { node {
              id body author { id displayName }
              readBy(first: 10) { edges { node { id displayName } } }
            } } }
          }
        }
        """
        with_fragments = """
        query($t: ID!, $n: Int) {
          thread(threadId: $t) { ...Page }
        }
        fragment Page on Thread { messages(last: $n) { edges { node { ...Line ...Readers } } } }
        fragment Line on Message { id body author { ...Who } ... on Message { author { id } } }
        fragment Readers on Message {
          readBy(first: 10) { edges { node { ...Who } } }
          ... { id }
        }
        fragment Who on User { id displayName }
        """
        for n in (5, 50, None):
            variables = {"t": "x", "n": n}
            assert await cost(alice, with_fragments, variables) == await cost(
                alice, inlined, variables
            )
        # Variables give the page sizes: 2 + n x (6 fields + 2 author + 10 x 4 readers).
        assert await cost(alice, inlined, {"t": "x", "n": 5}) == 2 + 5 * 48
        assert await cost(alice, inlined, {"t": "x", "n": 50}) == 2 + 50 * 48
        assert await cost(alice, inlined, {"t": "x", "n": 5}) == 2 + 5 * 48  # cached per value
        # Unset (or null) counts the page maximum, 100; aliases count separately.
        assert await cost(alice, inlined, {"t": "x"}) == 2 + 100 * 48
        # A variable's default when it is not sent; null is unset.
        by_default = "query($n: Int = 7) { threads(first: $n) { edges { node { id } } } }"
        assert await cost(alice, by_default) == 1 + 7 * 3
        assert await cost(alice, by_default, {"n": None}) == 1 + 100 * 3
        assert await cost(alice, by_default) == 1 + 7 * 3
        assert await cost(alice, "{ a: threads(first: 3) { edges { node { id } } } }") == 10
        assert await cost(alice, "{ a: threads { edges { node { id } } } b: me { id } }") == 303
    finally:
        await stop_server(strict)


async def test_the_cost_limit_is_a_setting(clients: Clients, settings: Settings) -> None:
    alice = await clients.user("alice")
    roomy = await start_server(settings.model_copy(update={"max_query_cost": 10**9}))
    try:
        response = await alice.http.post(
            roomy.base + "/graphql",
            json={"query": ISSUE_QUERY},
            headers={"authorization": f"Bearer {alice.token}"},
        )
        assert response.json() == {"data": {"threads": {"edges": []}}}
    finally:
        await stop_server(roomy)


# Finding 1: lists that are not connections were counted as 10 items whatever they held.
PINNED_IN_PINNED = """
query($t: ID!) { thread(threadId: $t) { pinnedMessages { thread { pinnedMessages { id body } } } } }
"""
EDITS_ALIASED = (
    "query($m: ID!) {"
    + " ".join(f"m{i}: message(messageId: $m) {{ edits {{ previousBody }} }}" for i in range(15))
    + "}"
)


async def test_lists_count_at_the_bounds_the_services_enforce(
    clients: Clients, settings: Settings
) -> None:
    from threadline.schema.query_cost import REACTIONS_COUNTED
    from threadline.services import messages, users

    alice = await clients.user("alice")
    strict, cost = await costs_on(settings)
    try:
        pins = messages.MAX_PINNED
        # thread, pinnedMessages, pins x (thread, pinnedMessages), pins^2 x (id, body)
        assert await cost(alice, PINNED_IN_PINNED, {"t": "x"}) == 2 + 2 * pins + 2 * pins**2
        assert await cost(alice, EDITS_ALIASED, {"m": "x"}) == 15 * (2 + messages.EDITS_SHOWN)
        single = "query($m: ID!) { message(messageId: $m) { %s } }"
        for field, bound in (
            ("attachments { id }", messages.MAX_ATTACHMENTS),
            ("mentions { id }", messages.MAX_MENTIONS),
            ("reactions { emoji }", REACTIONS_COUNTED),
        ):
            assert await cost(alice, single % field, {"m": "x"}) == 2 + bound, field
        users_of = single % "reactions { users { id } }"
        assert await cost(alice, users_of, {"m": "x"}) == (
            2 + REACTIONS_COUNTED * (1 + REACTIONS_COUNTED)
        )
        assert await cost(alice, "{ mySessions { id } }") == 1 + users.SESSIONS_SHOWN
    finally:
        await stop_server(strict)


async def test_pinned_messages_nested_three_deep_are_refused(clients: Clients) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    deeper = """
    query($t: ID!) { thread(threadId: $t) { pinnedMessages { thread { pinnedMessages {
      thread { pinnedMessages { id body } } } } } } }
    """
    response = await clients.http.post(
        "/graphql",
        json={"query": deeper, "variables": {"t": tid}},
        headers={"authorization": f"Bearer {alice.token}"},
    )
    assert refusal(response.json())["cost"] > 50_000
    # The attacker's two-deep shape is within the limit now that it is bounded.
    assert (await alice.gql(PINNED_IN_PINNED, {"t": tid}))["thread"]["pinnedMessages"] == []


async def test_subscriptions_count_their_lists_at_their_bounds(
    clients: Clients, server: Server
) -> None:
    alice = await clients.user("alice")
    tid = await factories.thread(alice)
    selection = """
    subscription($t: ID!) { threadEvents(threadId: $t) { seq ... on MessageCreated { message {
      thread { pinnedMessages { thread { pinnedMessages { thread { pinnedMessages { id } } } } } }
    } } } }
    """
    ws = await GraphQLWS.connect(server.ws_url, token_for("alice"))
    try:
        await ws.subscribe(selection, {"t": tid})
        message = await ws.next()
        assert message["type"] == "error", message
        assert message["payload"][0]["extensions"]["code"] == "QUERY_TOO_COSTLY"
    finally:
        await ws.close()
