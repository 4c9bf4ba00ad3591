"""threadActivity: typing and receipts of a thread, live only (never stored).

It also hears the thread's logged events: on one that ends threadEvents (the viewer
removed, the thread deleted), after a gap in their seqs (an event whose publish was
lost, which may be that one) and after a broker reconnect that may have lost one,
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


async def _followed_to(runtime: Runtime, viewer: User, thread_id: uuid.UUID) -> int | None:
    """The thread's last seq if the viewer may follow it now; None once they may not."""
    async with runtime.db.reading() as session:
        try:
            access = await access_thread(session, viewer, thread_id)
        except NotFound:
            return None
    return access.thread.last_seq


async def stream(info: Info, thread_id: str) -> AsyncIterator[TypingChanged | ReceiptChanged]:
    ctx: Context = info.context
    tid = parse_id(thread_id, "Thread")
    viewer = await ctx.viewer()
    runtime = ctx.runtime
    await ctx.close()
    channels = (activity_channel(tid), thread_channel(tid))
    async with runtime.broker.subscribe_many(channels) as subscriber:
        # A removal between @threadRole's check and the subscription was not heard.
        # Every event after ``heard`` is heard from here on, unless its publish is lost.
        heard = await _followed_to(runtime, viewer, tid)
        if heard is None:
            return
        async for item in subscriber:
            if item is RECONNECTED:
                # Ephemeral: nothing to catch up on, except a removal meanwhile.
                if (heard := await _followed_to(runtime, viewer, tid)) is None:
                    return
                continue
            raw = str(item)
            if is_logged_event(raw):
                logged = runtime.feed.decoded(raw)
                # A gap: an event not heard (its publish failed, or it is still on
                # its way from another process) may be this viewer's removal.
                if ends_subscription(logged, viewer.id) or logged.seq > heard + 1:
                    checked = await _followed_to(runtime, viewer, tid)
                    if checked is None:
                        return
                    heard = max(heard, checked)
                heard = max(heard, logged.seq)
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
