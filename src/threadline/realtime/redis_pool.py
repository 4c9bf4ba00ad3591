"""Connection pools for Redis commands (not pub/sub): bounded, and waiting when full.

redis-py's default pool raises "Too many connections" past 100 checked-out
connections; when 2000 sockets close at once, each releasing its presence
lease, that fails most of the releases. A blocking pool queues them instead.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool

MAX_CONNECTIONS = 64
WAIT_SECONDS = 10.0


def redis_pool(url: str, **options: Any) -> BlockingConnectionPool[Any]:
    return BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=WAIT_SECONDS, **options
    )
