"""Who wrote lately: the users whose reads go to the primary, not the read replica.

A client must see its own change in its next read, which a hot standby may not
have replayed yet. The mark is kept here and in Redis (the next request may reach
another process); when Redis cannot answer, everyone reads the primary.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Final

from threadline.realtime.caches import TTLCache
from threadline.realtime.redis_pool import (
    REDIS_ERRORS,
    Backoff,
    CommandClient,
    RedisTarget,
    close_client,
    command_client,
    fail_fast,
)

log = logging.getLogger(__name__)

# Asked once per query operation: Redis answers in well under a millisecond, and a
# request must not wait long for a hint whose safe default (the primary) is at hand.
_REDIS_TIMEOUT_SECONDS: Final = 0.5


class RecentWriters:
    def __init__(self, redis: RedisTarget | None, seconds: float) -> None:
        self.seconds = seconds
        self._local: TTLCache[uuid.UUID, bool] = TTLCache(seconds, 100_000)
        self._redis: CommandClient[Any] | None = None
        self._prefix = (redis.prefix if redis else "") + "threadline:wrote:"
        if redis is not None:
            self._redis = command_client(
                redis, **fail_fast(_REDIS_TIMEOUT_SECONDS, _REDIS_TIMEOUT_SECONDS)
            )
        self._backoff = Backoff()

    async def wrote(self, user_id: uuid.UUID) -> None:
        """Mark ``user_id`` as having just written (after the commit, before the answer)."""
        if self.seconds <= 0:
            return
        self._local.put(user_id, True)
        if self._redis is None or self._backoff.skipping():
            return
        try:
            await self._redis.set(self._prefix + str(user_id), 1, px=int(self.seconds * 1000))
        except REDIS_ERRORS as exc:
            self._failed(exc)
        else:
            self._answered()

    async def recent(self, user_id: uuid.UUID) -> bool:
        """Whether ``user_id`` wrote within the window (so must read the primary)."""
        if self.seconds <= 0:
            return False
        if self._local.get(user_id) is not None:
            return True
        if self._redis is None:
            return False
        if self._backoff.skipping():
            return True
        try:
            found = await self._redis.exists(self._prefix + str(user_id))
        except REDIS_ERRORS as exc:
            self._failed(exc)
            return True
        self._answered()
        return bool(found)

    async def aclose(self) -> None:
        if self._redis is not None:
            await close_client(self._redis)

    def _failed(self, exc: BaseException) -> None:
        if self._backoff.failed():
            log.warning(
                "Redis unreachable (%s): every query reads the primary until it is back", exc
            )

    def _answered(self) -> None:
        if self._backoff.answered():
            log.info("Redis reachable again: queries read the replica again")
