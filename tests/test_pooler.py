"""Behind PgBouncer in transaction mode (DATABASE_POOLER=pgbouncer, issue 15).

Consecutive transactions of one client connection may run on different server
connections, and one server connection serves many clients: a prepared statement
that outlives its transaction is found by the wrong client, or missed by the right
one. These tests run on the pgbouncer backend (scripts/pgbouncer, port 6432).
"""

from __future__ import annotations

import asyncio
from contextlib import nullcontext
from datetime import datetime

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests import factories
from tests.conftest import POOLED, Clients, Server
from threadline.config import Settings
from threadline.db import Database, make_engine

pytestmark = pytest.mark.skipif(not POOLED, reason="runs behind PgBouncer")

# PgBouncer's default pool size for the tests' databases (scripts/pgbouncer).
SERVER_POOL_SIZE = 20
PREPARED_SINCE = "SELECT name FROM pg_prepared_statements WHERE prepare_time >= $1"
PAGE = """
query($t: ID!) {
  thread(threadId: $t) {
    messages(last: 20) { edges { node { seq body author { username } reactions { emoji } } } }
  }
}
"""


async def statement_again_on_another_server_connection(engine: AsyncEngine) -> None:
    """One statement twice on one client connection, the second time on another server
    connection: meanwhile a second client holds, in a transaction, the server connection
    the first one ran on (PgBouncer hands out the one freed last)."""
    async with engine.connect() as first, engine.connect() as second:
        await first.execute(text("SELECT 1"))
        await first.commit()
        await second.execute(text("SELECT 2"))  # in a transaction until the block ends
        await first.execute(text("SELECT 1"))
        await first.commit()


@pytest.mark.parametrize("pooled", [False, True])
async def test_sqlalchemy_statements_run_on_any_server_connection_only_with_the_setting(
    settings: Settings, pooled: bool
) -> None:
    engine = make_engine(settings.database_url, pooled=pooled)
    # Without it, the statement SQLAlchemy cached is missing on the other server connection.
    fails = nullcontext() if pooled else pytest.raises(DBAPIError, match="does not exist")
    try:
        with fails:
            await statement_again_on_another_server_connection(engine)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("pooled", [False, True])
async def test_the_driver_pool_of_shared_sends_runs_on_any_server_connection_only_if_pooled(
    settings: Settings, pooled: bool
) -> None:
    db = Database(make_engine(settings.database_url, pooled=pooled))
    fails = nullcontext() if pooled else pytest.raises(asyncpg.InvalidSQLStatementNameError)
    try:
        with fails:
            async with db.driver_connection("first") as first, db.driver_connection("2") as second:
                assert await first.fetchval("SELECT 1") == 1
                async with second.transaction():
                    assert await second.fetchval("SELECT 2") == 2
                    assert await first.fetchval("SELECT 1") == 1
    finally:
        await db.dispose()


async def statements_prepared_since(settings: Settings, since: datetime) -> list[list[str]]:
    """The prepared statements each server connection of the pool holds, made since then.

    As many clients as the pool has server connections each hold one in a
    transaction, so together they see every one of them.
    """
    clients = [
        await asyncpg.connect(driver_dsn(settings), statement_cache_size=0)
        for _ in range(SERVER_POOL_SIZE)
    ]
    try:
        transactions = [client.transaction() for client in clients]
        await asyncio.gather(*(transaction.start() for transaction in transactions))
        pids = await asyncio.gather(
            *(client.fetchval("SELECT pg_backend_pid()") for client in clients)
        )
        assert len(set(pids)) == SERVER_POOL_SIZE, "each client holds a server connection"
        names = await asyncio.gather(*(client.fetch(PREPARED_SINCE, since) for client in clients))
        await asyncio.gather(*(transaction.rollback() for transaction in transactions))
        return [[row["name"] for row in rows] for rows in names]
    finally:
        await asyncio.gather(*(client.close() for client in clients))


def driver_dsn(settings: Settings) -> str:
    return settings.database_url.replace("postgresql+asyncpg", "postgresql", 1)


async def test_the_app_behind_pgbouncer_leaves_no_prepared_statement_on_the_server(
    server: Server, clients: Clients, settings: Settings
) -> None:
    client = await asyncpg.connect(driver_dsn(settings), statement_cache_size=0)
    try:
        started: datetime = await client.fetchval("SELECT clock_timestamp()")
    finally:
        await client.close()
    alice, bob = await clients.users("alice", "bob")
    thread_id = await factories.thread(alice, bob, title="pooled")
    # Plain sends (the shared statement), a page (the driver's reads), edits and reactions
    # (SQLAlchemy's general path), concurrently, so that many server connections serve them.
    await asyncio.gather(
        *(factories.send(alice if n % 2 else bob, thread_id, f"m{n}") for n in range(30))
    )
    message_id = (await factories.send(alice, thread_id, "react to me"))["id"]
    await asyncio.gather(
        *(
            alice.gql(
                'mutation($m: ID!) { addReaction(messageId: $m, emoji: "👍") { id } }',
                {"m": message_id},
            )
            for _ in range(3)
        ),
        *(bob.gql(PAGE, {"t": thread_id}) for _ in range(10)),
    )
    page = await alice.gql(PAGE, {"t": thread_id})
    assert len(page["thread"]["messages"]["edges"]) == 20

    assert await statements_prepared_since(settings, started) == [[]] * SERVER_POOL_SIZE
