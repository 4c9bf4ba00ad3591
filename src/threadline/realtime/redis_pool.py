"""Where Redis is and how to talk to it: one server or a cluster, and bounded pools.

Blocking pools: redis-py's default one raises past 100 checked-out connections,
which fails most presence releases when 2000 sockets close at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from threadline.config import Settings

# What a command client raises when Redis cannot answer: the cluster client's own
# exception (no reachable node, a slot no master serves) is not a RedisError.
REDIS_ERRORS: Final = (RedisError, RedisClusterException, OSError, TimeoutError)

MAX_CONNECTIONS = 64
WAIT_SECONDS = 10.0
# A cluster client keeps a pool per node that refuses (rather than queues) past its
# size: room for a burst of lease releases on each node.
CLUSTER_MAX_CONNECTIONS_PER_NODE = 256
# For commands that must not hold a request or a socket's set-up while Redis is
# down: refused connections fail at once, a silent host within a second, and one
# immediate retry survives a pooled connection that a Redis restart closed.
CONNECT_TIMEOUT_SECONDS = 1.0
COMMAND_TIMEOUT_SECONDS = 5.0

# A RedisCluster has the same command methods as Redis (types-redis does not type
# them on the cluster client yet), so both go by this one name.
CommandClient = Redis


@dataclass(frozen=True)
class RedisTarget:
    """A deployment's Redis: its URL (any node, for a cluster), whether it is a
    cluster, and the prefix that keeps deployments sharing one Redis apart."""

    url: str
    cluster: bool = False
    prefix: str = ""


def settings_target(settings: Settings) -> RedisTarget | None:
    """The deployment's Redis from REDIS_URL, REDIS_CLUSTER and REDIS_PREFIX."""
    if not settings.redis_url:
        return None
    return RedisTarget(settings.redis_url, settings.redis_cluster, settings.redis_prefix)


def as_target(redis: str | RedisTarget | None) -> RedisTarget | None:
    """A target from a plain URL (one server, no prefix), or as given."""
    return RedisTarget(redis) if isinstance(redis, str) else redis


def redis_pool(url: str, **options: Any) -> BlockingConnectionPool[Any]:
    return BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=WAIT_SECONDS, **options
    )


def command_client(target: RedisTarget, **options: Any) -> CommandClient[Any]:
    """A client for commands (not pub/sub): pooled on one server, routed by slot on a cluster."""
    if target.cluster:
        cluster: RedisCluster[Any] = RedisCluster.from_url(
            target.url,
            max_connections=CLUSTER_MAX_CONNECTIONS_PER_NODE,
            # A master that is down leaves its slots unserved; the others still answer.
            require_full_coverage=False,
            # Keep asking the configured node: redis-py otherwise replaces it with the
            # nodes it last saw, none at all if it met a cluster still forming.
            **{"dynamic_startup_nodes": False, **options},
        )
        return cast("CommandClient[Any]", cluster)
    return Redis(connection_pool=redis_pool(target.url, **options))


def fail_fast(
    command_timeout: float = COMMAND_TIMEOUT_SECONDS,
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
) -> dict[str, Any]:
    """Client options that give up quickly when Redis is unreachable (redis-py's
    default retries with backoff would hold a request for seconds)."""
    return {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": command_timeout,
        "retry": Retry(NoBackoff(), 1),
    }


async def close_client(client: CommandClient[Any]) -> None:
    """Close a command client and the connections of its pool(s)."""
    if isinstance(client, RedisCluster):
        await client.aclose()
    else:
        await client.aclose(close_connection_pool=True)  # type: ignore[attr-defined]


class Backoff:
    """After a failed Redis call, skip Redis for a second (an outage costs one failed
    attempt per interval, not one per call), and say when to warn: once per outage,
    and every ``warn_every`` seconds while it lasts when that is set."""

    def __init__(self, *, warn_every: float | None = None) -> None:
        self.warn_every = warn_every
        self._skip_until = 0.0
        self._warned_at: float | None = None

    @property
    def down(self) -> bool:
        """Whether an outage was warned about and has not ended yet."""
        return self._warned_at is not None

    def skipping(self) -> bool:
        return time.monotonic() < self._skip_until

    def failed(self) -> bool:
        """Note a failure; True when the caller should warn now."""
        now = time.monotonic()
        self._skip_until = now + 1.0
        due = self._warned_at is None or (
            self.warn_every is not None and now - self._warned_at >= self.warn_every
        )
        if due:
            self._warned_at = now
        return due

    def answered(self) -> bool:
        """Note a success; True when it ends an outage (the caller says so)."""
        was_down = self.down
        self._warned_at = None
        self._skip_until = 0.0  # it answered: no reason to skip it any longer
        return was_down
