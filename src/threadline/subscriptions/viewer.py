"""viewerEvents: what concerns the signed-in user across all of their threads.

It listens on the user's own channel for its whole life, and on the channels of
the user's threads (shared in-process: a message in a 200-member thread is one
publish). A membership change swaps only the latter, so nothing addressed to the
user is lost meanwhile.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

from strawberry import ID, Info

from threadline.errors import Conflict
from threadline.realtime.broker import RECONNECTED, Subscriber
from threadline.realtime.channels import decode_user_event, thread_channel, user_channel
from threadline.runtime import Runtime
from threadline.schema.context import Context
from threadline.schema.enums import ThreadRole
from threadline.schema.events import (
    NotificationCreated,
    ThreadActivityForViewer,
    ThreadMembershipChanged,
    ViewerEvent,
)
from threadline.schema.types import NotificationType, ThreadType
from threadline.services import notifications, threads
from threadline.services.pagination import PageRequest

MAX_THREADS = 100  # a viewer follows their most recently active threads live
QUEUE_LIMIT = 1000


async def _pump(subscriber: Subscriber, queue: asyncio.Queue[Any]) -> None:
    """Into the one bounded queue the stream reads."""
    try:
        async for item in subscriber:
            if queue.qsize() >= QUEUE_LIMIT:
                raise Conflict("viewerEvents fell too far behind: subscribe again")
            queue.put_nowait(item)
    except Exception as exc:  # handed to the reader, which raises it
        queue.put_nowait(exc)


class _ThreadWatch:
    """The current subscription to the viewer's thread channels, swappable."""

    def __init__(self, runtime: Runtime, queue: asyncio.Queue[Any]) -> None:
        self.runtime = runtime
        self.queue = queue
        self.thread_ids: set[uuid.UUID] = set()
        self._cm: AbstractAsyncContextManager[Subscriber] | None = None
        self._task: asyncio.Task[None] | None = None

    async def follow(self, viewer: Any) -> None:
        await self.stop()
        async with self.runtime.db.reading() as session:
            page = await threads.threads_of(session, viewer, None, PageRequest(first=MAX_THREADS))
        self.thread_ids = {a.thread.id for a in page.items}
        if not self.thread_ids:
            return
        self._cm = self.runtime.broker.subscribe_many([thread_channel(t) for t in self.thread_ids])
        subscriber = await self._cm.__aenter__()
        self._task = asyncio.create_task(_pump(subscriber, self.queue))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # Not suppress(CancelledError): that would also swallow a cancellation of
            # the caller arriving meanwhile, and the stream would go on.
            await asyncio.wait([self._task])
            self._task = None
        if self._cm is not None:
            await self._cm.__aexit__(None, None, None)
            self._cm = None


async def stream(info: Info) -> AsyncIterator[ViewerEvent]:
    ctx: Context = info.context
    viewer = await ctx.viewer()
    runtime = ctx.runtime
    queue: asyncio.Queue[Any] = asyncio.Queue()
    watch = _ThreadWatch(runtime, queue)
    await ctx.close()
    async with runtime.broker.subscribe(user_channel(viewer.id)) as mine:
        own = asyncio.create_task(_pump(mine, queue))
        try:
            await watch.follow(viewer)
            while True:
                item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                if item is RECONNECTED:
                    continue
                raw = str(item)
                await ctx.renew()
                if raw.startswith('{"u"'):
                    event = decode_user_event(raw)
                    if event.kind == "notification":
                        created = await _notification(ctx, uuid.UUID(event.data["notification_id"]))
                        if created is not None:
                            yield created
                    else:
                        await watch.follow(viewer)
                        yield await _membership(ctx, event.data)
                    continue
                logged = runtime.feed.decoded(raw)
                if logged.thread_id not in watch.thread_ids:
                    continue
                # Checked as it is read: an event may come in before the membership
                # change that stops the watch (they travel on different channels).
                thread = await ctx.loaders.thread.load(logged.thread_id)
                if thread is not None:
                    yield ThreadActivityForViewer(thread=ThreadType.of(thread))
        finally:
            own.cancel()
            await asyncio.wait([own])
            await watch.stop()


async def _notification(ctx: Context, notification_id: uuid.UUID) -> NotificationCreated | None:
    viewer = await ctx.viewer()
    row = await notifications.get_notification(await ctx.session(), viewer, notification_id)
    return NotificationCreated(notification=NotificationType.of(row)) if row else None


async def _membership(ctx: Context, data: dict[str, object]) -> ThreadMembershipChanged:
    thread_id = uuid.UUID(str(data["thread_id"]))
    role = ThreadRole(str(data["role"])) if data.get("role") else None
    # Whether the thread shows is decided now, not by the (maybe stale) event.
    row = await ctx.loaders.thread.load(thread_id) if role is not None else None
    return ThreadMembershipChanged(
        thread=ThreadType.of(row) if row is not None else None,
        thread_id=ID(str(thread_id)),
        role=role,
    )
