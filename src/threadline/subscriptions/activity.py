"""threadActivity: typing and receipts of a thread, live only (never stored)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from strawberry import ID, Info

from threadline.realtime.broker import RECONNECTED
from threadline.realtime.channels import activity_channel, decode_activity
from threadline.schema.context import Context
from threadline.schema.events import ReceiptChanged, TypingChanged
from threadline.services.permissions import parse_id


async def stream(info: Info, thread_id: str) -> AsyncIterator[TypingChanged | ReceiptChanged]:
    ctx: Context = info.context
    tid = parse_id(thread_id, "Thread")
    await ctx.close()
    async with ctx.runtime.broker.subscribe(activity_channel(tid)) as subscriber:
        async for item in subscriber:
            if item is RECONNECTED:
                continue  # ephemeral: nothing to catch up on
            event = decode_activity(str(item))
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
