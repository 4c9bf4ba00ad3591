"""Presence: ONLINE while a user has a live connection anywhere, AWAY on request.

Each connection holds a lease that its keep-alive renews; a user is ONLINE while
any lease is unexpired. With Redis the leases live there, so every process gives
the same answer. A process killed with -9 cannot release its leases, so each one
keeps a short heartbeat key and a hash of its leases: the first process to see
another's heartbeat lapse reaps its leases (only once it has itself beaten for a
whole TTL, so that an outage that silenced everyone is not taken for deaths).

With Redis unreachable no connection fails: leases are kept here and written on
the next renewal, reads answer from this process's connections, and only AWAY
(an explicit write) is refused with SERVICE_UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from threadline.errors import ServiceUnavailable
from threadline.metrics import PRESENCE_UNAVAILABLE
from threadline.realtime.channels import Publisher, presence_channel
from threadline.realtime.redis_pool import (
    COMMAND_TIMEOUT_SECONDS,
    REDIS_ERRORS,
    Backoff,
    CommandClient,
    RedisTarget,
    as_target,
    close_client,
    command_client,
    fail_fast,
)
from threadline.services.states import PresenceStatus

log = logging.getLogger(__name__)

# A lease outlives its connection only when nothing released it: its process died
# (reaped within a heartbeat TTL instead) or every process of the deployment
# stopped at once. Long, so that renewing 10,000 of them costs little.
LEASE_SECONDS = 180.0
# Leases renewed or reaped, and users read, per Redis pipeline.
RENEW_BATCH = 500
READ_BATCH = 1000


@dataclass(frozen=True)
class Beat:
    """A tracker's heartbeat timing (tests run the same ratios faster)."""

    # A process beats this often; one silent for ``ttl`` is dead. Four missed beats:
    # a busy event loop is not mistaken for a dead process.
    every: float = 1.0
    ttl: float = 4.0
    # How long one Redis command may take before the call counts as failed.
    command_timeout: float = COMMAND_TIMEOUT_SECONDS


_UNAVAILABLE: Final = "Presence cannot be changed right now; try again shortly"

# A user's keys carry their id as a hash tag ({...}): on a Redis Cluster they share
# one slot, so that one script can read and write them together. A script, not
# MULTI: a cluster runs one per key slot, and a batch of users spans many slots.
# KEYS: leases, seen, away. ARGV: now, connection id, lease expiry, key lifetime.
# Returns the live leases before this one and whether the user is AWAY: the
# count-then-add is atomic against other processes.
_RENEW: Final = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
local live = redis.call('ZCOUNT', KEYS[1], ARGV[1], '+inf')
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('SET', KEYS[2], ARGV[1])
return {live, redis.call('EXISTS', KEYS[3])}
"""
# KEYS: leases, seen. ARGV: now, "1" to record last seen, the connection ids.
# Returns the user's live leases left.
_RELEASE: Final = """
redis.call('ZREM', KEYS[1], unpack(ARGV, 3))
if ARGV[2] == '1' then redis.call('SET', KEYS[2], ARGV[1]) end
return redis.call('ZCOUNT', KEYS[1], ARGV[1], '+inf')
"""


def _user_keys(prefix: str, user_id: uuid.UUID | str) -> tuple[str, str, str]:
    """A user's leases (sorted set: connection -> expiry), last seen and AWAY keys."""
    base = f"{prefix}presence:{{{user_id}}}"
    return f"{base}:leases", f"{base}:seen", f"{base}:away"


@dataclass(frozen=True)
class PresenceState:
    status: PresenceStatus
    last_seen_at: datetime | None


