"""Typing indicators: announced at once, expired 6 seconds after the last ``true``.

The expiry sends ``isTyping: false`` even when the client goes silent. The last
``true`` time is shared through Redis when configured, so a timer in one process
never ends a typing spell that another process has extended. With Redis
unreachable a ``setTyping`` is SERVICE_UNAVAILABLE (nobody could be told).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from sqlalchemy.exc import SQLAlchemyError

from threadline.db import Database
from threadline.errors import ServiceUnavailable
from threadline.realtime.broker import BrokerError
from threadline.realtime.channels import Publisher, activity_channel, encode_activity
from threadline.realtime.redis_pool import (
    REDIS_ERRORS,
    RedisTarget,
    as_target,
    close_client,
    command_client,
    fail_fast,
)
from threadline.services.events import ActivityEvent, last_seq

log = logging.getLogger(__name__)

TYPING_SECONDS = 6.0
# Redis (typing state) or the broker (announcing it) unreachable.
_UNREACHABLE = (*REDIS_ERRORS, BrokerError)


class TypingTracker:
    def __init__(self, redis: str | RedisTarget | None, publisher: Publisher, db: Database) -> None:
        target = as_target(redis)
        self._redis = command_client(target, **fail_fast()) if target else None
        self._prefix = target.prefix if target else ""
        self._publisher = publisher
        self._db = db
        # Redis shares the times between processes: wall clock there.
        self._clock = time.monotonic if target is None else time.time
        self.window = TYPING_SECONDS
        self._last_true: dict[tuple[uuid.UUID, uuid.UUID], float] = {}
        self._timers: dict[tuple[uuid.UUID, uuid.UUID], asyncio.TimerHandle] = {}

    async def aclose(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self._redis is not None:
            await close_client(self._redis)

    def _key(self, thread_id: uuid.UUID, user_id: uuid.UUID) -> str:
        return f"{self._prefix}typing:{thread_id}:{user_id}"

    async def _get_last(self, key: tuple[uuid.UUID, uuid.UUID]) -> float | None:
        if self._redis is not None:
            raw = await self._redis.get(self._key(*key))
            return float(raw) if raw else None
        return self._last_true.get(key)

    async def _set_last(self, key: tuple[uuid.UUID, uuid.UUID], value: float | None) -> None:
        if self._redis is not None:
            # Ended is 0, not deleted: a key a Redis restart lost (None) still expires.
            await self._redis.set(self._key(*key), value or 0, ex=int(self.window * 2) + 1)
        elif value is None:
            self._last_true.pop(key, None)
        else:
            self._last_true[key] = value

    async def set(
        self, thread_id: uuid.UUID, user_id: uuid.UUID, is_typing: bool, seq: int
    ) -> None:
        """``seq``: the thread's last seq as the caller's access check read it."""
        key = (thread_id, user_id)
        now = self._clock()
        try:
            last = await self._get_last(key)
            active = last is not None and now - last < self.window
            if is_typing:
                await self._set_last(key, now)
                self._schedule(key, self.window)
                if not active:
                    await self._announce(thread_id, user_id, True, seq)
            elif active:
                await self._set_last(key, None)
                self._cancel(key)
                await self._announce(thread_id, user_id, False, seq)
        except _UNREACHABLE:
            raise ServiceUnavailable(
                "Typing cannot be announced right now; try again shortly"
            ) from None

    def _cancel(self, key: tuple[uuid.UUID, uuid.UUID]) -> None:
        if (handle := self._timers.pop(key, None)) is not None:
            handle.cancel()

    def _schedule(self, key: tuple[uuid.UUID, uuid.UUID], delay: float) -> None:
        self._cancel(key)
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, lambda: loop.create_task(self._expire(key)))

    async def _expire(self, key: tuple[uuid.UUID, uuid.UUID]) -> None:
        self._timers.pop(key, None)
        try:
            last = await self._get_last(key)
            if last == 0 or (last is None and self._redis is None):
                return  # ended already
            remaining = self.window - (self._clock() - (last or 0))
            if remaining > 0.05:  # extended elsewhere: wait for the new deadline
                self._schedule(key, remaining)
                return
            await self._set_last(key, None)
            # The thread's last seq now, as set() names the one its access check read: a
            # viewer removed since the last ``true`` (its publish lost) is checked again.
            # The database unreachable, it is announced anyway: no indicator stays on.
            seq = 0
            try:
                async with self._db.reading() as session:
                    seq = await last_seq(session, key[0])
            except (SQLAlchemyError, OSError, ServiceUnavailable) as exc:
                log.warning("typing expiry announced without the thread's last seq: %s", exc)
            await self._announce(key[0], key[1], False, seq)
        except _UNREACHABLE as exc:
            # Its Redis key expires by itself; subscribers resubscribe after an outage.
            log.warning("typing expiry not announced: %s", exc)

    async def _announce(
        self, thread_id: uuid.UUID, user_id: uuid.UUID, typing: bool, seq: int
    ) -> None:
        event = ActivityEvent(thread_id, "typing", user_id, {"is_typing": typing, "seq": seq})
        await self._publisher.publish(activity_channel(thread_id), encode_activity(event))
