"""threadEvents: replay from the log after ``afterSeq``, then live, in seq order, gap-free.

A subscription whose selection reads nothing of the viewer joins the process's
fan-out (``subscriptions.live``); any other is executed per event here. A
participant removed from the thread gets that event, then the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from functools import partial

from strawberry import Info

from threadline.errors import BadInput
from threadline.metrics import EVENTS_DELIVERED
from threadline.schema.context import Context
from threadline.schema.events import ThreadEventType
from threadline.services.permissions import parse_id
from threadline.subscriptions.broadcast import BroadcastFrames, viewer_independent
from threadline.subscriptions.live import operation_root
from threadline.subscriptions.rendering import rendered


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
    # It is the last seq the client saw. One past the thread's last would skip, as if
    # seen, the events to come: among them the one that ends this subscription.
    if after_seq is not None and after_seq > access.thread.last_seq:
        raise BadInput("`afterSeq` is past the thread's last event", lastSeq=access.thread.last_seq)
    start = access.thread.last_seq if after_seq is None else after_seq
    await ctx.close()  # no session held open between events
    root = operation_root(info)
    if root is not None and viewer_independent(info):
        # The fan-out renders and writes this operation's frames from now on: the
        # subscription detaches from this stream, which ends here without a frame.
        frames = BroadcastFrames(info, root.frames, runtime)
        member = runtime.fanout.join(
            frames, tid, viewer.id, start, access.thread.last_seq, root.sink
        )
        root.sink.detached = member.run
        return
    # aclosing: the broker subscription ends with the stream, also when a send fails.
    async with aclosing(runtime.feed.ordered(tid, viewer.id, start)) as events:
        async for event in events:
            await ctx.renew()
            # Checked once the frame's fields are read: they show the thread as it is then.
            ctx.after_render = partial(runtime.feed.check, event, viewer.id)
            yield await rendered(runtime, event)
            # Both subprotocols ask for the next result only once this one's frame is
            # written; a send that failed closes the stream here instead (ws_protocol).
            runtime.deliveries.delivered(viewer.id, tid, event.seq)
            EVENTS_DELIVERED.inc()
