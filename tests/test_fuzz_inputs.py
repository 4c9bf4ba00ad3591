"""Property-based: random Unicode, sizes and nesting through every input a client or
Clerk controls, against a real server.

Whatever is sent, the answer is never INTERNAL_SERVER_ERROR (nor a 5xx), the
server logs no error or traceback, a refused call stores nothing, an accepted one
is stored, and a good send never fails because of another's bad input (the sends
of one example go at once, so that on PostgreSQL they share statements).

Hypothesis runs in a worker thread and hands each example to the server's event
loop; the examples are derandomized, so every run (and CI) tries the same ones.
Run with ``--hypothesis-show-statistics`` to see how many examples each test ran.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from svix.webhooks import Webhook

from tests import factories
from tests.conftest import Api, Clients, Server, ServerErrors
from tests.test_plain_sends import batches_of_sends
from threadline.models import Message, Reaction, Thread, User, WebhookDelivery

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(300)]

T = TypeVar("T")

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

# ------------------------------------------------------------------ strategies

# Every category, surrogates included (hypothesis leaves them out unless told).
ANY_CHAR = st.characters(exclude_categories=())
SPECIALS = [
    "\x00",
    "\ud800",
    "\udbff",
    "\udc00",
    "\udfff",
    "\x07",
    "\x1b",
    "\x7f",
    "\x85",
    "\x9f",
    "\t",
    "\n",
    "\r\n",
    "\u2028",
    "\u2029",
    "\u200b",
    "\u200d",
    "\ufeff",
    "\u202e",
    "\u2066",
    "\u0301",
    "\u0308",
    "\u05d0",
    "\u0627",
    "\u200f",
    "\ufffe",
    "\U0010ffff",
    "😀",
    "👍🏽",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467",
    "🇫🇷",
    "#\ufe0f\u20e3",
    "@owner",
    " ",
    "e",
]
SHORT_TEXT = st.text(ANY_CHAR, max_size=40)
TEXT = st.one_of(
    SHORT_TEXT,
    st.lists(st.sampled_from(SPECIALS), max_size=12).map("".join),
    # Sizes around and far past the limits (4000 for bodies, 200 for titles).
    st.builds(
        lambda piece, n: (piece * n)[:n],
        st.text(ANY_CHAR, min_size=1, max_size=3),
        st.sampled_from([0, 1, 199, 200, 201, 255, 256, 3999, 4000, 4001, 10_500]),
    ),
)
EMOJI = st.one_of(st.sampled_from(["👍", "❤", "❤️", "🇫🇷", "👍🏽", "🏽", "a", ""]), TEXT)


def deep_json(depth: int, opening: str = '{"a":', closing: str = "}") -> str:
    return opening * depth + "1" + closing * depth


JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    TEXT,
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(SHORT_TEXT, inner, max_size=4),
    max_leaves=25,
)
# Depths around the limits: ours (32), the stdlib parser's (~1000), orjson's (1024).
DEPTH = st.one_of(st.sampled_from([32, 33, 900, 1025, 3000, 50_000]), st.integers(1, 3000))
# JSON text, as a client could send it: the stdlib writes NaN and lone surrogates.
JSON_TEXT = st.one_of(
    JSON_VALUE.map(json.dumps),
    DEPTH.map(deep_json),
    DEPTH.map(lambda d: deep_json(d, "[", "]")),
)
# Parts of a cursor's key: positions out of range, naive and extreme times, non-ids.
KEY_PART = st.one_of(
    st.sampled_from(
        [
            2**31 - 1,
            2**31,
            2**63,
            10**30,
            -1,
            0,
            True,
            1.5,
            "1",
            None,
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00+00:00",
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "not-a-uuid",
            "5f0c7ad4-5f0c-4f0c-8f0c-5f0c7ad45f0c",
        ]
    ),
    JSON_LEAF,
)
CURSOR = st.one_of(
    TEXT,
    st.lists(KEY_PART, max_size=3).map(lambda v: _b64(json.dumps(v).encode())),
    JSON_TEXT.map(lambda s: _b64(s.encode("utf-8", "surrogatepass"))),
    DEPTH.map(lambda d: _b64(b"[" * d + b"]" * d)),
)


def _b64(raw: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# ------------------------------------------------------------------ harness


class Fuzz:
    """Runs each example's coroutine on the server's loop and checks what is common."""

    def __init__(self, server: Server, http: httpx.AsyncClient, errors: ServerErrors) -> None:
        self.server = server
        self.http = http
        self.errors = errors
        self.loop = asyncio.get_running_loop()
        self.examples = 0

    def run(self, coro: Awaitable[T]) -> T:
        self.examples += 1
        future = asyncio.run_coroutine_threadsafe(_wrap(coro), self.loop)
        result = future.result(timeout=120)
        assert not self.errors.records, self.errors.text()
        return result

    async def post(self, api: Api | None, path: str, body: str) -> httpx.Response:
        headers = {"content-type": "application/json"}
        if api is not None and api.token:
            headers["authorization"] = f"Bearer {api.token}"
        content = body.encode("utf-8", "surrogatepass")
        response = await self.http.post(path, content=content, headers=headers)
        assert response.status_code < 500, response.text
        return response

    async def graphql(self, api: Api, query: str, variables_json: str) -> dict[str, Any]:
        """An operation's answer; a body the server could not read is an empty answer."""
        body = f'{{"query": {json.dumps(query)}, "variables": {variables_json}}}'
        response = await self.post(api, "/graphql", body)
        if response.status_code != 200:
            assert response.status_code in (400, 413), response.text
            return {"errors": [{"extensions": {"code": f"HTTP_{response.status_code}"}}]}
        answer: dict[str, Any] = response.json()
        for error in answer.get("errors") or []:
            assert error.get("extensions", {}).get("code") != "INTERNAL_SERVER_ERROR", answer
        return answer

    async def count(self, model: Any, *where: Any) -> int:
        async with self.server.runtime.db.reading() as session:
            query = select(func.count()).select_from(model).where(*where)
            return int(await session.scalar(query) or 0)

    async def scalar(self, query: Any) -> Any:
        async with self.server.runtime.db.reading() as session:
            return await session.scalar(query)


