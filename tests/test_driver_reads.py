"""Rows read with the driver (PostgreSQL's page reads) equal the rows SQLAlchemy loads,
and plain scalar fields answered by the executor equal strawberry's answers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select

from tests import factories
from tests.conftest import BACKEND, Clients, Server
from tests.test_graphql_post import as_strawberry_would
from threadline.db import dialect_of, driver_fetch
from threadline.models import (
    Attachment,
    Message,
    MessageEdit,
    User,
)
from threadline.models.base import StoredRows
from threadline.schema.engine.plain_leaves import plain_leaves
from threadline.schema.schema import build_schema

pytestmark = pytest.mark.asyncio

EDIT = "mutation($m: ID!, $b: String!) { editMessage(messageId: $m, body: $b) { id } }"
DELETE = "mutation($m: ID!) { deleteMessage(messageId: $m) { id } }"


def columns_of(instance: object, model: type) -> dict[str, object]:
    return {a.key: getattr(instance, a.key) for a in model.__mapper__.column_attrs}  # type: ignore[attr-defined]


@pytest.mark.skipif(BACKEND != "postgres", reason="the driver reads are PostgreSQL's")
async def test_rows_read_by_the_driver_equal_what_the_orm_loads(
    server: Server, clients: Clients
) -> None:
    alice, bob = await clients.users("alice", "bob")
    thread_id = await factories.thread(alice, bob)
    plain = await factories.send(alice, thread_id, "hello @bob", clientId="k-1")
    await factories.send(bob, thread_id, "a reply", parentId=plain["id"])
    await alice.gql(EDIT, {"m": plain["id"], "b": "hello again @bob"})
    gone = await factories.send(bob, thread_id, "oops")
    await bob.gql(DELETE, {"m": gone["id"]})
    db = server.runtime.db
    async with db.transaction("attach") as uow:
        await uow.session.execute(
            insert(Attachment).values(
                id=uuid.uuid4(),
                thread_id=uuid.UUID(thread_id),
                uploaded_by_id=uuid.UUID(alice.id),
                message_id=uuid.UUID(plain["id"]),
                filename="a.png",
                content_type="image/png",
                size=3,
                kind="IMAGE",
                width=1,
                height=None,
                storage_key="k",
                created_at=datetime.now(UTC),
            )
        )
    for model in (Message, MessageEdit, Attachment, User):
        rows = StoredRows(model)
        async with db.reading() as session:
            loaded = {r.id: columns_of(r, model) for r in await session.scalars(select(model))}
            table = model.__tablename__
            records = await driver_fetch(session, f"SELECT {rows.columns} FROM {table}")
            built = {r.id: columns_of(r, model) for r in rows.build(records, dialect_of(session))}
        assert loaded, model
        assert built == loaded, model
        for values in built.values():  # the same types too: aware datetimes, parsed JSON
            for key, value in values.items():
                original = loaded[values["id"]][key]  # type: ignore[index]
                assert type(value) is type(original), (model, key)


async def test_plain_leaves_are_the_fields_without_resolver_or_extensions() -> None:
    leaves = plain_leaves(build_schema())
    assert {"id", "seq", "body", "pinned", "createdAt"} <= set(leaves["Message"])
    assert "author" not in leaves["Message"]  # an object
    assert "replyCount" not in leaves["Message"]  # has a resolver
    assert leaves["User"]["role"].type.name == "SystemRole"  # enums too
    assert leaves["Message"]["editedAt"].nullable
    assert not leaves["Message"]["seq"].nullable


async def test_plain_leaves_answer_as_strawberry_does(clients: Clients) -> None:
    alice, bob = await clients.users("alice", "bob")
    thread_id = await factories.thread(alice, bob)
    sent = await factories.send(alice, thread_id, "hello", clientId="c-1")
    await alice.gql(EDIT, {"m": sent["id"], "b": "hello, edited"})
    await factories.send(bob, thread_id, "no client id")
    query = """
    query($t: ID!) { thread(threadId: $t) { id title isDirect lastSeq myRole
      messages(first: 10) { edges { cursor node {
        id seq body clientId editedAt deletedAt pinned createdAt
        author { id username displayName imageUrl role createdAt deletedAt }
      } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } } }
    """
    auth = {"authorization": f"Bearer {alice.token}"}
    answer = await as_strawberry_would(
        clients.http, {"query": query, "variables": {"t": thread_id}}, **auth
    )
    nodes = [e["node"] for e in answer["data"]["thread"]["messages"]["edges"]]
    assert [n["clientId"] for n in nodes] == ["c-1", None]
    assert nodes[0]["editedAt"] is not None and nodes[1]["editedAt"] is None
    assert nodes[0]["author"]["role"] == "MEMBER"
