"""Prometheus metrics: what operators graph and alert on, served at /metrics."""

from __future__ import annotations

import functools
import gc
import time

from prometheus_client import Counter, Gauge, Histogram

TRANSACTION_SECONDS = Histogram(
    "threadline_transaction_seconds",
    "Duration of named database units of work.",
    ["name"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


@functools.cache
def transaction_seconds(name: str) -> Histogram:
    """TRANSACTION_SECONDS's child for ``name``, bound once (``.labels()`` takes a lock)."""
    return TRANSACTION_SECONDS.labels(name)


BATCH_ITEMS = Histogram(
    "threadline_batch_items",
    "Items stored or sent together by one round trip (see threadline.batching).",
    ["name"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
GRAPHQL_OPERATIONS = Counter(
    "threadline_graphql_operations_total",
    "GraphQL operations executed, by kind (query, mutation, subscription) and by the "
    "engine that answered (direct: the fast path; strawberry: strawberry's own).",
    ["kind", "engine"],
)
# Bound once: a label lookup per request costs a lock and a dictionary of tuples.
OPERATIONS_BY_KIND = {
    (kind, engine): GRAPHQL_OPERATIONS.labels(kind, engine)
    for kind in ("query", "mutation", "subscription")
    for engine in ("direct", "strawberry")
}
GRAPHQL_ERRORS = Counter("threadline_graphql_errors_total", "GraphQL errors by code.", ["code"])
WEBSOCKET_CONNECTIONS = Gauge("threadline_websocket_connections", "Open WebSocket connections.")
ACTIVE_SUBSCRIPTIONS = Gauge("threadline_subscriptions", "Active GraphQL subscriptions.")
EVENTS_PUBLISHED = Counter("threadline_events_published_total", "Events published to the broker.")
EVENTS_DELIVERED = Counter("threadline_events_delivered_total", "Event frames sent to subscribers.")
BROKER_RECONNECTS = Counter("threadline_broker_reconnects_total", "Broker reconnections to Redis.")
WEBHOOKS = Counter("threadline_webhooks_total", "Clerk webhooks by outcome.", ["outcome"])
QUERY_READS = Counter(
    "threadline_query_reads_total",
    "Query operations that read content, with DATABASE_READ_URL set, by where: replica, or "
    "primary (a recent writer, a bad token, or a replica resting after a failure).",
    ["database"],
)
PRESENCE_UNAVAILABLE = Counter(
    "threadline_presence_unavailable_total",
    "Presence reads answered OFFLINE because Redis failed.",
)
PREVIEW_RENDERS = Counter(
    "threadline_preview_renders_total",
    "Image preview renders: made, none (small, animated or undecodable), busy (waited out).",
    ["outcome"],
)
HTTP_REQUESTS_CUT_OFF = Counter(
    "threadline_http_requests_cut_off_total",
    "Requests answered before they were read in full: too large (413, 431) or too slow (408).",
    ["status"],
)
GC_PAUSE_SECONDS = Histogram(
    "threadline_gc_pause_seconds",
    "Pauses of Python's cyclic garbage collector, by generation: every coroutine of the "
    "process waits them out, so they bound send-to-receive latency from below.",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
_GC_PAUSES = [GC_PAUSE_SECONDS.labels(str(generation)) for generation in range(3)]
_gc_started = 0.0


def _time_gc(phase: str, info: dict[str, int]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
    else:
        _GC_PAUSES[info["generation"]].observe(time.perf_counter() - _gc_started)


def watch_gc_pauses() -> None:
    """Time each collection into GC_PAUSE_SECONDS (once per process)."""
    if _time_gc not in gc.callbacks:
        gc.callbacks.append(_time_gc)
