"""Presence: ONLINE while a user has a live connection anywhere, AWAY on request.

Each connection holds a lease that its keep-alive renews; a user is ONLINE while
any lease is unexpired, so a process killed with -9 stops counting once its
leases run out. With Redis the leases live there (one sorted set per user), so
every process gives the same answer; without it, in this process.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from threadline.metrics import PRESENCE_UNAVAILABLE
from threadline.realtime.channels import Publisher, presence_channel
from threadline.realtime.redis_pool import redis_pool
from threadline.services.states import PresenceStatus

log = logging.getLogger(__name__)

LEASE_SECONDS = 20.0
# Leases renewed per Redis pipeline by renew_many.
RENEW_BATCH = 500
# Users whose presence get_many reads per Redis pipeline.
READ_BATCH = 1000


@dataclass(frozen=True)
class PresenceState:
    status: PresenceStatus
    last_seen_at: datetime | None


def _ts(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value else None


class PresenceTracker:
    def __init__(
        self,
        redis_url: str | None,
        publisher: Publisher,
        *,
        clock: Callable[[], float] = time.time,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self._redis = aioredis.Redis(connection_pool=redis_pool(redis_url)) if redis_url else None
        self._publisher = publisher
        self._clock = clock
        self.lease_seconds = lease_seconds
        self._leases: dict[uuid.UUID, dict[str, float]] = {}
        self._away: set[uuid.UUID] = set()
        self._seen: dict[uuid.UUID, float] = {}

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()  # type: ignore[attr-defined]

    # -- leases

    async def renew(self, user_id: uuid.UUID, connection_id: str) -> None:
        """Start or extend a connection's lease; announce when the user comes online."""
        await self.renew_many([(user_id, connection_id)])

    async def renew_many(self, leases: Sequence[tuple[uuid.UUID, str]]) -> None:
        """Start or extend connections' leases (user id, connection id); announce each
        user who had no live lease before (newly connected, or back after a lapse).

        One Redis round trip per RENEW_BATCH leases: the maintenance beat renews
        every connection of the process every few seconds.
        """
        now = self._clock()
        if self._redis is None:
            came_back = self._renew_in_memory(leases, now)
        else:
            came_back = await self._renew_in_redis(self._redis, leases, now)
        for user_id, away in came_back:
            status = PresenceStatus.AWAY if away else PresenceStatus.ONLINE
            await self._publish(user_id, PresenceState(status, _ts(now)))

    def _renew_in_memory(
        self, leases: Sequence[tuple[uuid.UUID, str]], now: float
    ) -> list[tuple[uuid.UUID, bool]]:
        """(user id, away) of each user who had no live lease before."""
        came_back = []
        for user_id, connection_id in leases:
            held = self._leases.setdefault(user_id, {})
            if not any(e > now for e in held.values()):
                came_back.append((user_id, user_id in self._away))
            held[connection_id] = now + self.lease_seconds
            self._seen[user_id] = now
        return came_back

    async def _renew_in_redis(
        self, redis: aioredis.Redis[Any], leases: Sequence[tuple[uuid.UUID, str]], now: float
    ) -> list[tuple[uuid.UUID, bool]]:
        came_back = []
        for start in range(0, len(leases), RENEW_BATCH):
            batch = leases[start : start + RENEW_BATCH]
            # MULTI: each user's count-then-add is atomic against other processes.
            async with redis.pipeline(transaction=True) as pipe:
                for user_id, connection_id in batch:
                    key = f"presence:leases:{user_id}"
                    pipe.zremrangebyscore(key, 0, now)
                    pipe.zcount(key, now, "+inf")
                    pipe.zadd(key, {connection_id: now + self.lease_seconds})
                    pipe.expire(key, int(self.lease_seconds * 3))
                    pipe.set(f"presence:seen:{user_id}", now)
                    pipe.exists(f"presence:away:{user_id}")
                replies = await pipe.execute()
            for i, (user_id, _) in enumerate(batch):
                live_before, away = replies[i * 6 + 1], replies[i * 6 + 5]
                if not live_before:
                    came_back.append((user_id, bool(away)))
        return came_back

    async def release(self, user_id: uuid.UUID, connection_id: str) -> None:
        now = self._clock()
        if self._redis is not None:
            key = f"presence:leases:{user_id}"
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(key, connection_id)
                pipe.set(f"presence:seen:{user_id}", now)
                pipe.zcount(key, now, "+inf")
                *_, live = await pipe.execute()
        else:
            self._leases.get(user_id, {}).pop(connection_id, None)
            self._seen[user_id] = now
            live = await self._live_leases(user_id)
        if not live:
            await self._publish(user_id, PresenceState(PresenceStatus.OFFLINE, _ts(now)))

    async def _live_leases(self, user_id: uuid.UUID) -> int:
        now = self._clock()
        if self._redis is not None:
            return int(await self._redis.zcount(f"presence:leases:{user_id}", now, "+inf"))
        leases = self._leases.get(user_id, {})
        for conn, expiry in list(leases.items()):
            if expiry <= now:
                del leases[conn]
        return len(leases)

    # -- state

    async def get(self, user_id: uuid.UUID, stored_seen: datetime | None = None) -> PresenceState:
        return (await self.get_many([(user_id, stored_seen)]))[0]

    async def get_many(
        self, users: Sequence[tuple[uuid.UUID, datetime | None]], *, best_effort: bool = False
    ) -> list[PresenceState]:
        """The state of each (user id, last seen as stored), in order.

        With Redis, one round trip for the lot (per READ_BATCH users): a page of
        users reads its presence in one pipeline, not three commands per user.
        ``best_effort``: when Redis fails, each user is OFFLINE as last stored
        (logged and counted) rather than the read failing, so that a page that
        shows presence still answers.
        """
        try:
            return await self._get_many(users)
        except (RedisError, OSError) as exc:
            if not best_effort:
                raise
            # The class only: a Redis error's text may name the server.
            log.warning("presence unavailable (%s): users shown OFFLINE", type(exc).__name__)
            PRESENCE_UNAVAILABLE.inc()
            return [PresenceState(PresenceStatus.OFFLINE, seen) for _, seen in users]

    async def _get_many(
        self, users: Sequence[tuple[uuid.UUID, datetime | None]]
    ) -> list[PresenceState]:
        now = self._clock()
        if self._redis is None:
            found = [
                (await self._live_leases(u), u in self._away, self._seen.get(u)) for u, _ in users
            ]
        else:
            found = []
            for start in range(0, len(users), READ_BATCH):
                found.extend(
                    await self._read_in_redis(self._redis, users[start : start + READ_BATCH], now)
                )
        states = []
        for (_, stored_seen), (live, away, seen) in zip(users, found, strict=True):
            if not live:
                states.append(PresenceState(PresenceStatus.OFFLINE, _ts(seen) or stored_seen))
            else:
                status = PresenceStatus.AWAY if away else PresenceStatus.ONLINE
                states.append(PresenceState(status, _ts(now)))
        return states

    async def _read_in_redis(
        self,
        redis: aioredis.Redis[Any],
        users: Sequence[tuple[uuid.UUID, datetime | None]],
        now: float,
    ) -> list[tuple[int, bool, float | None]]:
        """(live leases, away, last seen) per user, in one pipeline (no MULTI: reads only)."""
        async with redis.pipeline(transaction=False) as pipe:
            for user_id, _ in users:
                pipe.zcount(f"presence:leases:{user_id}", now, "+inf")
            pipe.mget([f"presence:away:{u}" for u, _ in users])
            pipe.mget([f"presence:seen:{u}" for u, _ in users])
            *live, away, seen = await pipe.execute()
        return [
            (int(n), a is not None, float(s) if s else None)
            for n, a, s in zip(live, away, seen, strict=True)
        ]

    async def set_status(self, user_id: uuid.UUID, status: PresenceStatus) -> PresenceState:
        """AWAY or ONLINE by the user's choice; OFFLINE hides nothing but clears AWAY."""
        away = status is PresenceStatus.AWAY
        if self._redis is not None:
            if away:
                await self._redis.set(f"presence:away:{user_id}", 1)
            else:
                await self._redis.delete(f"presence:away:{user_id}")
        elif away:
            self._away.add(user_id)
        else:
            self._away.discard(user_id)
        await self._announce(user_id)
        return await self.get(user_id)

    async def _announce(self, user_id: uuid.UUID) -> None:
        await self._publish(user_id, await self.get(user_id))

    async def _publish(self, user_id: uuid.UUID, state: PresenceState) -> None:
        message = orjson.dumps(
            {
                "u": str(user_id),
                "s": state.status.value,
                "seen": state.last_seen_at.isoformat() if state.last_seen_at else None,
            }
        ).decode()
        try:
            await self._publisher.publish(presence_channel(user_id), message)
        except Exception:  # presence is best effort; the next renewal corrects it
            return
