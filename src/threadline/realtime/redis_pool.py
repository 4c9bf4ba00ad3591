"""Connection pools for Redis commands (not pub/sub): bounded, and waiting when full.

redis-py's default pool raises "Too many connections" past 100 checked-out
connections; when 2000 sockets close at once, each releasing its presence
lease, that fails most of the releases. A blocking pool queues them instead.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

MAX_CONNECTIONS = 64
WAIT_SECONDS = 10.0
# For commands that must not hold a request or a socket's set-up while Redis is
# down: refused connections fail at once, a silent host within a second, and one
# immediate retry survives a pooled connection that a Redis restart closed.
CONNECT_TIMEOUT_SECONDS = 1.0
COMMAND_TIMEOUT_SECONDS = 5.0


def redis_pool(url: str, **options: Any) -> BlockingConnectionPool[Any]:
    return BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=WAIT_SECONDS, **options
    )


def fail_fast_pool(url: str) -> BlockingConnectionPool[Any]:
    """A command pool that gives up quickly when Redis is unreachable."""
    return redis_pool(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        socket_timeout=COMMAND_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 1),
    )
