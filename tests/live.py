"""Readiness of live subscriptions, read from the server's own state instead of a sleep.

A subscription without ``afterSeq`` hears only what is published after it has
registered; a test that sends right after subscribing must wait for that moment.
These conditions go to ``GraphQLWS.until``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.conftest import Server
from tests.wsclient import GraphQLWS
from threadline.realtime.channels import activity_channel


def new_listener(server: Server, channel: str) -> Callable[[], bool]:
    """True once a subscriber that was not there at this call listens on ``channel``
    (take it before subscribing): later publishes on the channel reach it."""
    broker = server.runtime.broker
    before = broker.listeners(channel)

    def ready() -> bool:
        # A subscriber of several channels joins them one by one: it counts once it
        # listens on all of them.
        return any(
            all(subscriber in broker.listeners(name) for name in subscriber.channels)
            for subscriber in broker.listeners(channel) - before
        )

    return ready


def fanout_members(server: Server, count: int) -> Callable[[], bool]:
    """True once the process's threadEvents fan-out groups have ``count`` members: each
    has read its starting seq, so every later event reaches it."""
    return lambda: int(server.runtime.fanout.stats()["members"]) >= count


def listening(server: Server, channel: str) -> Callable[[], bool]:
    """True once anyone in the server listens on ``channel`` (one nobody listened on)."""
    broker = server.runtime.broker
    return lambda: bool(broker.listeners(channel))


async def until(ready: Callable[[], bool], timeout: float = 10) -> None:
    """Poll ``ready`` (for a client that reads nothing meanwhile); fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not ready():
        assert loop.time() < deadline, f"not ready within {timeout}s"
        await asyncio.sleep(0.01)


async def watch_activity(server: Server, ws: GraphQLWS, query: str, thread_id: str) -> None:
    """Subscribe ``ws`` to the thread's ``threadActivity`` (``query`` takes ``$t``), and
    return once its subscriber listens: typing and receipts from then on reach it."""
    ready = new_listener(server, activity_channel(thread_id))
    await ws.subscribe(query, {"t": thread_id})
    await ws.until(ready)
