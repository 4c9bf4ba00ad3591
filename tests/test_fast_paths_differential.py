"""The fast paths answer byte for byte as strawberry's own engine does.

Two servers on one database: one with the fast paths (the direct engine, plain
leaves, lean resolvers), one with ``FAST_PATHS=off``. A corpus of operations
(queries with fragments, aliases and variables; errors of each code a request can
provoke; mutations; queries, mutations and subscriptions over WebSocket; GET and
multipart) goes to both, and the answers must be the same bytes. Reads go to both
servers on the same state; each mutation step is a group that leaves the state as
it found it (add then remove, pin then unpin...), run on one server, then the
other. Nothing is normalised: the two servers read the same rows.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from importlib.metadata import version
from typing import Any

import httpx
import pytest
from graphql import GraphQLObjectType
from graphql.execution import Executor
from prometheus_client import REGISTRY

from tests import factories
from tests.conftest import Api, Server, start_server, stop_server, token_for
from tests.wsclient import GraphQLWS
from threadline.config import Settings
from threadline.schema.engine import internals
from threadline.schema.engine.internals import graphql_schema

pytestmark = pytest.mark.asyncio

MISSING_ID = "00000000-0000-4000-8000-000000000000"

USER_FIELDS = "fragment U on User { id username displayName imageUrl role createdAt deletedAt }"
MESSAGE_FIELDS = """
fragment M on Message {
  id seq body clientId editedAt deletedAt pinned createdAt status replyCount
  author { ...U } parent { id seq }
  reactions { emoji count reactedByMe users { username } }
  edits { previousBody editedBy { username } editedAt }
  mentions { username }
  readBy(first: 5) { edges { node { username } } pageInfo { hasNextPage } }
}
"""


PIN = "mutation($m: ID!, $p: Boolean!) { pinMessage(messageId: $m, pinned: $p) { id pinned } }"
MUTE = "mutation($t: ID!, $x: Boolean!) { muteThread(threadId: $t, muted: $x) { id muted } }"
UPDATE_THREAD = (
    'mutation($t: ID!) { updateThread(threadId: $t, input: {title: "%s"}) '
    "{ id title description } }"
)
ROLE = (
    "mutation($t: ID!, $u: ID!) { setParticipantRole(threadId: $t, userId: $u, role: %s) "
    "{ role user { username } } }"
)


def op(text: str, variables: dict[str, Any] | None = None, name: str | None = None) -> Any:
    body: dict[str, Any] = {"query": text}
    if variables is not None:
        body["variables"] = variables
    if name is not None:
        body["operationName"] = name
    return body


def read_corpus(w: dict[str, str]) -> list[tuple[str, Any]]:
    """(who asks, the JSON body) for every read; ``w`` holds the seeded ids."""
    t, m, reply, gone = w["thread"], w["message"], w["reply"], w["deleted"]
    page = f"{USER_FIELDS} {MESSAGE_FIELDS}"
    return [
        ("alice", op("{ me { id username displayName role createdAt preferences } }")),
        ("alice", op("{ me { ...U } } " + USER_FIELDS)),
        ("alice", op("{ a: me { id } b: me { username } c: __typename }")),
        ("alice", op("query Me { me { id } }", name="Me")),
        ("alice", op("query A { me { id } } query B { me { username } }", name="B")),
        ("alice", op("query($t: ID!) { thread(threadId: $t) { id title } }", {"t": t})),
        (
            "alice",
            op(
                """query($t: ID!) { thread(threadId: $t) { id title description isDirect
                createdAt updatedAt lastMessageAt lastSeq myRole unreadCount lastReadSeq
                muted createdBy { ...U } lastMessage { id body } pinnedMessages { id }
                participants(first: 10) { totalCount edges { cursor node { role joinedAt
                lastReadSeq lastDeliveredSeq user { ...U } } } pageInfo { hasNextPage } } } }
                """
                + USER_FIELDS,
                {"t": t},
            ),
        ),
        (
            "alice",
            op(
                "query($t: ID!) { thread(threadId: $t) { messages(last: 20) { "
                "pageInfo { hasPreviousPage hasNextPage startCursor endCursor } "
                "edges { cursor node { ...M } } } } } " + page,
                {"t": t},
            ),
        ),
        (
            "bob",
            op(
                "query($t: ID!, $n: Int) { thread(threadId: $t) { messages(first: $n) { "
                "edges { node { ...M } } } } } " + page,
                {"t": t, "n": 3},
            ),
        ),
        (
            "bob",
            op(
                "query($t: ID!) { messages(threadId: $t, last: 2) { edges { node { id seq } } "
                "pageInfo { startCursor hasPreviousPage } } }",
                {"t": t},
            ),
        ),
        ("alice", op("query($m: ID!) { message(messageId: $m) { ...M } } " + page, {"m": m})),
        (
            "alice",
            op(
                "query($m: ID!) { message(messageId: $m) { replies(first: 5) { edges { node "
                "{ id body parent { id } } } } thread { id title } } }",
                {"m": m},
            ),
        ),
        (
            "alice",
            op("query($m: ID!) { message(messageId: $m) { id body deletedAt } }", {"m": gone}),
        ),
        ("carol", op("query($m: ID!) { message(messageId: $m) { id } }", {"m": reply})),
        ("alice", op("query($id: ID!) { node(id: $id) { id __typename } }", {"id": t})),
        (
            "alice",
            op(
                "query($id: ID!) { node(id: $id) { ... on Message { body seq } "
                "... on Thread { title } } }",
                {"id": m},
            ),
        ),
        (
            "alice",
            op("query($id: ID!) { node(id: $id) { ... on User { username } } }", {"id": w["bob"]}),
        ),
        (
            "alice",
            op("query($id: ID!) { user(id: $id) { ...U } } " + USER_FIELDS, {"id": w["bob"]}),
        ),
        ("alice", op('{ users(search: "o", first: 10) { edges { cursor node { username } } } }')),
        (
            "alice",
            op(
                "{ users(first: 2) { edges { node { username } } "
                "pageInfo { hasNextPage endCursor } } }"
            ),
        ),
        (
            "alice",
            op(
                "{ threads(first: 20) { edges { cursor node { id title lastSeq unreadCount "
                "myRole lastMessage { body author { username } } } } pageInfo { hasNextPage } } }"
            ),
        ),
        ("bob", op('{ threads(first: 5, search: "Room") { edges { node { title } } } }')),
        (
            "alice",
            op('{ searchMessages(query: "hello", first: 10) { edges { node { body seq } } } }'),
        ),
        (
            "bob",
            op(
                "{ notifications(first: 10) { unreadCount edges { node { kind actor { username } "
                "message { body } thread { title } readAt } } } }"
            ),
        ),
        ("bob", op("{ notifications(unreadOnly: true) { unreadCount } }")),
        ("alice", op("{ mySessions { id userAgent disconnectedAt } }")),
        (
            "alice",
            op(
                "query($t: ID!, $skip: Boolean!) { thread(threadId: $t) { title "
                "description @skip(if: $skip) isDirect @include(if: $skip) } }",
                {"t": t, "skip": True},
            ),
        ),
        (
            "alice",
            op(
                "query($t: ID!) { thread(threadId: $t) { ... on Thread { __typename id } } }",
                {"t": t},
            ),
        ),
        # Errors, one of each code a request can provoke.
        (None, op("{ me { id } }")),  # UNAUTHENTICATED
        (None, op("query($t: ID!) { thread(threadId: $t) { id } }", {"t": t})),
        ("carol", op("query($t: ID!) { thread(threadId: $t) { id } }", {"t": t})),  # NOT_FOUND
        ("alice", op("query($t: ID!) { thread(threadId: $t) { id } }", {"t": MISSING_ID})),
        ("alice", op("query($t: ID!) { thread(threadId: $t) { id } }", {"t": "not-a-uuid"})),
        ("alice", op("{ me { nope } }")),  # BAD_USER_INPUT: not valid
        ("alice", op("{ me { id }")),  # does not parse
        ("alice", op("query($n: Int) { notifications(first: $n) { unreadCount } }", {"n": "x"})),
        ("alice", op("query($t: ID!) { thread(threadId: $t) { id } }")),  # variable missing
        ("alice", op("{ threads(first: 1000) { edges { node { id } } } }")),  # page too large
        ("alice", op("query A { me { id } } query B { me { id } }")),  # name required
        ("alice", op("query A { me { id } }", name="C")),  # no such operation: 400
        (
            "alice",
            op(
                "{ threads(first: 100) { edges { node { messages(first: 100) { edges { node "
                "{ replies(first: 100) { edges { node { readBy(first: 100) { edges { node "
                "{ id } } } } } } } } } } } } }"
            ),
        ),  # QUERY_TOO_COSTLY
        ("alice", op('subscription { threadEvents(threadId: "x") { seq } }')),
        (
            "bob",
            op(
                "query($t: ID!) { thread(threadId: $t) { id myRole "
                "participants(first: 200) { totalCount } } }",
                {"t": t},
            ),
        ),
        (
            "alice",
            op("{ " + " ".join(f"a{n}: me {{ id }}" for n in range(16)) + " }"),
        ),  # too many aliases
    ]


def mutation_corpus(w: dict[str, str]) -> list[list[tuple[str, Any]]]:
    """Groups of mutation steps; each group leaves the state as it found it."""
    t, m, gone, bob_message = w["thread"], w["message"], w["deleted"], w["bobs"]
    react = (
        "mutation($m: ID!, $e: String!) { %s(messageId: $m, emoji: $e) "
        "{ id reactions { emoji count reactedByMe users { username } } } }"
    )
    return [
        [
            ("bob", op(react % "addReaction", {"m": m, "e": "🚀"})),
            ("bob", op(react % "removeReaction", {"m": m, "e": "🚀"})),
        ],
        [
            (
                "alice",
                op(
                    PIN,
                    {"m": m, "p": True},
                ),
            ),
            (
                "alice",
                op(
                    PIN,
                    {"m": m, "p": False},
                ),
            ),
        ],
        [
            (
                "bob",
                op(
                    MUTE,
                    {"t": t, "x": True},
                ),
            ),
            (
                "bob",
                op(
                    MUTE,
                    {"t": t, "x": False},
                ),
            ),
        ],
        [
            (
                "alice",
                op(
                    UPDATE_THREAD % "Renamed",
                    {"t": t},
                ),
            ),
            (
                "alice",
                op(
                    UPDATE_THREAD % "Room",
                    {"t": t},
                ),
            ),
        ],
        [
            (
                "alice",
                op(
                    ROLE % "ADMIN",
                    {"t": t, "u": w["bob"]},
                ),
            ),
            (
                "alice",
                op(
                    ROLE % "MEMBER",
                    {"t": t, "u": w["bob"]},
                ),
            ),
        ],
        [
            (
                "bob",
                op('mutation { updateMe(input: {displayName: "Bobby"}) { username displayName } }'),
            ),
            (
                "bob",
                op('mutation { updateMe(input: {displayName: "bob"}) { username displayName } }'),
            ),
        ],
        [("alice", op("mutation($t: ID!) { setTyping(threadId: $t, isTyping: false) }", {"t": t}))],
        [
            (
                "alice",
                op(
                    "mutation($t: ID!) { markRead(threadId: $t, seq: 1) { id lastReadSeq } }",
                    {"t": t},
                ),
            )
        ],
        # The same clientId: the first server stores it, the second answers the same message.
        [
            (
                "alice",
                op(factories.SEND, {"i": {"threadId": t, "body": "once", "clientId": "diff-1"}}),
            )
        ],
        # Refusals: nothing changes.
        [
            (
                "alice",
                op(
                    'mutation($m: ID!) { editMessage(messageId: $m, body: "x") { id } }',
                    {"m": bob_message},
                ),
            )
        ],  # FORBIDDEN
        [
            (
                "alice",
                op(
                    'mutation($m: ID!) { editMessage(messageId: $m, body: "x") { id } }',
                    {"m": gone},
                ),
            )
        ],  # CONFLICT
        [("alice", op(factories.SEND, {"i": {"threadId": t, "body": "   "}}))],  # BAD_USER_INPUT
        [("carol", op(factories.SEND, {"i": {"threadId": t, "body": "hi"}}))],  # NOT_FOUND
        [("bob", op("mutation($t: ID!) { deleteThread(threadId: $t) }", {"t": t}))],  # FORBIDDEN
        [("alice", op('mutation { addReaction(messageId: "x", emoji: "not an emoji") { id } }'))],
        [(None, op('mutation { createThread(input: {title: "x"}) { id } }'))],  # UNAUTHENTICATED
        [
            (
                "bob",
                op(
                    "mutation($u: ID!) { setUserRole(userId: $u, role: ADMIN) { id } }",
                    {"u": w["carol"]},
                ),
            )
        ],
    ]


async def seed(api: dict[str, Api]) -> dict[str, str]:
    alice, bob, carol = api["alice"], api["bob"], api["carol"]
    thread = await factories.thread(alice, bob, title="Room")
    first = await factories.send(alice, thread, "hello @bob", clientId="seed-1")
    reply = await factories.send(bob, thread, "hello back", parentId=first["id"])
    await bob.gql(
        'mutation($m: ID!) { addReaction(messageId: $m, emoji: "👍") { id } }', {"m": first["id"]}
    )
    await alice.gql(
        'mutation($m: ID!) { editMessage(messageId: $m, body: "hello again @bob") { id } }',
        {"m": first["id"]},
    )
    gone = await factories.send(alice, thread, "oops")
    await alice.gql("mutation($m: ID!) { deleteMessage(messageId: $m) { id } }", {"m": gone["id"]})
    await bob.gql("mutation($t: ID!) { markRead(threadId: $t, seq: 2) { id } }", {"t": thread})
    for n in range(4):
        await factories.send(bob if n % 2 else alice, thread, f"message {n}")
    bobs = await factories.send(bob, thread, "bob's own")
    await factories.thread(carol, title="Elsewhere")
    return {
        "thread": thread,
        "message": first["id"],
        "reply": reply["id"],
        "deleted": gone["id"],
        "bobs": bobs["id"],
        "bob": bob.id,
        "carol": carol.id,
    }


def direct_count() -> float:
    return sum(
        REGISTRY.get_sample_value(
            "threadline_graphql_operations_total", {"kind": kind, "engine": "direct"}
        )
        or 0.0
        for kind in ("query", "mutation")
    )


def answer(response: httpx.Response) -> tuple[int, str, bytes]:
    return response.status_code, response.headers.get("content-type", ""), response.content


async def test_fast_paths_answer_byte_for_byte_as_strawberry_does(settings: Settings) -> None:
    # A small upload limit, so that a file can be refused with PAYLOAD_TOO_LARGE.
    fast = await start_server(
        settings.model_copy(update={"fast_paths": True, "max_upload_bytes": 1000})
    )
    slow = await start_server(
        settings.model_copy(update={"fast_paths": False, "max_upload_bytes": 1000})
    )
    try:
        await _compare(fast, slow)
    finally:
        await stop_server(slow)
        await stop_server(fast)


async def _compare(fast: Server, slow: Server) -> None:
    # The switch reaches every fast path.
    assert _lean_fields(fast) > 10 and _lean_fields(slow) == 0
    assert fast.app.state.graphql.schema.runner.fast
    assert "PlainLeaves" in fast.app.state.graphql.schema.runner.executor_class.__name__
    assert "PlainLeaves" not in slow.app.state.graphql.schema.runner.executor_class.__name__
    async with (
        httpx.AsyncClient(base_url=fast.base, timeout=30) as on,
        httpx.AsyncClient(base_url=slow.base, timeout=30) as off,
    ):
        users = {name: Api(on, token_for(name), name) for name in ("alice", "bob", "carol")}
        for user in users.values():
            user.id = (await user.gql("{ me { id } }"))["me"]["id"]
        world = await seed(users)

        async def post(http: httpx.AsyncClient, who: str | None, body: Any) -> Any:
            headers = {"authorization": f"Bearer {token_for(who)}"} if who else {}
            return answer(await http.post("/graphql", json=body, headers=headers))

        compared = 0
        reads = read_corpus(world)
        # Reading a page marks it delivered: one pass first, so both servers read alike.
        for who, body in reads:
            await post(off, who, body)
        before = direct_count()
        on_answers = [await post(on, who, body) for who, body in reads]
        ran_direct = direct_count() - before
        off_answers = [await post(off, who, body) for who, body in reads]
        assert direct_count() - before == ran_direct  # nothing on the slow server ran direct
        assert ran_direct >= 20, ran_direct  # and the fast one took its fast path
        for (who, body), got, want in zip(reads, on_answers, off_answers, strict=True):
            assert got == want, (who, body["query"])
            compared += 1
        codes = _codes(on_answers)
        for code in ("UNAUTHENTICATED", "NOT_FOUND", "BAD_USER_INPUT", "QUERY_TOO_COSTLY"):
            assert code in codes, code

        # Mutations: each group on the fast server, then on the slow one.
        mutation_codes: set[str] = set()
        for group in mutation_corpus(world):
            on_group = [await post(on, who, body) for who, body in group]
            off_group = [await post(off, who, body) for who, body in group]
            for (who, body), got, want in zip(group, on_group, off_group, strict=True):
                assert got == want, (who, body["query"])
                compared += 1
            mutation_codes |= _codes(on_group)
        assert {"FORBIDDEN", "CONFLICT", "BAD_USER_INPUT", "NOT_FOUND"} <= mutation_codes

        # GET (the view) and a too-large upload (multipart): the same runner.
        compared += await _compare_view_paths(on, off, world)
        # Over WebSocket: queries, mutations and subscriptions (replayed from the log).
        compared += await _compare_sockets(fast, slow, world)
    assert compared >= 60, compared


async def _compare_view_paths(
    on: httpx.AsyncClient, off: httpx.AsyncClient, w: dict[str, str]
) -> int:
    auth = {"authorization": f"Bearer {token_for('alice')}"}
    gets = [
        {"query": "{ me { username } }"},
        {
            "query": "query($t: ID!) { thread(threadId: $t) { title lastSeq } }",
            "variables": json.dumps({"t": w["thread"]}),
        },
        {"query": 'mutation { updateMe(input: {displayName: "x"}) { id } }'},  # 400 over GET
        {"query": 'subscription { threadEvents(threadId: "x") { seq } }'},
    ]
    count = 0
    for params in gets:
        got = answer(await on.get("/graphql", params=params, headers=auth))
        want = answer(await off.get("/graphql", params=params, headers=auth))
        assert got == want, params
        count += 1
    # Multipart: a file over the limit, and a thread that does not exist.
    operations = json.dumps(
        {
            "query": "mutation($t: ID!, $f: Upload!) "
            "{ uploadAttachment(threadId: $t, file: $f) { id } }",
            "variables": {"t": w["thread"], "f": None},
        }
    )
    files = {"0": ("a.txt", b"x" * 2000, "text/plain")}
    mapping = json.dumps({"0": ["variables.f"]})
    headers = {**auth, "apollo-require-preflight": "1"}
    for text in (operations, operations.replace(w["thread"], MISSING_ID)):
        data = {"operations": text, "map": mapping}
        got = answer(await on.post("/graphql", data=data, files=files, headers=headers))
        want = answer(await off.post("/graphql", data=data, files=files, headers=headers))
        assert got == want
        count += 1
    assert b"PAYLOAD_TOO_LARGE" in got[2] or b"NOT_FOUND" in got[2]
    return count


async def _compare_sockets(fast: Server, slow: Server, w: dict[str, str]) -> int:
    operations: list[tuple[str, dict[str, Any]]] = [
        ("{ me { username role } }", {}),
        (
            "query($t: ID!) { thread(threadId: $t) { title lastSeq messages(last: 3) "
            "{ edges { node { body author { username } } } } } }",
            {"t": w["thread"]},
        ),
        ("mutation($t: ID!) { setTyping(threadId: $t, isTyping: false) }", {"t": w["thread"]}),
        ("query($t: ID!) { thread(threadId: $t) { id } }", {"t": MISSING_ID}),
        ("{ me { nope } }", {}),
    ]
    subscriptions: list[tuple[str, dict[str, Any], int]] = [
        (
            "subscription($t: ID!) { threadEvents(threadId: $t, afterSeq: 0) { seq __typename "
            "... on MessageCreated { message { body seq author { username } } } "
            "... on ReactionChanged { emoji added messageId } } }",
            {"t": w["thread"]},
            4,
        ),
        (
            "subscription($t: ID!) { threadEvents(threadId: $t, afterSeq: 2) { seq "
            "... on MessageCreated { message { body reactions { emoji reactedByMe } } } } }",
            {"t": w["thread"]},
            3,
        ),
    ]
    count = 0
    on = await GraphQLWS.connect(fast.ws_url, token_for("alice"))
    off = await GraphQLWS.connect(slow.ws_url, token_for("alice"))
    try:
        for query, variables in operations:
            got = await _one(on, query, variables)
            want = await _one(off, query, variables)
            assert got == want, query
            count += 1
        for query, variables, frames in subscriptions:
            got_frames = await _frames(on, query, variables, frames)
            want_frames = await _frames(off, query, variables, frames)
            assert got_frames == want_frames, query
            count += frames
    finally:
        await on.close()
        await off.close()
    return count


async def _one(client: GraphQLWS, query: str, variables: dict[str, Any]) -> list[Any]:
    op_id = await client.subscribe(query, variables)
    messages = []
    while True:
        message = await client.next()
        assert message["id"] == op_id
        messages.append(message)
        if message["type"] in {"complete", "error"}:
            return messages


async def _frames(client: GraphQLWS, query: str, variables: dict[str, Any], n: int) -> list[Any]:
    op_id = await client.subscribe(query, variables)
    frames = [await client.next() for _ in range(n)]
    await client.conn.send(json.dumps({"id": op_id, "type": "complete"}))
    return frames


def _codes(answers: list[Any]) -> set[str]:
    codes = set()
    for _status, kind, body in answers:
        if kind.startswith("application/json"):
            for error in json.loads(body).get("errors") or ():
                codes.add(error.get("extensions", {}).get("code"))
    return codes


def _lean_fields(server: Server) -> int:
    schema = graphql_schema(server.app.state.graphql.schema)
    return sum(
        getattr(field.resolve, "__qualname__", "").startswith("lean_resolver")
        for graphql_type in schema.type_map.values()
        if isinstance(graphql_type, GraphQLObjectType)
        for field in graphql_type.fields.values()
    )


async def test_a_missing_private_name_is_named_with_its_library_version() -> None:
    with pytest.raises(internals.LibraryChanged) as raised:
        internals._require("graphql-core", Executor, "gone_in_this_version", False)
    message = str(raised.value)
    assert "\n" not in message
    assert f"graphql-core {version('graphql-core')} lacks Executor.gone_in_this_version" in message


@pytest.mark.parametrize(
    ("patch", "named"),
    [
        (
            "from graphql.execution import Executor\n"
            "Executor.collect_subfields = lambda self, *args: None\n",
            f"graphql-core {version('graphql-core')} lacks Executor._relevant_sub_fields,",
        ),
        (
            "from strawberry.schema.schema_converter import GraphQLCoreConverter\n"
            "GraphQLCoreConverter.from_resolver = lambda self, *args: None\n",
            f"strawberry-graphql {version('strawberry-graphql')} lacks "
            "GraphQLCoreConverter._is_default",
        ),
    ],
    ids=["used-by-a-method", "used-inside-a-method"],
)
async def test_a_private_name_a_method_stops_using_is_named_on_its_class(
    patch: str, named: str
) -> None:
    # At import, in a process of its own: the check runs once, as a server starts.
    checking = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        patch + "import threadline.schema.engine.internals\n",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    _, stderr = await asyncio.wait_for(checking.communicate(), 120)
    assert checking.returncode != 0
    assert "LibraryChanged" in stderr.decode()
    assert named in stderr.decode()
