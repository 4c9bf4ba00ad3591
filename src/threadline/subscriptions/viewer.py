"""viewerEvents: what concerns the signed-in user across all of their threads.

It listens on the user's own channel (notifications, membership) and on the
channels of the user's threads, shared in-process with every other subscriber
of those threads: a message in a 200-member thread is one publish.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from strawberry import ID, Info

from threadline.realtime.broker import RECONNECTED
from threadline.realtime.channels import (
    decode_logged,
    decode_user_event,
    thread_channel,
    user_channel,
)
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

MAX_THREADS = 100  # a viewer follows the most recent threads live


async def stream(info: Info) -> AsyncIterator[ViewerEvent]:
    ctx: Context = info.context
    viewer = await ctx.viewer()
    runtime = ctx.runtime
    while True:
        async with runtime.db.reading() as session:
            page = await threads.threads_of(session, viewer, None, PageRequest(first=MAX_THREADS))
        thread_ids = {t.id for t in page.items}
        await ctx.close()
        channels = [user_channel(viewer.id), *(thread_channel(t) for t in thread_ids)]
        resubscribe = False
        async with runtime.broker.subscribe_many(channels) as subscriber:
            async for item in subscriber:
                if item is RECONNECTED:
                    continue
                raw = str(item)
                await ctx.renew()
                if raw.startswith('{"u"'):
                    event = decode_user_event(raw)
                    if event.kind == "notification":
                        yielded = await _notification(ctx, uuid.UUID(event.data["notification_id"]))
                        if yielded is not None:
                            yield yielded
                    else:
                        yield await _membership(ctx, event.data)
                        resubscribe = True
                        break
                else:
                    logged = decode_logged(raw)
                    if logged.thread_id in thread_ids:
                        session = await ctx.session()
                        thread = await threads.threads_by_ids(session, [logged.thread_id])
                        if logged.thread_id in thread:
                            yield ThreadActivityForViewer(
                                thread=ThreadType.of(thread[logged.thread_id])
                            )
        if not resubscribe:
            return


async def _notification(ctx: Context, notification_id: uuid.UUID) -> NotificationCreated | None:
    viewer = await ctx.viewer()
    row = await notifications.get_notification(await ctx.session(), viewer, notification_id)
    return NotificationCreated(notification=NotificationType.of(row)) if row else None


async def _membership(ctx: Context, data: dict[str, object]) -> ThreadMembershipChanged:
    thread_id = uuid.UUID(str(data["thread_id"]))
    role = ThreadRole(str(data["role"])) if data.get("role") else None
    found = await threads.threads_by_ids(await ctx.session(), [thread_id])
    row = found.get(thread_id)
    visible = row is not None and row.deleted_at is None and role is not None
    return ThreadMembershipChanged(
        thread=ThreadType.of(row) if visible and row is not None else None,
        thread_id=ID(str(thread_id)),
        role=role,
    )
