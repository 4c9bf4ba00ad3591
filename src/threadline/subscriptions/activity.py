"""threadActivity: typing and receipts of a thread, live only (never stored).

It also hears the thread's logged events: on one that ends threadEvents (the viewer
removed, the thread deleted), before showing anything while their seqs have a gap (an
event whose publish was lost may be that one) and after a broker reconnect that may
have lost one, the viewer's access is checked again and the stream ends once it is gone.
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
from threadline.services.events import ends_subscription, who_stops
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
        early: set[int] = set()  # seqs heard before one below them
        # Each user's markers as shown, and the seq of their removal heard: receipts
        # from several writers (processes) may arrive out of order, and a marker only
        # moves forward.
        shown: dict[uuid.UUID, tuple[int, int, int]] = {}
        async for item in subscriber:
            if item is RECONNECTED:
                # Ephemeral: nothing to catch up on, except a removal meanwhile.
                if (heard := await _followed_to(runtime, viewer, tid)) is None:
                    return
                early.clear()
                continue
            raw = str(item)
            if is_logged_event(raw):
                logged = runtime.feed.decoded(raw)
                # Removed: added again, they start from 0 (a role change keeps the markers).
                # Once per removal: its second copy (on a Cluster, another shard's) may be late.
                removed = who_stops(logged)
                if isinstance(removed, uuid.UUID) and logged.seq > shown.get(removed, (0, 0, 0))[2]:
                    shown[removed] = (0, 0, logged.seq)
                if logged.seq <= heard or logged.seq in early:
                    continue  # heard already: a removal comes on both channels
                if (
                    ends_subscription(logged, viewer.id)
                    and await _followed_to(runtime, viewer, tid) is None
                ):
                    return
                early.add(logged.seq)
                while heard + 1 in early:
                    heard += 1
                    early.remove(heard)
                continue
            event = decode_activity(raw)
            # The activity names a logged seq its sender knew of: one not heard yet is
            # a gap too (a removal whose publish was lost, with nothing logged since).
            if early or int(event.data.get("seq", 0)) > heard:
                # A gap still open when there is something to show: the event not
                # heard (its publish was lost, or it is still on its way from another
                # process) may be this viewer's removal. One that is only late closes
                # the gap first and costs no read.
                if (checked := await _followed_to(runtime, viewer, tid)) is None:
                    return
                heard = max(heard, checked, *early)
                early.clear()
            await ctx.renew()
            if event.kind == "typing":
                yield TypingChanged(
                    user_id=event.user_id,
                    thread_id=ID(str(event.thread_id)),
                    is_typing=bool(event.data.get("is_typing")),
                )
            else:
                before = shown.get(event.user_id, (0, 0, 0))
                if int(event.data["seq"]) < before[2]:
                    continue  # made before their removal, late: of markers since reset
                read = max(before[0], int(event.data["last_read_seq"]))
                delivered = max(before[1], int(event.data["last_delivered_seq"]))
                if (read, delivered) == before[:2]:
                    continue  # an older receipt, late: nothing new
                shown[event.user_id] = (read, delivered, before[2])
                yield ReceiptChanged(
                    user_id=event.user_id,
                    thread_id=ID(str(event.thread_id)),
                    last_read_seq=read,
                    last_delivered_seq=delivered,
                )
