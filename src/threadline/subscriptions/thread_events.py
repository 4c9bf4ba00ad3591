"""threadEvents: replay from the log after ``afterSeq``, then live, in seq order, gap-free.

The stream subscribes to the thread's channel before reading the log, so that
nothing committed in between is missed; a live event that arrives early (a gap)
or a broker reconnect triggers a fill from the log. Duplicates are dropped by
seq. A participant removed from the thread gets that event, then the end.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

from strawberry import Info

from threadline.errors import BadInput, Conflict
from threadline.metrics import EVENTS_DELIVERED
from threadline.realtime.broker import RECONNECTED, SubscriberOverflow
from threadline.realtime.channels import thread_channel
from threadline.runtime import Runtime
from threadline.schema.context import Context
from threadline.schema.events import ThreadEventType
from threadline.services.events import EventKind, LoggedEvent, events_after
from threadline.services.permissions import parse_id
from threadline.services.threads import get_thread
from threadline.subscriptions.broadcast import CURRENT_SINK, OperationTemplate, viewer_independent
from threadline.subscriptions.rendering import ends_subscription, render

REPLAY_BATCH = 500
log = logging.getLogger(__name__)


async def from_log(runtime: Runtime, thread_id: uuid.UUID, after: int) -> list[LoggedEvent]:
    async with runtime.db.reading() as session:
        return await events_after(session, thread_id, after, REPLAY_BATCH)


async def ordered_events(
    runtime: Runtime,
    thread_id: uuid.UUID,
    viewer_id: uuid.UUID,
    last: int,
    *,
    refill_when_behind: bool = False,
) -> AsyncGenerator[LoggedEvent, None]:
    """Every event after ``last`` in seq order, replayed then live, never twice.

    A reader that falls more than the broker's queue behind gets CONFLICT with the
    ``afterSeq`` to resume from; with ``refill_when_behind`` it subscribes again
    and catches up from the log instead (the fan-out's pump, which must not cut
    off every subscriber of a thread because it was briefly slow).
    """
    while True:
        async with runtime.broker.subscribe(thread_channel(thread_id)) as subscriber:

            async def fill() -> AsyncIterator[LoggedEvent]:
                nonlocal last
                while True:
                    batch = await from_log(runtime, thread_id, last)
                    for event in batch:
                        last = event.seq
                        yield event
                    if len(batch) < REPLAY_BATCH:
                        return

            async for event in fill():
                yield event
                if ends_subscription(event, viewer_id):
                    return
            try:
                async for item in subscriber:
                    if item is RECONNECTED:
                        source = fill()
                    else:
                        event = runtime.decoded(str(item))
                        if event.seq <= last:
                            continue
                        if event.seq != last + 1:
                            source = fill()
                        else:
                            last = event.seq
                            yield event
                            if ends_subscription(event, viewer_id):
                                return
                            continue
                    async for filled in source:
                        yield filled
                        if ends_subscription(filled, viewer_id):
                            return
                return  # the broker subscription ended
            except SubscriberOverflow:
                if not refill_when_behind:
                    raise Conflict(
                        "This subscription fell too far behind: subscribe again with afterSeq",
                        afterSeq=last,
                    ) from None
        log.info("thread %s: reader fell behind; catching up from the log", thread_id)


async def rendered(runtime: Runtime, event: LoggedEvent) -> ThreadEventType:
    thread = None
    if event.kind is EventKind.THREAD_UPDATED:
        async with runtime.db.reading() as session:
            thread = await get_thread(session, event.thread_id)
    return render(event, thread)


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
    start = access.thread.last_seq if after_seq is None else after_seq
    await ctx.close()  # no session held open between events
    sink = CURRENT_SINK.get()
    if sink is not None and viewer_independent(info):
        # Broadcast: the process's fan-out renders once per event for all local
        # subscribers of this operation and writes the frames to the sockets. The
        # subscription detaches from this stream, which ends here without a frame.
        template = OperationTemplate(info)
        member = runtime.fanout.join(template, tid, viewer.id, start, access.thread.last_seq, sink)
        sink.detach(member.run)
        return
    # aclosing: the broker subscription ends with the stream, also when a send fails.
    async with aclosing(ordered_events(runtime, tid, viewer.id, start)) as events:
        async for event in events:
            await ctx.renew()
            runtime.deliveries.delivered(viewer.id, tid, event.seq)
            EVENTS_DELIVERED.inc()
            yield await rendered(runtime, event)
