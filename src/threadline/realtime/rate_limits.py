"""Per-user rate limits as moving windows: in process memory without ``REDIS_URL``,
shared by all processes through Redis with it. Over the limit: ``RateLimited``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisClusterStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool

from threadline.config import Settings
from threadline.errors import RateLimited
from threadline.realtime.redis_pool import (
    REDIS_ERRORS,
    Backoff,
    RedisTarget,
    as_target,
    fail_fast,
    redis_pool,
)

logger = logging.getLogger(__name__)


class Action(StrEnum):
    """What a user does that costs them a place in a window."""

    SEND_MESSAGE = "send_message"
    SET_TYPING = "set_typing"
    UPLOAD = "upload"
    MUTATION = "mutation"
    WS_CONNECT = "ws_connect"


def windows_as_limits(windows: Mapping[str, tuple[int, int]]) -> dict[Action, str]:
    """Settings' (calls, seconds) per action name, in the ``limits`` library's notation."""
    return {
        Action(name): f"{count}/{seconds} seconds" for name, (count, seconds) in windows.items()
    }


# The contract's defaults, as Settings holds them (RATE_LIMIT_<ACTION>).
DEFAULT_LIMITS: Final[Mapping[Action, str]] = MappingProxyType(
    windows_as_limits(Settings.model_construct().rate_limit_windows())
)

_REFUSALS: Final[Mapping[Action, str]] = MappingProxyType(
    {
        Action.SEND_MESSAGE: "You are sending messages too fast",
        Action.SET_TYPING: "Typing updates are too frequent",
        Action.UPLOAD: "Too many uploads",
        Action.MUTATION: "Too many requests",
        Action.WS_CONNECT: "Too many new connections",
    }
)

# Redis answers in well under a millisecond; a limiter that waited longer would
# slow every mutation more than it protects anything.
_REDIS_TIMEOUT_SECONDS: Final = 0.5

_STORAGE_ERRORS: Final = (StorageError, *REDIS_ERRORS)


class RateLimiter:
    """Moving-window limits per action and user key. ``limits`` overrides some or
    all of ``DEFAULT_LIMITS`` with strings such as ``"20/2 seconds"``.

    If Redis cannot be reached the limiter lets calls through and logs a warning:
    refusing everything would be the outage that limits exist to prevent.
    """

    def __init__(
        self,
        redis: str | RedisTarget | None,
        *,
        enabled: bool = True,
        limits: Mapping[Action, str] | None = None,
        key_prefix: str = "threadline:ratelimit",
    ) -> None:
        self._enabled = enabled
        # Parsed now, so that a bad limit string stops the process at start-up.
        self._items: dict[Action, RateLimitItem] = {
            action: parse(text) for action, text in {**DEFAULT_LIMITS, **(limits or {})}.items()
        }
        self._pool: ConnectionPool[Any] | None = None
        self._storage: Storage
        target = as_target(redis)
        timeouts = fail_fast(_REDIS_TIMEOUT_SECONDS, _REDIS_TIMEOUT_SECONDS)
        if target is None:
            self._storage = MemoryStorage()
        else:
            options: dict[str, Any] = {
                "wrap_exceptions": True,
                "implementation": "redispy",
                "key_prefix": target.prefix + key_prefix,
            }
            if target.cluster:
                # Each window is one key, its script's only one: any slot will do.
                # limits builds this cluster client itself, from the node's credentials
                # and address.
                self._storage = RedisClusterStorage(
                    "async+redis+cluster://" + urlsplit(target.url).netloc,
                    require_full_coverage=False,
                    **timeouts,
                    **options,
                )
            else:
                # The connections come from our pool (timeouts, retries, closed by us);
                # the URI only selects the redis-py bridge rather than coredis.
                self._pool = redis_pool(target.url, **timeouts)
                options["connection_pool"] = self._pool
                self._storage = RedisStorage("async+redis://", **options)
        self._strategy = MovingWindowRateLimiter(self._storage)
        # While Redis stays down, one warning (with a count) a minute.
        self._backoff = Backoff(warn_every=60.0)
        self._unchecked_since_warning = 0

    async def hit(self, action: Action, key: str) -> None:
        """Count one ``action`` by ``key`` (a user id); raise ``RateLimited`` if over."""
        if not self._enabled:
            return
        if self._backoff.skipping():
            self._unchecked_since_warning += 1
            return
        item = self._items[action]
        try:
            if await self._strategy.hit(item, action.value, key):
                self._note_storage_ok()
                return
            stats = await self._strategy.get_window_stats(item, action.value, key)
        except _STORAGE_ERRORS as exc:
            self._note_storage_failed(exc)
            return
        self._note_storage_ok()
        # A moving window's reset time is when its oldest entry leaves it: the
        # moment the next call fits. Rounded up so that waiting that long is enough.
        seconds = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(f"{_REFUSALS[action]}; try again in {seconds} s.", retry_after=seconds)

    async def healthy(self) -> bool:
        """Whether the windows can be read and written now (always, in memory)."""
        try:
            return bool(await self._storage.check())
        except _STORAGE_ERRORS:
            return False

    async def aclose(self) -> None:
        """Close the Redis connections, or stop the in-memory expiry task."""
        if self._pool is not None:
            await self._pool.disconnect()
        elif isinstance(self._storage, RedisClusterStorage):
            # limits has no close of its own: its bridge holds the client it built.
            bridge: Any = self._storage.bridge
            await bridge.storage.aclose()
        elif isinstance(self._storage, MemoryStorage) and self._storage.timer is not None:
            # The storage schedules a task to drop expired entries; left pending it
            # would be destroyed with the event loop, with a warning.
            self._storage.timer.cancel()
            await asyncio.gather(self._storage.timer, return_exceptions=True)

    def _note_storage_failed(self, exc: BaseException) -> None:
        self._unchecked_since_warning += 1
        was_down = self._backoff.down
        if not self._backoff.failed():
            return
        cause = exc.storage_error if isinstance(exc, StorageError) else exc
        if was_down:
            logger.warning(
                "Rate limit storage still unreachable (%s); %d calls let through unchecked "
                "since the last warning",
                cause,
                self._unchecked_since_warning,
            )
        else:
            logger.warning(
                "Rate limit storage unreachable (%s); letting calls through unchecked", cause
            )
        self._unchecked_since_warning = 0

    def _note_storage_ok(self) -> None:
        if self._backoff.answered():
            logger.info(
                "Rate limit storage reachable again; %d calls went through unchecked "
                "since the last warning",
                self._unchecked_since_warning,
            )
            self._unchecked_since_warning = 0
