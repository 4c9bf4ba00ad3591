"""The hot standby of the read-replica tests (``scripts/pg-replica``): find it, wait for
it to catch up with the primary, and pause its replay to make it lag on purpose.

One standby serves every test process on the machine, and a paused replay stalls all
of it: the tests that use it take a lock file, so they run one at a time.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg

PRIMARY = "postgresql://postgres@127.0.0.1:5432/postgres"
STANDBY_BASE = "postgresql://postgres@127.0.0.1:5433"
STANDBY = f"{STANDBY_BASE}/postgres"
CATCH_UP_SECONDS = 60.0


async def _value(url: str, sql: str, *args: object) -> object:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def missing() -> str | None:
    """Why there is no usable standby (one line), or None when there is one."""
    try:
        in_recovery = await _value(STANDBY, "SELECT pg_is_in_recovery()")
    except (OSError, asyncpg.PostgresError) as exc:
        return f"no hot standby on 127.0.0.1:5433 ({type(exc).__name__}): scripts/pg-replica start"
    if in_recovery is not True:
        return "the server on 127.0.0.1:5433 is not a standby (not in recovery)"
    return None


@contextmanager
def exclusive() -> Iterator[None]:
    """Hold the standby for this test: no other test process pauses or waits on it."""
    folder = Path(os.environ.get("TMPDIR", "/tmp"))
    with (folder / "threadline-test-replica.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


async def caught_up(timeout: float = CATCH_UP_SECONDS) -> None:
    """Wait until the standby has replayed everything the primary has written so far."""
    target = await _value(PRIMARY, "SELECT pg_current_wal_lsn()::text")
    deadline = time.monotonic() + timeout
    while True:
        done = await _value(STANDBY, "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", target)
        if done:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the standby did not replay up to {target} in {timeout} s")
        await asyncio.sleep(0.05)


async def resume() -> None:
    await _value(STANDBY, "SELECT pg_wal_replay_resume()")


@asynccontextmanager
async def paused() -> AsyncIterator[None]:
    """The standby stops replaying (it still answers): what the primary commits
    meanwhile is not on it until the block ends and replay resumes."""
    await caught_up()
    await _value(STANDBY, "SELECT pg_wal_replay_pause()")
    try:
        deadline = time.monotonic() + 10
        while await _value(STANDBY, "SELECT pg_get_wal_replay_pause_state()") != "paused":
            assert time.monotonic() < deadline, "the standby did not pause its replay"
            await asyncio.sleep(0.02)
        yield
    finally:
        await resume()


async def on_standby(database: str, sql: str, *args: object) -> object:
    """One value read straight from the standby's copy of ``database``."""
    return await _value(f"{STANDBY_BASE}/{database}", sql, *args)
