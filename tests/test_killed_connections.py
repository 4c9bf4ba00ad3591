"""Pooled PostgreSQL connections killed under the server (failover, pg_terminate_backend).

Issue 11, item 6: the first use of each dead pooled connection was an
INTERNAL_SERVER_ERROR. Now a dead connection is replaced when it is checked out,
a read that meets one anyway is retried once, and a write that does says so
with a code (UNAVAILABLE) and is never applied twice.

Behind PgBouncer (the pgbouncer backend) the app's connections end at the pooler,
which replaces a server connection PostgreSQL ended without the app noticing; what
the app does see is the pooler dropping its connections (a pooler restart or
failover), which its KILL command does here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import pytest
from sqlalchemy import make_url, text

from tests import factories
from tests.conftest import BACKEND, Api, Clients
from threadline.config import Settings
from threadline.db import Database, driver_fetch, make_engine
from threadline.errors import ServiceUnavailable

pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.skipif(BACKEND != "postgres", reason="kills PostgreSQL backends"),
]

KILL = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
"""
THREAD_LIST = "{ threads(first: 20) { edges { node { id title lastMessage { body } } } } }"
PAGE = """
query($t: ID!) {
  thread(threadId: $t) {
    messages(last: 50) { edges { node { seq body author { username } reactions { emoji } } } }
  }
}
"""
KILL_SETTLE = 0.2
ME = "{ me { username } }"


async def kill_server_connections(settings: Settings) -> int:
    if settings.pooled:
        return await kill_pooler_connections(settings)
    dsn = settings.database_url.replace("postgresql+asyncpg", "postgresql", 1)
    conn = await asyncpg.connect(dsn)
    try:
        killed: int = await conn.fetchval(KILL)
    finally:
        await conn.close()
    await asyncio.sleep(KILL_SETTLE)  # the backends exit after the signal
    return killed


async def pooler_console(settings: Settings, command: str) -> str:
    """One command on PgBouncer's admin console (simple queries only: psql)."""
    url = make_url(settings.database_url)
    process = await asyncio.create_subprocess_exec(
        *("psql", "-h", str(url.host), "-p", str(url.port), "-U", "postgres", "-d", "pgbouncer"),
        *("-Atc", command),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0, f"{command} failed on PgBouncer's console"
    return out.decode()


async def kill_pooler_connections(settings: Settings) -> int:
    """Drop the app's connections to the pooler and the pooler's to the database."""
    database = make_url(settings.database_url).database
    clients = await pooler_console(settings, "SHOW CLIENTS")
    held = sum(1 for line in clients.splitlines() if line.split("|")[2:3] == [database])
    await pooler_console(settings, f"KILL {database}")
    await pooler_console(settings, f"RESUME {database}")  # KILL also holds new clients back
    await asyncio.sleep(KILL_SETTLE)
    return held


async def busy(alice: Api, thread_id: str) -> None:
    """Enough concurrent work that several pooled connections (both pools) are open."""
    await asyncio.gather(
        *(alice.gql(THREAD_LIST) for _ in range(4)),
        *(alice.gql(PAGE, {"t": thread_id}) for _ in range(4)),
        *(factories.send(alice, thread_id, f"warm {i}") for i in range(4)),
    )


async def test_reads_and_writes_after_the_servers_connections_are_killed(
    clients: Clients, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob = await clients.users("alice", "bob")
    thread_id = await factories.thread(alice, bob)
    await busy(alice, thread_id)
    sent_before = len((await alice.gql(PAGE, {"t": thread_id}))["thread"]["messages"]["edges"])

    for round_ in range(2):
        killed = await kill_server_connections(settings)
        assert killed >= 2, "the server held pooled connections"
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            # Reads: every one answers.
            pages = await asyncio.gather(
                *(alice.gql(PAGE, {"t": thread_id}) for _ in range(3)),
                bob.gql(THREAD_LIST),
                bob.gql(ME),
            )
            assert all(p for p in pages)
            # Writes: each succeeds or says cleanly that it did not, never twice.
            outcomes = await asyncio.gather(
                *(send_once(alice, thread_id, f"after kill {round_}.{i}") for i in range(4))
            )
        print(f"\nround {round_}: {killed} connections killed; sends: {outcomes}")
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        for outcome in outcomes:
            assert outcome in {"sent", "SERVICE_UNAVAILABLE"}, outcome
        page = await alice.gql(PAGE, {"t": thread_id})
        bodies = [e["node"]["body"] for e in page["thread"]["messages"]["edges"]]
        for i, outcome in enumerate(outcomes):
            assert bodies.count(f"after kill {round_}.{i}") == (1 if outcome == "sent" else 0)
        sent_before += outcomes.count("sent")
        assert len(bodies) == sent_before
    # And afterwards everything works as before.
    await factories.send(alice, thread_id, "all well")


async def send_once(api: Api, thread_id: str, body: str) -> str:
    result: dict[str, Any] = await api.raw(
        "mutation($i: SendMessageInput!) { sendMessage(input: $i) { id } }",
        {"i": {"threadId": thread_id, "body": body}},
    )
    if result.get("errors"):
        return str(result["errors"][0]["extensions"]["code"])
    return "sent"


async def test_a_read_whose_held_connection_is_killed_runs_again_on_a_fresh_one(
    settings: Settings,
) -> None:
    """The race checkout cannot see: the connection dies while a read session holds it."""
    db = Database(make_engine(settings.database_url, pooled=settings.pooled))
    try:
        session = db.shared_sessions()
        first = await session.scalar(text("SELECT pg_backend_pid()"))
        await kill_server_connections(settings)
        again = await session.scalar(text("SELECT pg_backend_pid()"))
        assert again != first
        await kill_server_connections(settings)
        rows = await driver_fetch(session, "SELECT pg_backend_pid() AS pid")
        assert rows[0]["pid"] not in {first, again}
        await session.close()
    finally:
        await db.dispose()


async def test_a_write_whose_connection_is_killed_fails_cleanly_and_is_not_applied(
    settings: Settings,
) -> None:
    db = Database(make_engine(settings.database_url, pooled=settings.pooled))
    try:
        with pytest.raises(ServiceUnavailable) as refused:
            async with db.transaction("doomed") as uow:
                await uow.session.execute(text("CREATE TEMPORARY TABLE probe (n int)"))
                await uow.session.execute(
                    text("UPDATE users SET display_name = 'changed' WHERE false")
                )
                await kill_server_connections(settings)
                await uow.session.execute(text("UPDATE users SET display_name = 'changed'"))
        assert refused.value.code == "SERVICE_UNAVAILABLE"
        assert refused.value.extensions == {"retryAfter": 1}
        async with db.reading() as session:
            changed = await session.scalar(
                text("SELECT count(*) FROM users WHERE display_name = 'changed'")
            )
        assert changed == 0
        # The driver's pool: a statement on a connection killed while held.
        with pytest.raises(ServiceUnavailable):
            async with db.driver_connection("doomed") as conn:
                await conn.fetchval("SELECT 1")
                await kill_server_connections(settings)
                await conn.fetchval("SELECT 1")
        async with db.driver_connection("fine") as conn:
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await db.dispose()
