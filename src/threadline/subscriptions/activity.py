"""threadActivity: typing and receipts of a thread, live only (never stored).

It also hears the thread's logged events: on one that ends threadEvents (the viewer
removed, the thread deleted), and after a broker reconnect that may have lost one,
the viewer's access is checked again and the stream ends once it is gone.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from strawberry import ID, Info

from threadline.errors import NotFound
from threadline.models import User
from threadline.realtime.broker import RECONNECTED
from threadline.realtime.channels import (
    activity_channel,
    decode_activity,
    is_logged_event,
    thread_channel,
)
from threadline.runtime import Runtime
from threadline.schema.context import Context
from threadline.schema.events import ReceiptChanged, TypingChanged
from threadline.services.events import ends_subscription
from threadline.services.permissions import access_thread, parse_id


async def _may_follow(runtime: Runtime, viewer: User, thread_id: uuid.UUID) -> bool:
    async with runtime.db.reading() as session:
        try:
            await access_thread(session, viewer, thread_id)
        except NotFound:
            return False
    return True


async def stream(info: Info, thread_id: str) -> AsyncIterator[TypingChanged | ReceiptChanged]:
    ctx: Context = info.context
    tid = parse_id(thread_id, "Thread")
    viewer = await ctx.viewer()
    runtime = ctx.runtime
    await ctx.close()
    channels = (activity_channel(tid), thread_channel(tid))
    async with runtime.broker.subscribe_many(channels) as subscriber:
        # A removal between @threadRole's check and the subscription was not heard.
        if not await _may_follow(runtime, viewer, tid):
            return
        async for item in subscriber:
            if item is RECONNECTED:
                # Ephemeral: nothing to catch up on, except a removal meanwhile.
                if not await _may_follow(runtime, viewer, tid):
                    return
                continue
            raw = str(item)
            if is_logged_event(raw):
                logged = runtime.feed.decoded(raw)
                if ends_subscription(logged, viewer.id) and not await _may_follow(
                    runtime, viewer, tid
                ):
                    return
                continue
            event = decode_activity(raw)
            await ctx.renew()
            if event.kind == "typing":
                yield TypingChanged(
                    user_id=event.user_id,
                    thread_id=ID(str(event.thread_id)),
                    is_typing=bool(event.data.get("is_typing")),
                )
            else:
                yield ReceiptChanged(
                    user_id=event.user_id,
                    thread_id=ID(str(event.thread_id)),
                    last_read_seq=int(event.data["last_read_seq"]),
                    last_delivered_seq=int(event.data["last_delivered_seq"]),
                )
