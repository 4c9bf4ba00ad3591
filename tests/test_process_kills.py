"""A server process killed with -9 in the middle of work: what its clients were told,
what the database holds and what subscribers on the surviving process see agree.

Real `threadline serve` processes on PostgreSQL and Redis; the test holds thread rows
locked so that a batch of sends is stored (committed) while its process is stopped,
and only then kills it: the window between commit and publish, made wide.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from tests import factories
from tests.conftest import ON_POSTGRES, Api
from tests.test_multiprocess import Process, signed_in, spawn, stop
from tests.test_thread_events import EVENTS
from tests.wsclient import GraphQLWS
from threadline.config import Settings

pytestmark = pytest.mark.skipif(not ON_POSTGRES, reason="needs PostgreSQL and Redis")

LOCK = "SELECT 1 FROM threads WHERE id = $1 FOR UPDATE"
WAITING = """SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock'"""
STORED = "SELECT client_id, id::text FROM messages WHERE thread_id = $1 AND client_id IS NOT NULL"


@pytest.fixture
async def two(settings: Settings, redis_url: str) -> AsyncIterator[tuple[Process, Process]]:
    a, b = await asyncio.gather(spawn(settings, redis_url), spawn(settings, redis_url))
    yield a, b
    await asyncio.gather(stop(a), stop(b))


async def until(check: asyncpg.Connection, query: str, *args: object, want: int) -> None:
    for _ in range(200):
        if await check.fetchval(query, *args) >= want:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{query} never reached {want}")


async def send_outcome(api: Api, thread_id: str, client_id: str) -> str | None:
    """The message id the server answered, or None when the request failed."""
    try:
        sent = await factories.send(api, thread_id, f"body {client_id}", clientId=client_id)
    except httpx.HTTPError:
        return None
    return str(sent["id"])


async def test_a_batch_stored_as_its_process_is_killed_reaches_subscribers_once_retried(
    two: tuple[Process, Process], settings: Settings
) -> None:
    if not settings.fast_paths:
        pytest.skip("the group commit: FAST_PATHS=on")
    a, b = two
    dsn = settings.database_url.replace("postgresql+asyncpg", "postgresql", 1)
    check, holder_x, holder_t = [await asyncpg.connect(dsn) for _ in range(3)]
    async with (
        httpx.AsyncClient(base_url=b.base, timeout=30) as on_b,
        httpx.AsyncClient(base_url=a.base, timeout=30) as on_a,
    ):
        alice, bob = await signed_in(on_b, "alice"), await signed_in(on_b, "bob")
        tid, other = await factories.thread(alice, bob), await factories.thread(alice, bob)
        ws = await GraphQLWS.connect(b.ws_url, bob.token or "")
        await ws.subscribe(EVENTS, {"t": tid, "after": 0})
        await factories.send(alice, tid, "before")
        assert (await ws.next())["payload"]["data"]["threadEvents"]["seq"] == 1

        alice_a = Api(on_a, alice.token, "alice")
        ids = [f"kill-{i}" for i in range(5)]
        # The other thread's send holds A's batcher while the five queue behind it.
        await holder_x.execute("BEGIN")
        await holder_x.execute(LOCK, uuid.UUID(other))
        await holder_t.execute("BEGIN")
        await holder_t.execute(LOCK, uuid.UUID(tid))
        first = asyncio.create_task(send_outcome(alice_a, other, "x"))
        await until(check, WAITING, want=1)
        batch = [asyncio.create_task(send_outcome(alice_a, tid, c)) for c in ids]
        await asyncio.sleep(0.5)  # all five are queued in A
        await holder_x.execute("COMMIT")
        assert await first is not None
        await until(check, WAITING, want=1)  # the five, one statement, wait for the thread
        a.proc.send_signal(signal.SIGSTOP)
        await holder_t.execute("COMMIT")
        await until(check, "SELECT count(*) FROM messages WHERE thread_id = $1", tid, want=6)
        a.proc.send_signal(signal.SIGKILL)
        await a.proc.wait()
        told = await asyncio.gather(*batch)
        assert told == [None] * 5  # the process died before it answered

        # Each client retries with its clientId on the surviving process.
        retried = [await send_outcome(alice, tid, c) for c in ids]
        stored = dict(await check.fetch(STORED, uuid.UUID(tid)))
        assert retried == [stored[c] for c in ids]  # the first messages: no duplicates
        # Bob, live on B, sees what alice was told is sent.
        seqs = [(await ws.next(timeout=5))["payload"]["data"]["threadEvents"]["seq"] for _ in ids]
        assert seqs == [2, 3, 4, 5, 6]
        await ws.close()
    for conn in (check, holder_x, holder_t):
        await conn.close()
