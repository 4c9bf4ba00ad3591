"""Presence across processes: a process whose heartbeat lapses has its users
announced OFFLINE by another, and writes its leases back when it beats again.

Two trackers on the test's Redis database stand for two processes; stopping one's
heartbeat stands for a killed (or stalled) process. PostgreSQL + Redis backend only.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest

from tests.conftest import ON_POSTGRES, free_port
from threadline.config import Settings
from threadline.realtime.presence import Beat, PresenceTracker, _user_keys
from threadline.realtime.redis_pool import settings_target
from threadline.services.states import PresenceStatus

pytestmark = pytest.mark.skipif(not ON_POSTGRES, reason="needs Redis")

# The production ratios (a TTL of four beats) at a quarter of the time.
FAST = Beat(every=0.25, ttl=1.0, command_timeout=1.0)


class Recorder:
    """A publisher that keeps what presence announces: (user id, status)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.changed = asyncio.Event()

    async def publish(self, channel: str, message: str) -> None:
        data = orjson.loads(message)
        self.seen.append((data["u"], data["s"]))
        self.changed.set()

    async def until(self, user_id: uuid.UUID, status: str, timeout: float = 15) -> None:
        async with asyncio.timeout(timeout):
            while (str(user_id), status) not in self.seen:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def trackers(settings: Settings) -> AsyncIterator[tuple[PresenceTracker, PresenceTracker]]:
    redis = settings_target(settings)  # on the cluster row: under the test's prefix
    first = PresenceTracker(redis, Recorder(), beat=FAST)
    second = PresenceTracker(redis, Recorder(), beat=FAST)
    yield first, second
    await first.aclose()
    await second.aclose()


async def stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)


async def test_a_lapsed_process_is_reaped_and_comes_back_when_it_beats_again(
    trackers: tuple[PresenceTracker, PresenceTracker],
) -> None:
    a, b = trackers
    watcher: Recorder = b._publisher  # type: ignore[assignment]
    user, other = uuid.uuid4(), uuid.uuid4()
    reaped: list[str] = []

    async def on_reaped(connection_ids: object) -> None:
        reaped.extend(connection_ids)  # type: ignore[call-overload]

    b.on_reaped = on_reaped
    beating_a = asyncio.create_task(a.keep_alive())
    beating_b = asyncio.create_task(b.keep_alive())
    try:
        await a.renew(user, "conn-a")
        await a.renew(other, "conn-a2")
        await b.renew(other, "conn-b")  # `other` is also connected to b
        assert (await b.get(user)).status is PresenceStatus.ONLINE

        await stopped(beating_a)  # a dies (or stalls longer than its heartbeat)
        await watcher.until(user, "OFFLINE")
        assert (await b.get(user)).status is PresenceStatus.OFFLINE
        # Still connected through b: not announced, still ONLINE.
        assert (str(other), "OFFLINE") not in watcher.seen
        assert (await b.get(other)).status is PresenceStatus.ONLINE
        assert sorted(reaped) == ["conn-a", "conn-a2"]

        # a was only stalled: its next beat finds it was removed and writes its leases back.
        announced: Recorder = a._publisher  # type: ignore[assignment]
        announced.seen.clear()
        beating_a = asyncio.create_task(a.keep_alive())
        await announced.until(user, "ONLINE")
        assert (await b.get(user)).status is PresenceStatus.ONLINE
    finally:
        await stopped(beating_a)
        await stopped(beating_b)


async def test_after_an_outage_for_everyone_no_process_reaps_another_that_beats_again(
    trackers: tuple[PresenceTracker, PresenceTracker],
) -> None:
    """Redis cut off from both for longer than a heartbeat's TTL (stood for by both
    heartbeats stopping): the first back must not take the other for dead."""
    a, b = trackers
    watcher: Recorder = a._publisher  # type: ignore[assignment]
    user = uuid.uuid4()
    reaped: list[str] = []

    async def on_reaped(connection_ids: object) -> None:
        reaped.extend(connection_ids)  # type: ignore[call-overload]

    a.on_reaped = on_reaped
    beating_a = asyncio.create_task(a.keep_alive())
    beating_b = asyncio.create_task(b.keep_alive())
    try:
        await b.renew(user, "conn-b")
        await asyncio.sleep(FAST.ttl + 0.5)  # both past their first TTL
        await stopped(beating_a)
        await stopped(beating_b)
        await asyncio.sleep(FAST.ttl + 1)  # every heartbeat key has lapsed
        beating_a = asyncio.create_task(a.keep_alive())
        await asyncio.sleep(FAST.every * 1.5)  # a beats first, sees b lapsed
        beating_b = asyncio.create_task(b.keep_alive())
        await asyncio.sleep(FAST.ttl + 2 * FAST.every)
        assert reaped == []
        assert (str(user), "OFFLINE") not in watcher.seen
        assert (await a.get(user)).status is PresenceStatus.ONLINE

        # b really gone this time: a, beating for a whole TTL now, reaps it.
        await stopped(beating_b)
        await watcher.until(user, "OFFLINE")
        assert reaped == ["conn-b"]
    finally:
        await stopped(beating_a)
        await stopped(beating_b)


async def test_what_redis_missed_while_paused_is_written_when_it_answers_again(
    settings: Settings,
) -> None:
    """Leases last minutes (renewed rarely, so that 10,000 cost little): a release
    that met Redis paused must not leave the user ONLINE until the lease runs out."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    redis = await asyncio.create_subprocess_exec(
        *(binary, "--port", str(port), "--save", "", "--appendonly", "no"),
        stdout=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.3)
    url = f"redis://127.0.0.1:{port}/0"
    here = PresenceTracker(url, Recorder(), beat=FAST)
    elsewhere = PresenceTracker(url, Recorder(), beat=FAST)
    announced: Recorder = here._publisher  # type: ignore[assignment]
    user = uuid.uuid4()
    beating = asyncio.create_task(here.keep_alive())
    try:
        await here.renew(user, "conn")
        assert (await elsewhere.get(user)).status is PresenceStatus.ONLINE
        # Another user's leases key holds a string: their release's script fails,
        # which must not hold up this user's.
        broken = uuid.uuid4()
        await here.renew(broken, "conn-b")
        assert elsewhere._redis is not None
        await elsewhere._redis.set(_user_keys("", broken)[0], "not a sorted set")
        redis.send_signal(signal.SIGSTOP)
        await here.release(broken, "conn-b")
        await here.release(user, "conn")  # times out: Redis still holds the lease
        assert (str(user), "OFFLINE") not in announced.seen
        redis.send_signal(signal.SIGCONT)
        await announced.until(user, "OFFLINE", timeout=FAST.ttl + 5)
        assert (await elsewhere.get(user)).status is PresenceStatus.OFFLINE

        # The other way round: a lease taken while Redis was paused is written when it
        # answers again, not at the lease's renewal a minute later.
        later = uuid.uuid4()
        redis.send_signal(signal.SIGSTOP)
        await here.renew(later, "conn-2")
        redis.send_signal(signal.SIGCONT)
        for _ in range(int(FAST.ttl + 5) * 10):
            if (await elsewhere.get(later)).status is PresenceStatus.ONLINE:
                break
            await asyncio.sleep(0.1)
        assert (await elsewhere.get(later)).status is PresenceStatus.ONLINE
    finally:
        redis.send_signal(signal.SIGCONT)
        await stopped(beating)
        await here.aclose()
        await elsewhere.aclose()
        redis.kill()
        await redis.wait()
