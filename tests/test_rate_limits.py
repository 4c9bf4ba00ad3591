"""Per-user moving-window rate limits, in memory and in a real Redis."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping

import pytest
import redis.asyncio
from limits import parse

from tests.conftest import CLUSTER, REDIS_CLUSTER_URL, delete_cluster_keys
from tests.deployment import Outage, closed_port
from threadline.config import Settings
from threadline.errors import ErrorCode, RateLimited
from threadline.realtime.rate_limits import (
    DEFAULT_LIMITS,
    Action,
    RateLimiter,
)
from threadline.realtime.redis_pool import RedisTarget

# Parametrized over both limit stores itself: the SQLite row of the test command skips it.
pytestmark = pytest.mark.any_backend

REDIS_URL = "redis://127.0.0.1:6379/0"
# On the cluster row, "redis" is the shared Redis Cluster.
REDIS: str | RedisTarget = RedisTarget(REDIS_CLUSTER_URL, cluster=True) if CLUSTER else REDIS_URL

MakeLimiter = Callable[..., RateLimiter]

# The default amounts over a minute, for tests about whose window a hit lands in:
# a loaded machine can take over a second to make three hits (SET_TYPING is 2/1 s).
MINUTE_WINDOWS = {
    Action.SEND_MESSAGE: "20/minute",
    Action.SET_TYPING: "2/minute",
    Action.MUTATION: "30/minute",
}


@pytest.fixture(
    params=[
        pytest.param(None, id="memory"),
        pytest.param(REDIS, id="redis", marks=pytest.mark.redis_only),
    ]
)
async def make_limiter(request: pytest.FixtureRequest) -> AsyncIterator[MakeLimiter]:
    """Builds limiters on one storage; with Redis, all under a prefix of this test's own."""
    redis_url: str | RedisTarget | None = request.param
    prefix = f"test:ratelimit:{uuid.uuid4().hex}"
    made: list[RateLimiter] = []

    def make(*, limits: Mapping[Action, str] | None = None, enabled: bool = True) -> RateLimiter:
        limiter = RateLimiter(redis_url, enabled=enabled, limits=limits, key_prefix=prefix)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.aclose()
    if redis_url is not None:
        await delete_redis_keys(prefix)


async def delete_redis_keys(prefix: str) -> None:
    """Remove what a test left in Redis (windows expire anyway, uploads only after a minute)."""
    if CLUSTER:
        await delete_cluster_keys(REDIS_CLUSTER_URL, f"{prefix}:")
        return
    async with redis.asyncio.Redis.from_url(REDIS_URL) as client:
        async for key in client.scan_iter(match=f"{prefix}:*"):
            await client.delete(key)


async def hit_times(limiter: RateLimiter, action: Action, key: str, times: int) -> None:
    for _ in range(times):
        await limiter.hit(action, key)


def test_defaults_match_the_contract() -> None:
    def window(text: str) -> tuple[int, int]:
        item = parse(text)
        return item.amount, item.get_expiry()

    assert {action: window(text) for action, text in DEFAULT_LIMITS.items()} == {
        Action.SEND_MESSAGE: (20, 2),
        Action.SET_TYPING: (2, 1),
        Action.UPLOAD: (10, 60),
        Action.MUTATION: (30, 1),
        Action.WS_CONNECT: (10, 60),
    }
    assert Settings.model_construct().max_subscriptions_per_connection == 100


