"""threadEvents: replay from the log after ``afterSeq``, then live, in seq order, gap-free.

The stream subscribes to the thread's channel before reading the log, so that
nothing committed in between is missed; a live event that arrives early (a gap)
or a broker reconnect triggers a fill from the log. Duplicates are dropped by
seq. A participant removed from the thread gets that event, then the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from strawberry import Info

from threadline.errors import BadInput, Conflict
from threadline.realtime.broker import RECONNECTED, SubscriberOverflow
from threadline.realtime.channels import decode_logged, thread_channel
from threadline.schema.context import Context
from threadline.schema.events import ThreadEventType
from threadline.services.events import EventKind, LoggedEvent, events_after
from threadline.services.permissions import parse_id
from threadline.services.threads import get_thread
from threadline.subscriptions.rendering import ends_subscription, render

REPLAY_BATCH = 500


async def stream(
    info: Info, thread_id: str, after_seq: int | None
) -> AsyncIterator[ThreadEventType]:
    ctx: Context = info.context
    tid = parse_id(thread_id, "Thread")
    access = ctx.access[tid]
    viewer = await ctx.viewer()
    runtime = ctx.runtime
    if after_seq is not None and after_seq < 0:
        raise BadInput("`afterSeq` must be 0 or more")
    last = access.thread.last_seq if after_seq is None else after_seq
    await ctx.close()  # no session held open between events

    async def from_log() -> AsyncIterator[LoggedEvent]:
        nonlocal last
        while True:
            async with runtime.db.reading() as session:
                batch = await events_after(session, tid, last, REPLAY_BATCH)
            for event in batch:
                yield event
            if len(batch) < REPLAY_BATCH:
                return

    async def emit(event: LoggedEvent) -> ThreadEventType:
        nonlocal last
        last = event.seq
        await ctx.renew()
        runtime.deliveries.delivered(viewer.id, tid, event.seq)
        thread = None
        if event.kind is EventKind.THREAD_UPDATED:
            async with runtime.db.reading() as session:
                thread = await get_thread(session, tid)
        return render(event, thread)

    async with runtime.broker.subscribe(thread_channel(tid)) as subscriber:
        async for event in from_log():
            yield await emit(event)
            if ends_subscription(event, viewer.id):
                return
        try:
            async for item in subscriber:
                if item is RECONNECTED:
                    pending = [e async for e in from_log()]
                else:
                    event = decode_logged(str(item))
                    if event.seq <= last:
                        continue
                    pending = [event] if event.seq == last + 1 else [e async for e in from_log()]
                for event in pending:
                    if event.seq <= last:
                        continue
                    yield await emit(event)
                    if ends_subscription(event, viewer.id):
                        return
        except SubscriberOverflow:
            raise Conflict(
                "This subscription fell too far behind: subscribe again with afterSeq",
                afterSeq=last,
            ) from None