async def _wrap(coro: Awaitable[T]) -> T:
    return await coro


async def hypothesis_in_thread(prop: Callable[[], None]) -> None:
    await asyncio.to_thread(prop)


def variables(**values: Any) -> str:
    return json.dumps(values)


def failed(answer: dict[str, Any]) -> bool:
    return bool(answer.get("errors"))


@pytest.fixture
async def fuzz(server: Server, http: httpx.AsyncClient, server_errors: ServerErrors) -> Fuzz:
    return Fuzz(server, http, server_errors)


# ------------------------------------------------------------------ sendMessage


async def test_concurrent_sends_of_random_input_never_fail_a_good_send(
    fuzz: Fuzz, clients: Clients
) -> None:
    owner, other = await clients.users("owner", "other")
    thread_id = await factories.thread(owner, other)
    uid = uuid.UUID(thread_id)

    @settings(FUZZ, max_examples=80)
    @given(
        sends=st.lists(
            st.tuples(TEXT, st.one_of(st.none(), TEXT, st.sampled_from(["dup", " dup "]))),
            min_size=1,
            max_size=8,
        ),
        goods=st.integers(2, 8),
    )
    def prop(sends: list[tuple[str, str | None]], goods: int) -> None:
        fuzz.run(round_of_sends(sends, goods))

    async def round_of_sends(sends: list[tuple[str, str | None]], goods: int) -> None:
        ids_before = set(await ids_in_thread())
        good = [(f"good {uuid.uuid4().hex}", f"g-{uuid.uuid4().hex}") for _ in range(goods)]
        calls = [send(other, body, client_id) for body, client_id in sends]
        for n, (body, client_id) in enumerate(good):
            calls.insert(2 * n, send(owner, body, client_id))
        answers = await asyncio.gather(*calls)
        accepted = {a["data"]["sendMessage"]["id"] for a in answers if not failed(a)}
        good_answers = [a for a in answers if a.get("_good")]
        assert all(not failed(a) for a in good_answers), good_answers
        ids_after = set(await ids_in_thread())
        # Everything accepted is stored; nothing else was.
        assert ids_after - ids_before == accepted - ids_before
        stored = await fuzz.count(Message, Message.body.in_([b for b, _ in good]))
        assert stored == goods

    async def send(api: Api, body: str, client_id: str | None) -> dict[str, Any]:
        item: dict[str, Any] = {"threadId": thread_id, "body": body}
        if client_id is not None:
            item["clientId"] = client_id
        answer = await fuzz.graphql(api, factories.SEND, variables(i=item))
        answer["_good"] = api is owner
        return answer

    async def ids_in_thread() -> list[str]:
        async with fuzz.server.runtime.db.reading() as session:
            rows = await session.scalars(select(Message.id).where(Message.thread_id == uid))
            return [str(r) for r in rows]

    batches_before, items_before = batches_of_sends()
    await hypothesis_in_thread(prop)
    batches, items = batches_of_sends()
    batches, items = batches - batches_before, items - items_before
    print(f"\nsendMessage rounds: {fuzz.examples}; shared statements: {batches} for {items} sends")
    if fuzz.server.runtime.db.fast_paths:  # group commit: PostgreSQL, FAST_PATHS on
        assert items > batches  # sends did go together, good and bad side by side


