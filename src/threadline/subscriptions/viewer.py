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
from threadline.realtime.broker import RECONNECTED, Reconnected, Subscriber
from threadline.realtime.channels import decode_user_event, thread_channel, user_channel
from threadline.runtime import Runtime
from threadline.schema.context import Context
from threadline.schema.enums import ThreadRole
from threadline.schema.events import (
    NotificationCreated,
    ThreadActivityForViewer,
    ThreadMembershipChanged,
    ViewerEvent,
    ViewerResync,
    ViewerResyncReason,
)
from threadline.schema.types import NotificationType, ThreadType
from threadline.services import notifications, threads
from threadline.services.pagination import PageRequest

MAX_THREADS = 100  # a viewer follows their most recently active threads live
QUEUE_LIMIT = 1000


class _Inbox(asyncio.Queue[Any]):
    """The one bounded queue the stream reads. Each subscription gets its own
    ``RECONNECTED`` marker; one waiting to be read stands for the others."""

    marker_waiting = False


async def _pump(subscriber: Subscriber, queue: _Inbox) -> None:
    try:
        async for item in subscriber:
            _hand_on(item, queue)
    except Exception as exc:  # handed to the reader, which raises it
        queue.put_nowait(exc)


def _hand_on(item: str | Reconnected, queue: _Inbox) -> None:
    if queue.qsize() >= QUEUE_LIMIT:
        raise Conflict("viewerEvents fell too far behind: subscribe again")
    if item is RECONNECTED:
        if queue.marker_waiting:
            return
        queue.marker_waiting = True
    queue.put_nowait(item)


class _ThreadWatch:
    """The current subscription to the viewer's thread channels, swappable."""

    def __init__(self, runtime: Runtime, queue: _Inbox) -> None:
        self.runtime = runtime
        self.queue = queue
        self.thread_ids: set[uuid.UUID] = set()
        self._cm: AbstractAsyncContextManager[Subscriber] | None = None
        self._subscriber: Subscriber | None = None
        self._task: asyncio.Task[None] | None = None

    async def follow(self, viewer: Any) -> None:
        async with self.runtime.db.reading() as session:
            page = await threads.threads_of(session, viewer, None, PageRequest(first=MAX_THREADS))
        old = self._cm, self._task, self._subscriber
        self._cm = self._task = self._subscriber = None
        # The new subscription is live before the old one goes: a thread in both
        # misses nothing meanwhile (an event seen twice only renders the thread twice).
        self.thread_ids = {a.thread.id for a in page.items}
        try:
            if self.thread_ids:
                cm = self.runtime.broker.subscribe_many(
                    [thread_channel(t) for t in self.thread_ids]
                )
                subscriber = await cm.__aenter__()
                self._cm, self._subscriber = cm, subscriber
                self._task = asyncio.create_task(_pump(subscriber, self.queue))
        finally:
            await self._stop(*old)

    async def stop(self) -> None:
        old = self._cm, self._task
        self._cm = self._task = self._subscriber = None
        await self._stop(*old)

    async def _stop(
        self,
        cm: AbstractAsyncContextManager[Subscriber] | None,
        task: asyncio.Task[None] | None,
        subscriber: Subscriber | None = None,
    ) -> None:
        try:
            if task is not None:
                task.cancel()
                # Not suppress(CancelledError): that would also swallow a cancellation of
                # the caller arriving meanwhile, and the stream would go on.
                await asyncio.wait([task])
            if subscriber is not None:
                # Heard before the new subscription joined, not handed on by the pump.
                try:
                    for item in subscriber.take_pending():
                        _hand_on(item, self.queue)
                except Conflict as exc:
                    self.queue.put_nowait(exc)
        finally:
            # Even so cancelled: nothing else holds this subscription any more.
            if cm is not None:
                await cm.__aexit__(None, None, None)


async def stream(info: Info, *, resync: bool = False) -> AsyncIterator[ViewerEvent | ViewerResync]:
    """With ``resync``, a ViewerResync first, once both subscriptions are live (a list
    fetched after it misses nothing), and again after each reconnection of the broker."""
    ctx: Context = info.context
    viewer = await ctx.viewer()
    runtime = ctx.runtime
    queue = _Inbox()
    watch = _ThreadWatch(runtime, queue)
    await ctx.close()
    async with runtime.broker.subscribe(user_channel(viewer.id)) as mine:
        own = asyncio.create_task(_pump(mine, queue))
        try:
            await watch.follow(viewer)
            if resync:
                yield ViewerResync(reason=ViewerResyncReason.STARTED)
            while True:
                item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                if item is RECONNECTED:
                    queue.marker_waiting = False
                    if resync:
                        yield ViewerResync(reason=ViewerResyncReason.RECONNECTED)
                    continue
                raw = str(item)
                await ctx.renew()
                if raw.startswith('{"u"'):
                    event = decode_user_event(raw)
                    if event.kind == "notification":
                        nid = uuid.UUID(event.data["notification_id"])
                        row = await notifications.get_notification(await ctx.session(), viewer, nid)
                        if row is not None:
                            yield NotificationCreated(notification=NotificationType.of(row))
                    elif event.kind == "read":  # read elsewhere: the new unreadCount
                        thread = await ctx.loaders.thread.load(uuid.UUID(event.data["thread_id"]))
                        if thread is not None:
                            yield ThreadActivityForViewer(thread=ThreadType.of(thread))
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