async def test_21st_message_in_2_seconds_is_refused_with_retry_after(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter()
    started = time.monotonic()
    await hit_times(limiter, Action.SEND_MESSAGE, "user_a", 20)

    with pytest.raises(RateLimited) as raised:
        await limiter.hit(Action.SEND_MESSAGE, "user_a")

    # All 20 were sent just now, so the oldest leaves the window in just under 2 s
    # (in under 1 s if a loaded machine took over a second to send them).
    seconds = 2 if time.monotonic() - started < 1 else raised.value.retry_after
    assert raised.value.code is ErrorCode.RATE_LIMITED
    assert seconds in {1, 2}
    assert raised.value.retry_after == seconds
    assert raised.value.extensions == {"retryAfter": seconds}
    assert f"{seconds} s" in raised.value.message


async def test_window_moves_so_the_oldest_hit_frees_one_place(
    make_limiter: MakeLimiter,
) -> None:
    # Each step has about 2 s of slack, for a loaded 2-core machine.
    limiter = make_limiter(limits={Action.MUTATION: "2/4 seconds"})
    started = time.monotonic()
    await limiter.hit(Action.MUTATION, "user_a")  # t = 0
    await asyncio.sleep(2.0)
    await limiter.hit(Action.MUTATION, "user_a")  # t = 2

    with pytest.raises(RateLimited) as raised:
        await limiter.hit(Action.MUTATION, "user_a")
    # Until the hit at t = 0 leaves (t = 4), not a whole window from now.
    assert raised.value.retry_after in {1, 2}

    await asyncio.sleep(max(0.0, started + 4.2 - time.monotonic()))
    # t = 4.2: the first hit has left, the second has not.
    await limiter.hit(Action.MUTATION, "user_a")
    # A fixed window would have started afresh at t = 4 and let this one through.
    with pytest.raises(RateLimited):
        await limiter.hit(Action.MUTATION, "user_a")


async def test_each_user_has_their_own_window(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(limits=MINUTE_WINDOWS)
    await hit_times(limiter, Action.SEND_MESSAGE, "user_a", 20)
    with pytest.raises(RateLimited):
        await limiter.hit(Action.SEND_MESSAGE, "user_a")

    await hit_times(limiter, Action.SEND_MESSAGE, "user_b", 20)


async def test_each_action_has_its_own_window(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(limits=MINUTE_WINDOWS)
    await hit_times(limiter, Action.SET_TYPING, "user_a", 2)
    with pytest.raises(RateLimited):
        await limiter.hit(Action.SET_TYPING, "user_a")

    await hit_times(limiter, Action.SEND_MESSAGE, "user_a", 20)
    await hit_times(limiter, Action.MUTATION, "user_a", 30)


async def test_overriding_one_limit_keeps_the_other_defaults(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(limits={Action.UPLOAD: "1/minute"})
    await limiter.hit(Action.UPLOAD, "user_a")
    with pytest.raises(RateLimited) as raised:
        await limiter.hit(Action.UPLOAD, "user_a")
    assert 59 <= raised.value.retry_after <= 60

    await hit_times(limiter, Action.SET_TYPING, "user_a", 2)
    with pytest.raises(RateLimited):
        await limiter.hit(Action.SET_TYPING, "user_a")


async def test_disabled_limiter_never_refuses(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(enabled=False, limits={Action.MUTATION: "1/minute"})
    await hit_times(limiter, Action.MUTATION, "user_a", 50)
    await hit_times(limiter, Action.SEND_MESSAGE, "user_a", 50)


async def test_healthy_when_the_storage_answers(make_limiter: MakeLimiter) -> None:
    assert await make_limiter().healthy()


def test_a_bad_limit_is_refused_when_the_limiter_is_built() -> None:
    with pytest.raises(ValueError):
        RateLimiter(None, limits={Action.UPLOAD: "lots per fortnight"})


@pytest.mark.redis_only
async def test_two_processes_on_one_redis_share_the_window() -> None:
    prefix = f"test:ratelimit:{uuid.uuid4().hex}"
    first = RateLimiter(REDIS, key_prefix=prefix)
    second = RateLimiter(REDIS, key_prefix=prefix)
    try:
        await hit_times(first, Action.SEND_MESSAGE, "user_a", 10)
        await hit_times(second, Action.SEND_MESSAGE, "user_a", 10)
        with pytest.raises(RateLimited):
            await first.hit(Action.SEND_MESSAGE, "user_a")
        with pytest.raises(RateLimited):
            await second.hit(Action.SEND_MESSAGE, "user_a")
    finally:
        await first.aclose()
        await second.aclose()
        await delete_redis_keys(prefix)


async def test_redis_down_lets_calls_through_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = RateLimiter(
        f"redis://127.0.0.1:{closed_port()}/0", limits={Action.MUTATION: "3/second"}
    )
    caplog.set_level(logging.WARNING, logger="threadline.realtime.rate_limits")
    started = time.perf_counter()
    try:
        await hit_times(limiter, Action.MUTATION, "user_a", 100)
        assert not await limiter.healthy()
    finally:
        await limiter.aclose()

    # No per-call wait on the dead Redis (100 calls); the margin is for a loaded machine.
    assert time.perf_counter() - started < 3.0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "unreachable" in warnings[0].getMessage()


@pytest.mark.redis_only
async def test_limits_resume_counting_when_redis_comes_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hop = Outage(6379)
    await hop.start()
    prefix = f"test:ratelimit:{uuid.uuid4().hex}"
    limiter = RateLimiter(
        f"redis://127.0.0.1:{hop.port}/0",
        limits={Action.MUTATION: "2/minute"},
        key_prefix=prefix,
    )
    caplog.set_level(logging.INFO, logger="threadline.realtime.rate_limits")
    try:
        await hit_times(limiter, Action.MUTATION, "user_a", 2)

        await hop.cut()
        await hit_times(limiter, Action.MUTATION, "user_a", 5)
        assert not await limiter.healthy()

        await hop.start()
        # After a failure the limiter leaves Redis alone for a second.
        await asyncio.sleep(1.05)
        assert await limiter.healthy()
        # The two hits counted before the outage are still in Redis's window.
        with pytest.raises(RateLimited):
            await limiter.hit(Action.MUTATION, "user_a")
    finally:
        await limiter.aclose()
        await hop.cut()
        await delete_redis_keys(prefix)
    messages = [record.getMessage() for record in caplog.records]
    assert any("unreachable" in message for message in messages)
    assert any("reachable again" in message for message in messages)