# ------------------------------------------------------------------ edits, reactions, threads, me

EDIT = "mutation($m: ID!, $b: String!) { editMessage(messageId: $m, body: $b) { id body } }"
REACT = "mutation($m: ID!, $e: String!) { addReaction(messageId: $m, emoji: $e) { id } }"
CREATE = "mutation($i: CreateThreadInput!) { createThread(input: $i) { id title } }"
UPDATE_ME = "mutation($i: UpdateMeInput!) { updateMe(input: $i) { id displayName } }"


async def test_random_edits_reactions_threads_and_profiles_are_refused_cleanly(
    fuzz: Fuzz, clients: Clients
) -> None:
    owner = await clients.user("owner")
    thread_id = await factories.thread(owner)
    message_id = (await factories.send(owner, thread_id, "first"))["id"]
    me = uuid.UUID(owner.id)

    @settings(FUZZ, max_examples=80)
    @given(
        body=TEXT,
        emoji=EMOJI,
        title=TEXT,
        description=st.one_of(st.none(), TEXT),
        name=st.one_of(st.none(), TEXT),
        preferences=st.one_of(st.none(), JSON_TEXT),
        foreign_id=st.one_of(st.none(), TEXT),
    )
    def prop(
        body: str,
        emoji: str,
        title: str,
        description: str | None,
        name: str | None,
        preferences: str | None,
        foreign_id: str | None,
    ) -> None:
        fuzz.run(one_round(body, emoji, title, description, name, preferences, foreign_id))

    async def one_round(
        body: str,
        emoji: str,
        title: str,
        description: str | None,
        name: str | None,
        preferences: str | None,
        foreign_id: str | None,
    ) -> None:
        target = message_id if foreign_id is None else foreign_id
        before = await fuzz.scalar(select(Message.body).where(Message.id == uuid.UUID(message_id)))
        edited = await fuzz.graphql(owner, EDIT, variables(m=target, b=body))
        after = await fuzz.scalar(select(Message.body).where(Message.id == uuid.UUID(message_id)))
        if failed(edited):
            assert after == before
        elif foreign_id is None:
            assert after == edited["data"]["editMessage"]["body"]

        reactions = await fuzz.count(Reaction)
        reacted = await fuzz.graphql(owner, REACT, variables(m=target, e=emoji))
        if failed(reacted):
            assert await fuzz.count(Reaction) == reactions

        threads = await fuzz.count(Thread)
        item: dict[str, Any] = {"title": title, "description": description}
        if foreign_id is not None:
            item["participantIds"] = [foreign_id]
        created = await fuzz.graphql(owner, CREATE, variables(i=item))
        assert await fuzz.count(Thread) == threads + (0 if failed(created) else 1)

        profile = await fuzz.scalar(select(User).where(User.id == me))
        old = (profile.display_name, profile.preferences)
        fields = [f'"displayName": {json.dumps(name)}'] if name is not None else []
        if preferences is not None:
            fields.append(f'"preferences": {preferences}')
        updated = await fuzz.graphql(owner, UPDATE_ME, f'{{"i": {{{", ".join(fields)}}}}}')
        if failed(updated):
            profile = await fuzz.scalar(select(User).where(User.id == me))
            assert (profile.display_name, profile.preferences) == old

    await hypothesis_in_thread(prop)
    print(f"\nedit/reaction/thread/profile rounds: {fuzz.examples}")


# ------------------------------------------------------------------ cursors