def _ts(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value else None


def _state(
    live: int, away: bool, seen: float | None, stored_seen: datetime | None, now: float
) -> PresenceState:
    if not live:
        return PresenceState(PresenceStatus.OFFLINE, _ts(seen) or stored_seen)
    return PresenceState(PresenceStatus.AWAY if away else PresenceStatus.ONLINE, _ts(now))


class PresenceTracker:
    def __init__(
        self,
        redis: str | RedisTarget | None,
        publisher: Publisher,
        *,
        beat: Beat = Beat(),
    ) -> None:
        target = as_target(redis)
        self._redis = command_client(target, **fail_fast(beat.command_timeout)) if target else None
        self.beat = beat
        self._prefix = target.prefix if target else ""
        self._processes_key = self._prefix + "presence:processes"
        self._publisher = publisher
        self.lease_seconds = LEASE_SECONDS
        self.process_id = uuid.uuid4().hex
        # This process's own connections (with Redis: a copy of what it wrote there),
        # the AWAY users and last-seen times it knows: the whole state without Redis,
        # and what a read answers while Redis is unreachable.
        self._leases: dict[uuid.UUID, dict[str, float]] = {}
        self._away: set[uuid.UUID] = set()
        self._seen: dict[uuid.UUID, float] = {}
        # Releases that Redis missed (it was down): written with the next heartbeat
        # that reaches it, rather than left to the long lease's expiry.
        self._unreleased: dict[uuid.UUID, set[str]] = {}
        # Set when Redis fails: the next heartbeat that reaches it writes every lease
        # of this process back (one opened meanwhile would wait for its renewal).
        self._restore_due = False
        self._backoff = Backoff(warn_every=60.0)
        # Monotonic times of the last heartbeat that reached Redis, and of the first of
        # the unbroken run it ends (see _heartbeat).
        self._last_beat: float | None = None
        self._beating_since = 0.0
        # Told the connection ids of a dead process's reaped leases (its sockets are
        # gone: the GraphQL layer closes their session rows).
        self.on_reaped: Callable[[Sequence[str]], Awaitable[None]] | None = None

    async def aclose(self) -> None:
        if self._redis is not None:
            # A clean stop leaves nothing for the other processes to reap.
            with contextlib.suppress(*REDIS_ERRORS):
                await self._redis.srem(self._processes_key, self.process_id)
                await self._redis.delete(self._heartbeat_key(self.process_id))
                await self._redis.delete(self._held_key(self.process_id))
            await close_client(self._redis)

    def _heartbeat_key(self, process_id: str) -> str:
        return f"{self._prefix}presence:process:{process_id}"

    def _held_key(self, process_id: str) -> str:
        """A process's leases: connection id -> user id."""
        return f"{self._prefix}presence:process:{process_id}:leases"

    def _usable(self) -> CommandClient[Any] | None:
        """The Redis client, unless it failed a moment ago."""
        if self._redis is None or self._backoff.skipping():
            return None
        return self._redis

    def _failed(self, exc: BaseException) -> None:
        self._restore_due = True
        if self._backoff.failed():
            log.warning("presence: Redis unreachable (%s); answering from this process", exc)

    def _recovered(self) -> None:
        if self._backoff.answered():
            log.info("presence: Redis reachable again")

    async def renew(self, user_id: uuid.UUID, connection_id: str) -> None:
        """Start or extend a connection's lease; announce when the user comes online."""
        await self.renew_many([(user_id, connection_id)])

    async def renew_many(self, leases: Sequence[tuple[uuid.UUID, str]]) -> None:
        """Start or extend connections' leases (user id, connection id); announce each
        user who had no live lease before (newly connected, or back after a lapse).
        Never fails for want of Redis: the leases are kept here for the next renewal.
        """
        now = time.time()
        came_back = []  # (user id, away) of each user who had no live lease before
        for user_id, connection_id in leases:
            held = self._leases.setdefault(user_id, {})
            if not any(e > now for e in held.values()):
                came_back.append((user_id, user_id in self._away))
            held[connection_id] = now + self.lease_seconds
            self._seen[user_id] = now
        if self._redis is not None:
            redis = self._usable()
            if redis is None:
                return
            try:
                came_back = await self._renew_in_redis(redis, leases, now)
            except REDIS_ERRORS as exc:
                self._failed(exc)
                return
            self._recovered()
        for user_id, away in came_back:
            status = PresenceStatus.AWAY if away else PresenceStatus.ONLINE
            await self._publish(user_id, PresenceState(status, _ts(now)))

    async def _renew_in_redis(
        self, redis: CommandClient[Any], leases: Sequence[tuple[uuid.UUID, str]], now: float
    ) -> list[tuple[uuid.UUID, bool]]:
        came_back = []
        held_key = self._held_key(self.process_id)
        lifetime = int(self.lease_seconds * 3)
        for start in range(0, len(leases), RENEW_BATCH):
            batch = leases[start : start + RENEW_BATCH]
            async with redis.pipeline(transaction=False) as pipe:
                for user_id, connection_id in batch:
                    keys = _user_keys(self._prefix, user_id)
                    expiry = now + self.lease_seconds
                    pipe.eval(_RENEW, 3, *keys, now, connection_id, expiry, lifetime)
                # The process's own record of its leases, for a reaper should it die.
                pipe.hset(held_key, mapping={c: str(u) for u, c in batch})
                pipe.expire(held_key, lifetime)
                # One user's failed script (a key of the wrong type) fails that lease only.
                replies = await pipe.execute(raise_on_error=False)
            for (user_id, _), reply in zip(batch, replies, strict=False):
                if isinstance(reply, Exception):
                    log.warning("presence: renewing a lease of %s failed: %s", user_id, reply)
                    continue
                live_before, away = reply
                if not live_before:
                    came_back.append((user_id, bool(away)))
        return came_back

    def _release_script(
        self, pipe: Any, user_id: uuid.UUID, connections: Sequence[str], now: float, seen: bool
    ) -> None:
        leases, seen_key, _ = _user_keys(self._prefix, user_id)
        pipe.eval(_RELEASE, 2, leases, seen_key, now, "1" if seen else "0", *connections)

    async def release(self, user_id: uuid.UUID, connection_id: str) -> None:
        """End a connection's lease; announce OFFLINE when it was the user's last.
        Never fails for want of Redis: the release is written once it is back."""
        now = time.time()
        held = self._leases.get(user_id, {})
        held.pop(connection_id, None)
        if not held:
            self._leases.pop(user_id, None)
        if self._redis is None or user_id in self._leases:
            self._seen[user_id] = now
        else:
            # Redis keeps last-seen times; this copy only covers users connected here.
            self._seen.pop(user_id, None)
        if self._redis is None:
            live = self._live_here(user_id, now)
        else:
            redis = self._usable()
            if redis is None:
                self._unreleased.setdefault(user_id, set()).add(connection_id)
                return
            try:
                async with redis.pipeline(transaction=False) as pipe:
                    self._release_script(pipe, user_id, [connection_id], now, seen=True)
                    pipe.hdel(self._held_key(self.process_id), connection_id)
                    live, _ = await pipe.execute()
            except REDIS_ERRORS as exc:
                self._failed(exc)
                self._unreleased.setdefault(user_id, set()).add(connection_id)
                return
        if not live:
            await self._publish(user_id, PresenceState(PresenceStatus.OFFLINE, _ts(now)))

    async def _release_missed(self, redis: CommandClient[Any]) -> None:
        """The releases Redis missed while it was down; OFFLINE for users left with none."""
        missed, self._unreleased = self._unreleased, {}
        now = time.time()
        users = list(missed)
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for user_id in users:
                    self._release_script(pipe, user_id, sorted(missed[user_id]), now, seen=True)
                held = [c for ids in missed.values() for c in ids]
                pipe.hdel(self._held_key(self.process_id), *held)
                # One user's failed script (a key of the wrong type) must neither stop
                # the others' releases nor keep them all queued, beat after beat.
                replies = await pipe.execute(raise_on_error=False)
        except BaseException:
            for user_id, ids in missed.items():
                self._unreleased.setdefault(user_id, set()).update(ids)
            raise
        for user_id, live in zip(users, replies, strict=False):
            if isinstance(live, Exception):
                log.warning("presence: a missed release of %s failed: %s", user_id, live)
                continue
            if not live and user_id not in self._leases:
                await self._publish(user_id, PresenceState(PresenceStatus.OFFLINE, _ts(now)))

    def _live_here(self, user_id: uuid.UUID, now: float) -> int:
        leases = self._leases.get(user_id, {})
        for conn, expiry in list(leases.items()):
            if expiry <= now:
                del leases[conn]
        return len(leases)

    async def keep_alive(self) -> None:
        """Runs for the process's lifetime (with Redis): this process's heartbeat, and
        the leases of processes whose heartbeat lapsed, removed with OFFLINE announced."""
        if self._redis is None:
            return
        this = asyncio.current_task()
        while True:
            try:
                await self._heartbeat(self._redis)
            except Exception as exc:
                if this is not None and this.cancelling():
                    # The Redis client turned our cancellation into an error of its own.
                    raise asyncio.CancelledError from exc
                if isinstance(exc, REDIS_ERRORS):
                    self._failed(exc)
                else:
                    log.warning("presence heartbeat failed; retrying", exc_info=True)
            if this is not None and this.cancelling():
                # Cancelled in a call that handled the client's error for it (a lease
                # write is never fatal): stop all the same.
                raise asyncio.CancelledError
            await asyncio.sleep(self.beat.every)

    async def _heartbeat(self, redis: CommandClient[Any]) -> None:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.set(self._heartbeat_key(self.process_id), 1, px=int(self.beat.ttl * 1000))
            pipe.sadd(self._processes_key, self.process_id)
            pipe.smembers(self._processes_key)
            _, added, members = await pipe.execute()
        self._recovered()
        if self._unreleased:
            await self._release_missed(redis)
        now = time.monotonic()
        if self._last_beat is None or now - self._last_beat > self.beat.ttl:
            self._beating_since = now
        self._last_beat = now
        if added or self._restore_due:
            # New, removed by another process (a stall, Redis restarted empty), or
            # back from an outage: write this process's leases back now rather than
            # at their next renewal, a minute away.
            self._restore_due = False
            await self._restore()
        others = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
        others = [m for m in others if m != self.process_id]
        if not others or now - self._beating_since < self.beat.ttl:
            # Until this process has beaten for a whole TTL, another's lapsed beat may
            # be the same outage this one just came out of (Redis paused or cut off
            # for everyone): they get one TTL to beat again before they count as dead.
            return
        async with redis.pipeline(transaction=False) as pipe:
            for other in others:
                pipe.exists(self._heartbeat_key(other))
            alive = await pipe.execute()
        for other, beating in zip(others, alive, strict=True):
            # SREM answers 1 to one process only: that one reaps.
            if not beating and await redis.srem(self._processes_key, other):
                await self.reap(other)

    async def _restore(self) -> None:
        now = time.time()
        leases = [(u, c) for u, held in self._leases.items() for c, e in held.items() if e > now]
        if leases:
            await self.renew_many(leases)

    async def reap(self, process_id: str) -> None:
        """Remove a dead process's leases; announce OFFLINE for users left with none."""
        assert self._redis is not None
        redis = self._redis
        held_key = self._held_key(process_id)
        held: dict[Any, Any] = await redis.hgetall(held_key)
        by_user: dict[uuid.UUID, list[str]] = {}
        for connection, user in held.items():
            connection_id = connection.decode() if isinstance(connection, bytes) else connection
            raw_user = user.decode() if isinstance(user, bytes) else user
            by_user.setdefault(uuid.UUID(raw_user), []).append(connection_id)
        now = time.time()
        gone: list[uuid.UUID] = []
        for start in range(0, len(by_user), RENEW_BATCH):
            users = list(by_user)[start : start + RENEW_BATCH]
            async with redis.pipeline(transaction=False) as pipe:
                for user_id in users:
                    self._release_script(pipe, user_id, by_user[user_id], now, seen=False)
                replies = await pipe.execute(raise_on_error=False)
            for user_id, live in zip(users, replies, strict=True):
                if isinstance(live, Exception):  # that user's keys only: the rest go on
                    log.warning("presence: reaping the leases of %s failed: %s", user_id, live)
                elif not live:
                    gone.append(user_id)
        await redis.delete(held_key)
        if held:
            log.info("presence: process %s stopped; %d users now offline", process_id, len(gone))
        for user_id in gone:
            await self._publish(user_id, PresenceState(PresenceStatus.OFFLINE, _ts(now)))
        if held and self.on_reaped is not None:
            await self.on_reaped([c for ids in by_user.values() for c in ids])

    async def get(self, user_id: uuid.UUID, stored_seen: datetime | None = None) -> PresenceState:
        return (await self.get_many([(user_id, stored_seen)]))[0]

    async def get_many(
        self, users: Sequence[tuple[uuid.UUID, datetime | None]]
    ) -> list[PresenceState]:
        """The state of each (user id, last seen as stored), in order. With Redis
        unreachable, as far as this process knows (its own sockets)."""
        now = time.time()
        redis = self._usable()
        if redis is not None:
            found: list[PresenceState] = []
            try:
                # One pipeline per READ_BATCH users (no MULTI: reads only; no MGET,
                # which a cluster pipeline refuses).
                for start in range(0, len(users), READ_BATCH):
                    batch = users[start : start + READ_BATCH]
                    async with redis.pipeline(transaction=False) as pipe:
                        for user_id, _ in batch:
                            leases, seen_key, away_key = _user_keys(self._prefix, user_id)
                            pipe.zcount(leases, now, "+inf")
                            pipe.exists(away_key)
                            pipe.get(seen_key)
                        replies = await pipe.execute()
                    found += [
                        _state(int(n), bool(a), float(s) if s else None, stored_seen, now)
                        for (_, stored_seen), n, a, s in zip(
                            batch, replies[::3], replies[1::3], replies[2::3], strict=True
                        )
                    ]
            except REDIS_ERRORS as exc:
                self._failed(exc)
                PRESENCE_UNAVAILABLE.inc()
            else:
                return found
        return [
            _state(self._live_here(u, now), u in self._away, self._seen.get(u), stored_seen, now)
            for u, stored_seen in users
        ]

    async def set_status(self, user_id: uuid.UUID, status: PresenceStatus) -> PresenceState:
        """AWAY or ONLINE by the user's choice; OFFLINE hides nothing but clears AWAY.
        With Redis unreachable: SERVICE_UNAVAILABLE, and nothing changes."""
        away = status is PresenceStatus.AWAY
        if self._redis is not None:
            redis = self._usable()
            if redis is None:
                raise ServiceUnavailable(_UNAVAILABLE)
            try:
                away_key = _user_keys(self._prefix, user_id)[2]
                if away:
                    await redis.set(away_key, 1)
                else:
                    await redis.delete(away_key)
            except REDIS_ERRORS as exc:
                self._failed(exc)
                raise ServiceUnavailable(_UNAVAILABLE) from None
        if away:
            self._away.add(user_id)
        else:
            self._away.discard(user_id)
        state = await self.get(user_id)
        await self._publish(user_id, state)
        return state

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
