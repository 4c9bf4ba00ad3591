"""Live fan-out over a Redis Cluster with sharded pub/sub (REDIS_CLUSTER=on).

An event costs one SPUBLISH on its channel's shard, not a broadcast to every
node. One SSUBSCRIBE connection per shard master; the slot map (CLUSTER SLOTS)
is read again when a shard reports trouble (MOVED, a reshard's unsubscribe, a
failed connection). Channels that changed owner move connection, and their
subscribers fill the gap from the event log, as after any reconnection.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

from threadline.realtime.redis_backend import (
    CONNECT_TIMEOUT,
    ConnectionRestored,
    RedisBackend,
    SubscriberConnection,
)
from threadline.realtime.redis_pool import REDIS_ERRORS, RedisTarget

logger = logging.getLogger(__name__)

# Slot map reads after trouble are at least this far apart: a shard that is down
# reports trouble on every reconnection attempt.
REFRESH_INTERVAL_SECONDS = 0.5


class SlotMap:
    """Which master serves each of the cluster's 16384 slots, from CLUSTER SLOTS
    as one node answers it (an empty host there is that node's own)."""

    def __init__(self, reply: list[Any], asked: str) -> None:
        rows = []
        for start, end, (host, port, *_), *_ in reply:
            name = host.decode() if isinstance(host, bytes) else str(host)
            rows.append((int(start), int(end), (name or asked, int(port))))
        rows.sort()
        self._starts = [start for start, _, _ in rows]
        self._rows = rows

    @property
    def masters(self) -> set[tuple[str, int]]:
        return {master for _, _, master in self._rows}

    def master_of(self, name: str) -> tuple[str, int] | None:
        """The (host, port) of the master serving a channel or key; None if unserved."""
        slot = key_slot(name.encode())
        i = bisect.bisect_right(self._starts, slot) - 1
        if i < 0 or self._rows[i][1] < slot:
            return None
        return self._rows[i][2]


class ClusterBackend(RedisBackend):
    """``RedisBackend`` over a Redis Cluster: SPUBLISH, and one SSUBSCRIBE
    connection per shard master, kept in step with the slot map."""

    publish_command = "SPUBLISH"
    sharded = True

    def __init__(self, target: RedisTarget) -> None:
        super().__init__(target)
        # Every channel wanted, and the shard connection each is subscribed on.
        self._wanted: set[str] = set()
        self._assigned: dict[str, SubscriberConnection] = {}
        self._slots: SlotMap | None = None
        self._slots_error: str | None = None
        self._topology: asyncio.Task[None] | None = None

    async def _start_subscribers(self) -> None:
        try:
            await self._refresh()
        except REDIS_ERRORS as exc:
            self._slots_error = f"no slot map: {exc}"
            logger.warning("Redis Cluster slot map unavailable: %s; retrying", exc)
            self._stale.set()
        self._topology = asyncio.create_task(self._follow(), name="threadline-redis-slots")

    async def _stop_subscribers(self) -> None:
        topology, self._topology = self._topology, None
        if topology is not None:
            topology.cancel()
            await asyncio.wait([topology])
        self._assigned.clear()
        await super()._stop_subscribers()

    def health(self) -> dict[str, Any]:
        report = super().health()
        report["backend"] = "redis-cluster"
        report["shards"] = len(self._shards)
        if self._slots is None:
            report["last_error"] = self._slots_error
        return report

    async def subscribe(self, channel: str) -> None:
        self._wanted.add(channel)
        link = self._owner(channel)
        if link is None:
            # No slot map yet: the first one assigns the channel and announces it.
            self._stale.set()
            return
        self._assigned[channel] = link
        await link.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._wanted.discard(channel)
        link = self._assigned.pop(channel, None)
        if link is not None:
            await link.unsubscribe(channel)

    def _owner(self, channel: str) -> SubscriberConnection | None:
        if self._slots is None:
            return None
        master = self._slots.master_of(self._namespace + channel)
        return None if master is None else self._shards.get(master)

    async def _follow(self) -> None:
        """Read the slot map again whenever a shard reports trouble."""
        loop = asyncio.get_running_loop()
        while True:
            await self._stale.wait()
            started = loop.time()
            self._stale.clear()
            try:
                await self._refresh()
            except REDIS_ERRORS as exc:
                logger.debug("Redis Cluster slot map not read: %s", exc)
                if self._slots is None:
                    self._slots_error = f"no slot map: {exc}"
                self._stale.set()
            except Exception:  # a bug must not stop the following
                logger.exception("Redis Cluster slot map refresh failed")
                self._stale.set()
            await asyncio.sleep(max(0.0, started + REFRESH_INTERVAL_SECONDS - loop.time()))

    async def _read_slots(self) -> SlotMap:
        """CLUSTER SLOTS from the configured node, else from a master we know.

        Asked on a connection of our own: redis-py's cluster client keeps no usable
        map after it met a cluster that was still forming."""
        failure: BaseException = ConnectionError("no node to ask")
        seeds = [self._target.url, *(self._node_url(*master) for master in self._shards)]
        for url in dict.fromkeys(seeds):
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    async with Redis.from_url(url, retry=Retry(NoBackoff(), 0)) as node:
                        ask: Any = node.execute_command  # untyped in types-redis
                        reply = await ask("CLUSTER SLOTS")
            except REDIS_ERRORS as exc:
                failure = exc
                continue
            if reply:
                return SlotMap(reply, str(urlsplit(url).hostname))
            failure = ConnectionError("the cluster serves no slot yet")
        raise failure

    async def _refresh(self) -> None:
        slots = await self._read_slots()
        self._slots, self._slots_error = slots, None
        for master in slots.masters - self._shards.keys():
            self._shards[master] = self._new_link(self._node_url(*master))
        await self._reassign()
        for master in self._shards.keys() - slots.masters:
            link = self._shards[master]
            if not any(owner is link for owner in self._assigned.values()):
                del self._shards[master]
                await link.stop()

    async def _reassign(self) -> None:
        """Move every wanted channel to its owner's connection; channels that moved
        (or had none) may have missed messages: their subscribers fill the gap."""
        moved: dict[SubscriberConnection, list[str]] = {}
        for channel in self._wanted:
            owner = self._owner(channel)
            current = self._assigned.get(channel)
            if owner is None:
                self._stale.set()  # a slot no master serves yet: ask again shortly
                continue
            if owner is current:
                continue
            if current is not None:
                current.channels.discard(channel)
            self._assigned[channel] = owner
            moved.setdefault(owner, []).append(channel)
        changed: set[str] = set()
        for link, channels in moved.items():
            await link.subscribe(*channels)
            # A connection still being made announces its channels itself once up.
            if link.ready.is_set():
                changed.update(channels)
        if moved:
            logger.info("Redis Cluster: %d channels moved shard", sum(map(len, moved.values())))
        if changed:
            await self._events.put(ConnectionRestored(channels=frozenset(changed)))

    def _node_url(self, host: str, port: int) -> str:
        """The URL of one node: the configured URL's scheme and credentials, its address."""
        parts = urlsplit(self._target.url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"
        return urlunsplit(parts._replace(netloc=netloc, path="/0"))