EDGES = "{ edges { cursor } }"
PAGES = [
    f"query($t: ID!, $c: String) {{ messages(threadId: $t, after: $c) {EDGES} }}",
    f"query($t: ID!, $c: String) {{ messages(threadId: $t, last: 5, before: $c) {EDGES} }}",
    f"query($t: ID!, $c: String) {{ thread(threadId: $t) {{ participants(after: $c) {EDGES} }} }}",
    f"query($t: ID!, $c: String) {{ thread(threadId: $t) {{ messages(first: 1) {{ edges {{ node"
    f" {{ replies(after: $c) {EDGES} }} }} }} }} }}",
    f'query($t: ID!, $c: String) {{ searchMessages(query: "first", threadId: $t, after: $c)'
    f" {EDGES} }}",
    f"query($c: String) {{ threads(after: $c) {EDGES} }}",
    f"query($c: String) {{ users(after: $c) {EDGES} }}",
    f"query($c: String) {{ notifications(after: $c) {EDGES} }}",
]


async def test_random_cursors_are_answered_or_bad_input(fuzz: Fuzz, clients: Clients) -> None:
    owner = await clients.user("owner")
    thread_id = await factories.thread(owner)
    await factories.send(owner, thread_id, "first")

    @settings(FUZZ, max_examples=150)
    @given(cursor=CURSOR, page=st.sampled_from(PAGES))
    def prop(cursor: str, page: str) -> None:
        fuzz.run(one_page(cursor, page))

    async def one_page(cursor: str, page: str) -> None:
        values = {"t": thread_id, "c": cursor} if "$t" in page else {"c": cursor}
        answer = await fuzz.graphql(owner, page, variables(**values))
        for error in answer.get("errors") or []:
            assert error["extensions"]["code"] == "BAD_USER_INPUT", answer

    await hypothesis_in_thread(prop)
    print(f"\ncursor pages: {fuzz.examples}")


# ------------------------------------------------------------------ Clerk webhooks


async def test_random_signed_webhooks_are_applied_or_400_and_a_400_stores_nothing(
    fuzz: Fuzz,
) -> None:
    secret = fuzz.server.runtime.settings.clerk_webhook_secret
    assert secret is not None
    signer = Webhook(secret.get_secret_value())

    @settings(FUZZ, max_examples=80)
    @given(
        event_type=st.one_of(
            st.sampled_from(["user.created", "user.updated", "user.deleted", "session.ended"]),
            TEXT,
        ),
        user_id=st.one_of(st.just("user_fuzz"), TEXT),
        fields=st.dictionaries(
            st.sampled_from(["username", "first_name", "last_name", "image_url", "user_id"]),
            st.one_of(TEXT, JSON_VALUE),
        ),
        updated_at=st.one_of(
            st.sampled_from([2**63 - 1, 2**63, 2**64, -1, 253_402_300_800_000, 1_750_000_000_000]),
            st.integers(-(2**70), 2**70),
            st.floats(allow_nan=True),
            st.none(),
            TEXT,
        ),
        metadata=JSON_VALUE,
        depth=st.one_of(st.none(), DEPTH),
    )
    def prop(
        event_type: str,
        user_id: str,
        fields: dict[str, Any],
        updated_at: Any,
        metadata: Any,
        depth: int | None,
    ) -> None:
        data = {"id": user_id, **fields, "updated_at": updated_at, "public_metadata": metadata}
        data_json = json.dumps(data)
        if depth is not None:  # the same data with a field nested deep
            data_json = data_json[:-1] + ', "nested": ' + deep_json(depth, "[", "]") + "}"
        body = f'{{"object": "event", "type": {json.dumps(event_type)}, "data": {data_json}}}'
        fuzz.run(deliver(body))

    async def deliver(body: str) -> None:
        users, deliveries = await fuzz.count(User), await fuzz.count(WebhookDelivery)
        msg_id = f"msg_{uuid.uuid4().hex}"
        at = datetime.now(UTC)
        headers = {
            "svix-id": msg_id,
            "svix-timestamp": str(int(at.timestamp())),
            "svix-signature": signer.sign(msg_id, at, body),
            "content-type": "application/json",
        }
        # json.dumps wrote every non-ASCII character as an escape, lone surrogates too.
        response = await fuzz.http.post("/webhooks/clerk", content=body.encode(), headers=headers)
        assert response.status_code in (200, 400), response.text
        if response.status_code == 400:
            assert await fuzz.count(User) == users
            assert await fuzz.count(WebhookDelivery) == deliveries

    await hypothesis_in_thread(prop)
    print(f"\nwebhook deliveries: {fuzz.examples}")
