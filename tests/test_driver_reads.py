"""Rows read with the driver (PostgreSQL's page reads) equal the rows SQLAlchemy loads,
and plain scalar fields answered by the executor equal strawberry's answers."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select
from sqlalchemy.orm.instrumentation import ClassManager

from tests import factories
from tests.conftest import BACKEND, Clients, Server
from tests.test_graphql_post import as_strawberry_would
from threadline.config import Settings
from threadline.db import DRIVER_ENTITIES, DRIVER_ROWS
from threadline.graphql_app import ROOTS
from threadline.models import Attachment, Message, Thread, User, seam
from threadline.models.queries import Query
from threadline.schema.engine.plain_leaves import plain_leaves
from threadline.schema.schema import build_schema

pytestmark = pytest.mark.asyncio


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # These tests are about the fast paths: on, whatever this run's FAST_PATHS says.
    return settings.model_copy(update={"fast_paths": True})


EDIT = "mutation($m: ID!, $b: String!) { editMessage(messageId: $m, body: $b) { id } }"
DELETE = "mutation($m: ID!) { deleteMessage(messageId: $m) { id } }"
REACT = "mutation($m: ID!, $e: String!) { addReaction(messageId: $m, emoji: $e) { id } }"


def shown(value: object) -> object:
    """An instance as its columns and their types, anything else as itself with its type."""
    mapper = getattr(type(value), "__mapper__", None)
    if mapper is None:
        return (type(value).__name__, value)
    return tuple(
        (a.key, type(getattr(value, a.key)).__name__, getattr(value, a.key))
        for a in mapper.column_attrs
    )


@pytest.mark.skipif(BACKEND != "postgres", reason="the driver reads are PostgreSQL's")
async def test_each_hot_query_compiled_for_the_driver_reads_what_the_orm_loads(
    server: Server, clients: Clients
) -> None:
    """Every ``Query`` (one statement, its asyncpg SQL compiled from it) answers the
    same rows, values and value types through the driver as through the ORM, for
    every shape of page, with cursors, outer joins that find no participant, JSON,
    NULLs and datetimes."""
    alice, bob, carol = await clients.users("alice", "bob", "carol")
    thread_id = await factories.thread(alice, bob)
    other = await factories.thread(carol)
    plain = await factories.send(alice, thread_id, "hello @bob", clientId="k-1")
    await factories.send(bob, thread_id, "a reply", parentId=plain["id"])
    await factories.send(bob, thread_id, "another reply", parentId=plain["id"])
    await alice.gql(EDIT, {"m": plain["id"], "b": "hello again @bob"})
    await alice.gql(REACT, {"m": plain["id"], "e": "👍"})
    await bob.gql(REACT, {"m": plain["id"], "e": "👍"})
    gone = await factories.send(bob, thread_id, "oops", parentId=plain["id"])
    await bob.gql(DELETE, {"m": gone["id"]})
    await factories.send(carol, other, "elsewhere")
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
    async with db.reading() as session:
        ids = [
            *await session.scalars(select(Message.id)),
            *await session.scalars(select(User.id)),
            *await session.scalars(select(Thread.id)),
        ]
        clerk_ids = {u.id: u.clerk_id for u in await session.scalars(select(User))}
    queries = Query.built
    assert len(queries) >= 11 + 16 + 4  # the batch reads and every page shape
    compared = 0
    for query, user, size in itertools.product(queries, (alice, carol), (2, 100)):
        params = {
            "ids": ids,
            "thread_ids": ids,
            "thread_id": uuid.UUID(thread_id),
            "parent_id": uuid.UUID(plain["id"]),
            "user_id": uuid.UUID(user.id),
            "size": size,
            "after": 1,
            "kinds": ["MessageCreated", "ParticipantChanged", "ThreadDeleted"],
            "before": 5,
            "pattern": "%",
            "at": datetime.now(UTC),
            "after_id": max(ids),
            "clerk_id": clerk_ids[uuid.UUID(user.id)],
            "clerk_session_id": "sess_none",
        }
        async with db.shared_sessions() as session:  # the driver
            assert session.info[DRIVER_ENTITIES] and session.info[DRIVER_ROWS]
            by_driver = await query.tuples(session, **params)
        no_driver = {DRIVER_ENTITIES: False, DRIVER_ROWS: False}
        async with db.shared_sessions(info=no_driver) as session:  # the ORM
            by_orm = await query.tuples(session, **params)
        shown_driver = [tuple(shown(v) for v in row) for row in by_driver]
        shown_orm = [tuple(shown(v) for v in row) for row in by_orm]
        if "ORDER BY" not in query.sql:  # no order: compared as sets
            shown_driver.sort(key=repr)
            shown_orm.sort(key=repr)
        assert shown_driver == shown_orm, query.sql
        compared += bool(by_orm)
    assert compared >= len(queries)  # most combinations found rows to compare


async def test_plain_leaves_are_the_fields_without_resolver_or_extensions() -> None:
    leaves = plain_leaves(build_schema(ROOTS))
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


async def test_the_seam_names_what_an_upgrade_of_sqlalchemy_took_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The import-time check finds every internal the fast paths need today, and
    names one that a (simulated) upgrade removed."""
    assert seam._missing() == []
    monkeypatch.delattr(ClassManager, "new_instance")
    assert seam._missing() == ["ClassManager.new_instance"]
