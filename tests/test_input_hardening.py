"""Crafted input is the caller's mistake: BAD_USER_INPUT, 400 or 4403, never an
internal error or a traceback in the log; and one caller's bad input never fails
another caller's call, even when their sends share one statement.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from svix.webhooks import Webhook

from tests import factories
from tests.conftest import BACKEND, Api, Clients, Server, ServerErrors
from threadline.batching import Batcher
from threadline.models import Message, User, WebhookDelivery

pytestmark = pytest.mark.asyncio

HISTORY = """
query($t: ID!) { thread(threadId: $t) { messages(last: 100) { edges { node { body clientId } } } } }
"""


async def post_json(http: httpx.AsyncClient, api: Api, payload: object) -> httpx.Response:
    """A POST of exactly this JSON: the standard encoder, which writes lone surrogates
    as escapes (httpx's own encoder cannot write them at all)."""
    return await post_raw(http, api, json.dumps(payload).encode())


async def post_raw(http: httpx.AsyncClient, api: Api, body: bytes) -> httpx.Response:
    headers = {"content-type": "application/json", "authorization": f"Bearer {api.token}"}
    return await http.post("/graphql", content=body, headers=headers)


async def answer(http: httpx.AsyncClient, api: Api, query: str, variables: Any) -> Any:
    response = await post_json(http, api, {"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    return response.json()


def code_of(body: dict[str, Any]) -> str | None:
    errors = body.get("errors")
    return errors[0]["extensions"]["code"] if errors else None


async def count_rows(server: Server, model: Any, *where: Any) -> int:
    async with server.runtime.db.reading() as session:
        query = select(func.count()).select_from(model).where(*where)
        return int(await session.scalar(query) or 0)


def assert_no_errors_logged(errors: ServerErrors) -> None:
    assert not errors.records, errors.text()


# ------------------------------------------------------------------- clientId


BAD_CLIENT_IDS = [
    "a\x00b",
    "\x00",
    "\ud800",
    "x\udfffy",
    "tab\tinside",
    "bell\x07",
    "c1\x85inside",
    "del\x7f",
    "x" * 256,
    "   ",
]


async def test_a_bad_client_id_is_bad_input_and_fails_no_concurrent_send(
    server: Server, http: httpx.AsyncClient, clients: Clients, server_errors: ServerErrors
) -> None:
    owner, attacker = await clients.users("owner", "attacker")
    thread_id = await factories.thread(owner, attacker)

    async def send(api: Api, body: str, client_id: str) -> str | None:
        variables = {"i": {"threadId": thread_id, "body": body, "clientId": client_id}}
        return code_of(await answer(http, api, factories.SEND, variables))

    good = [send(owner, f"good {n}", f"good-{n}") for n in range(30)]
    bad = [send(attacker, f"bad {n}", client_id) for n, client_id in enumerate(BAD_CLIENT_IDS)]
    # Interleaved, so that on PostgreSQL the bad ones would share statements with good ones.
    calls = [*good]
    for n, call in enumerate(bad):
        calls.insert(3 * n + 1, call)
    results = await asyncio.gather(*calls)
    codes = [r for r in results if r is not None]
    assert codes == ["BAD_USER_INPUT"] * len(BAD_CLIENT_IDS)
    assert results.count(None) == 30

    messages = (await owner.gql(HISTORY, {"t": thread_id}))["thread"]["messages"]["edges"]
    bodies = sorted(e["node"]["body"] for e in messages)
    assert bodies == sorted(f"good {n}" for n in range(30))
    assert_no_errors_logged(server_errors)


async def test_a_client_id_is_trimmed_and_kept_as_given_otherwise(
    clients: Clients,
) -> None:
    owner = await clients.user("owner")
    thread_id = await factories.thread(owner)
    sent = await factories.send(owner, thread_id, clientId="  é-\u202e-ü  ")
    again = await factories.send(owner, thread_id, "again", clientId="é-\u202e-ü")
    assert sent["clientId"] == "é-\u202e-ü"
    assert again["id"] == sent["id"]


# ------------------------------------------------------------------- batches


async def test_an_item_that_fails_its_batch_fails_alone() -> None:
    release = asyncio.Event()
    batches: list[list[int]] = []

    async def run(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        if len(batches) == 1:
            await release.wait()
        if any(i < 0 for i in items):
            raise ValueError("a negative item")
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(run, max_size=10, name="test")
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(batcher.submit(i)) for i in (2, -3, 4, 5)]
    await asyncio.sleep(0)
    release.set()
    assert await first == 10
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert results[0] == 20 and results[2:] == [40, 50]
    assert isinstance(results[1], ValueError)
    assert batches[1] == [2, -3, 4, 5]  # they did go together first
    assert sorted(map(tuple, batches[2:])) == [(-3,), (2,), (4,), (5,)]


@pytest.mark.postgres_only
@pytest.mark.expect_server_errors
@pytest.mark.skipif(BACKEND != "postgres", reason="the shared statement runs on PostgreSQL")
async def test_a_send_that_fails_the_shared_statement_fails_no_other_send(
    server: Server,
    http: httpx.AsyncClient,
    clients: Clients,
    server_errors: ServerErrors,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A failure that no validation foresees: the database itself refuses one row.
    db = server.runtime.db
    if not db.fast_paths:
        pytest.skip("FAST_PATHS=off: no shared statement, every send is its own")
    owner = await clients.user("owner")
    thread_id = await factories.thread(owner)
    async with db.transaction("test") as uow:
        await uow.session.execute(
            text("ALTER TABLE messages ADD CONSTRAINT test_poison CHECK (body <> 'poison')")
        )
    try:
        for _ in range(3):  # until the poison has shared a statement with others
            caplog.clear()
            bodies = [f"good {uuid.uuid4().hex[:6]}" for _ in range(40)]
            calls = [
                answer(http, owner, factories.SEND, {"i": {"threadId": thread_id, "body": b}})
                for b in bodies
            ]
            calls.insert(
                20,
                answer(
                    http, owner, factories.SEND, {"i": {"threadId": thread_id, "body": "poison"}}
                ),
            )
            results = await asyncio.gather(*calls)
            codes = [code_of(r) for r in results]
            assert codes.pop(20) == "INTERNAL_SERVER_ERROR"  # the poison alone
            assert codes == [None] * 40
            stored = await count_rows(server, Message, Message.body.in_(bodies))
            assert stored == 40
            if any("running its items one by one" in r.getMessage() for r in caplog.records):
                break
        else:
            pytest.fail("the poisoned send never shared a statement with others")
    finally:
        async with db.transaction("test") as uow:
            await uow.session.execute(
                text("ALTER TABLE messages DROP CONSTRAINT IF EXISTS test_poison")
            )
    # What was logged is the poison's own failure, nobody else's.
    assert server_errors.records
    assert all("test_poison" in server_errors.format(r) for r in server_errors.records)


# ------------------------------------------------------------------- cursors


def cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def key_cursor(*parts: object) -> str:
    return cursor(json.dumps(list(parts)).encode())


SOME_ID = str(uuid.uuid4())
# Any cursor, whatever the list it is given to.
BAD_CURSORS = [
    "!!!not base64!!!",
    cursor(b"\xff\xfe\xfd"),
    cursor(b"[" * 50_000 + b"]" * 50_000),
    cursor(b"[" * 3000 + b"]" * 3000),
    "\ud800",
    "a\x00b",
    "A" * 100_000,
    key_cursor(),
    key_cursor({"seq": 1}),
]
# Cursors of a position (a seq, an offset).
BAD_POSITIONS = [
    key_cursor(2**31),
    key_cursor(2**63),
    key_cursor(10**30),
    key_cursor(-1),
    key_cursor(True),
    key_cursor(1.5),
    cursor(b"[1e999]"),
    key_cursor("1"),
    key_cursor([1]),
    key_cursor(1, 2),
]
# Cursors of (time, id) and (name, id).
BAD_TIME_KEYS = [
    key_cursor("2026-01-01T00:00:00", SOME_ID),
    key_cursor("0001-01-01T00:00:00+14:00", SOME_ID),
    key_cursor("9999-12-31T23:59:59-14:00", SOME_ID),
    key_cursor("2026-01-01T00:00:00+00:00", "not-a-uuid"),
    key_cursor("2026-01-01T00:00:00+00:00", 5),
    key_cursor("not a time", SOME_ID),
    key_cursor(SOME_ID),
]
BAD_NAME_KEYS = [
    key_cursor("name", "not-a-uuid"),
    key_cursor("a\x00", SOME_ID),
    key_cursor("\ud800", SOME_ID),
    key_cursor(1, SOME_ID),
    key_cursor("name"),
]

# Cursors of (rank, time, id): search's.
AT = "2026-01-01T00:00:00+00:00"
BAD_RANK_KEYS = [
    key_cursor(1, AT, SOME_ID),
    key_cursor(True, AT, SOME_ID),
    key_cursor("0.5", AT, SOME_ID),
    cursor(f'[NaN,"{AT}","{SOME_ID}"]'.encode()),
    cursor(f'[-Infinity,"{AT}","{SOME_ID}"]'.encode()),
    cursor(f'[1e999,"{AT}","{SOME_ID}"]'.encode()),
    key_cursor(0.5, "2026-01-01T00:00:00", SOME_ID),
    key_cursor(0.5, AT, "not-a-uuid"),
    key_cursor(0.5, AT),
    key_cursor(AT, SOME_ID),
]

PAGES = {
    "messages after": (
        "query($t: ID!, $c: String) { messages(threadId: $t, after: $c) { edges { cursor } } }",
        BAD_CURSORS + BAD_POSITIONS,
    ),
    "messages before": (
        "query($t: ID!, $c: String) { messages(threadId: $t, before: $c) { edges { cursor } } }",
        BAD_CURSORS + BAD_POSITIONS,
    ),
    "replies": (
        "query($t: ID!, $c: String) { thread(threadId: $t) { messages(last: 1) { edges { node {"
        " replies(before: $c) { edges { cursor } } } } } } }",
        BAD_CURSORS + BAD_POSITIONS,
    ),
    "participants": (
        "query($t: ID!, $c: String) { thread(threadId: $t) { participants(after: $c)"
        " { edges { cursor } } } }",
        [*BAD_CURSORS, key_cursor("not-a-uuid"), key_cursor(5), key_cursor(SOME_ID, 1)],
    ),
    "search": (
        'query($t: ID!, $c: String) { searchMessages(query: "hello", threadId: $t, after: $c)'
        " { edges { cursor } } }",
        BAD_CURSORS + BAD_POSITIONS + BAD_RANK_KEYS,
    ),
    "threads": (
        "query($c: String) { threads(after: $c) { edges { cursor } } }",
        BAD_CURSORS + BAD_TIME_KEYS,
    ),
    "notifications": (
        "query($c: String) { notifications(after: $c) { edges { cursor } } }",
        BAD_CURSORS + BAD_TIME_KEYS,
    ),
    "users": (
        "query($c: String) { users(after: $c) { edges { cursor } } }",
        BAD_CURSORS + BAD_NAME_KEYS,
    ),
}


@pytest.mark.parametrize("page", sorted(PAGES))
async def test_a_crafted_cursor_is_bad_input(
    http: httpx.AsyncClient, clients: Clients, server_errors: ServerErrors, page: str
) -> None:
    owner = await clients.user("owner")
    thread_id = await factories.thread(owner)
    await factories.send(owner, thread_id, "hello")
    query, cursors = PAGES[page]
    thread = {"t": thread_id} if "$t" in query else {}
    # The page itself answers (so a refusal below is the cursor's).
    assert "errors" not in await answer(http, owner, query, {**thread, "c": None})
    for crafted in cursors:
        body = await answer(http, owner, query, {**thread, "c": crafted})
        assert code_of(body) == "BAD_USER_INPUT", (crafted[:60], body)
        assert "Invalid cursor" in body["errors"][0]["message"], body
    assert_no_errors_logged(server_errors)


# ------------------------------------------------------------------- preferences

UPDATE_ME = "mutation($p: JSON) { updateMe(input: {preferences: $p}) { preferences } }"


async def stored_preferences(server: Server, api: Api) -> Any:
    # Read from the database: the server's user cache may answer `me` for a moment.
    async with server.runtime.db.reading() as session:
        return await session.scalar(select(User.preferences).where(User.id == uuid.UUID(api.id)))


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    "preferences",
    [
        pytest.param('{"a": "x\\u0000y"}', id="NUL in a value"),
        pytest.param('{"a\\u0000": 1}', id="NUL in a key"),
        pytest.param('{"a": "\\ud800"}', id="lone surrogate in a value"),
        pytest.param('{"\\udfff": 1}', id="lone surrogate in a key"),
        pytest.param('{"a": ["\\u0000"]}', id="NUL in a list"),
        pytest.param('{"a": NaN}', id="NaN"),
        pytest.param('{"a": Infinity}', id="Infinity"),
        # (orjson reads a big integer as a float; NaN sends this body to the stdlib.)
        pytest.param('{"a": 18446744073709551616, "b": NaN}', id="an integer past 64 bits"),
        pytest.param(nested(40), id="nested 40 deep"),
        pytest.param(nested(900), id="nested 900 deep"),
    ],
)
async def test_preferences_that_cannot_be_stored_are_bad_input_and_change_nothing(
    server: Server,
    http: httpx.AsyncClient,
    clients: Clients,
    server_errors: ServerErrors,
    preferences: str,
) -> None:
    me = await clients.user("me")
    await me.gql(UPDATE_ME, {"p": {"theme": "dark"}})
    body = f'{{"query": {json.dumps(UPDATE_ME)}, "variables": {{"p": {preferences}}}}}'
    response = await post_raw(http, me, body.encode())
    assert response.status_code == 200, response.text
    assert code_of(response.json()) == "BAD_USER_INPUT"
    assert await stored_preferences(server, me) == {"theme": "dark"}
    assert_no_errors_logged(server_errors)


@pytest.mark.parametrize("depth", [1100, 5000, 100_000])
async def test_a_body_nested_past_the_parser_is_400(
    server: Server,
    http: httpx.AsyncClient,
    clients: Clients,
    server_errors: ServerErrors,
    depth: int,
) -> None:
    me = await clients.user("me")
    body = f'{{"query": {json.dumps(UPDATE_ME)}, "variables": {{"p": {nested(depth)}}}}}'
    response = await post_raw(http, me, body.encode())
    assert response.status_code == 400
    as_list = "[" * depth + "]" * depth
    assert (await post_raw(http, me, as_list.encode())).status_code == 400
    assert (await post_raw(http, me, b'{"query": "\xff\xfe"}')).status_code == 400
    assert await stored_preferences(server, me) == {}
    assert_no_errors_logged(server_errors)


# ------------------------------------------------------------------- Clerk webhooks

WEBHOOK = "/webhooks/clerk"


def signed(server: Server, body: bytes) -> dict[str, str]:
    secret = server.runtime.settings.clerk_webhook_secret
    assert secret is not None
    secret = secret.get_secret_value()
    msg_id = f"msg_{uuid.uuid4().hex}"
    at = datetime.now(UTC)
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(at.timestamp())),
        "svix-signature": Webhook(secret).sign(msg_id, at, body.decode()),
        "content-type": "application/json",
    }


def user_data(user_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "object": "user",
        "id": user_id,
        "username": "ada",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "updated_at": 1_750_000_000_000,
        **fields,
    }


def event_body(data: Any, event_type: str = "user.updated") -> bytes:
    return json.dumps({"object": "event", "type": event_type, "data": data}).encode()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(event_body(user_data("user_big", updated_at=2**70)), id="updated_at 2**70"),
        pytest.param(event_body(user_data("user_big", updated_at=2**63)), id="updated_at 2**63"),
        pytest.param(event_body(user_data("user_neg", updated_at=-1)), id="updated_at negative"),
        pytest.param(
            b'{"type": "user.updated", "data": {"id": "user_deep", "x": '
            + b"[" * 50_000
            + b"]" * 50_000
            + b"}}",
            id="data nested 50,000 deep",
        ),
        pytest.param(event_body(user_data("user_\x00nul")), id="NUL in the id"),
        pytest.param(event_body(user_data("user_\ud800")), id="lone surrogate in the id"),
        pytest.param(event_body(user_data("user_x"), "user.\x00updated"), id="NUL in the type"),
        pytest.param(event_body({"id": "sess_\x00"}, "session.ended"), id="NUL in a session id"),
    ],
)
async def test_a_signed_webhook_with_crafted_data_is_400_and_stores_nothing(
    server: Server, http: httpx.AsyncClient, server_errors: ServerErrors, body: bytes
) -> None:
    response = await http.post(WEBHOOK, content=body, headers=signed(server, body))
    assert response.status_code == 400, response.text
    assert await count_rows(server, User) == 0
    assert await count_rows(server, WebhookDelivery) == 0
    assert_no_errors_logged(server_errors)


async def test_webhook_names_with_nul_and_lone_surrogates_are_stored_cleaned(
    server: Server, http: httpx.AsyncClient, server_errors: ServerErrors
) -> None:
    data = user_data(
        "user_clean", username="a\x00da\ud800", first_name="A\x00da", last_name="\udfffKing"
    )
    body = event_body(data, "user.created")
    response = await http.post(WEBHOOK, content=body, headers=signed(server, body))
    assert response.status_code == 200, response.text
    async with server.runtime.db.reading() as session:
        user = await session.scalar(select(User).where(User.clerk_id == "user_clean"))
    assert user is not None
    assert (user.username, user.display_name) == ("ada", "Ada King")
    assert_no_errors_logged(server_errors)
