"""The Subscription root type: each field delegates to its own module."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

import strawberry
from strawberry import ID, Info

from threadline.auth.directives import authenticated, thread_role
from threadline.errors import RateLimited
from threadline.metrics import ACTIVE_SUBSCRIPTIONS
from threadline.schema.enums import ThreadRole
from threadline.schema.events import PresenceChanged, ThreadActivity, ThreadEventType, ViewerEvent
from threadline.subscriptions import activity, presence, thread_events, viewer
from threadline.subscriptions.broadcast import CURRENT_SINK

T = TypeVar("T")


async def _counted(info: Info, source: AsyncIterator[T]) -> AsyncIterator[T]:
    """Hold one of the connection's subscription slots while the stream runs."""
    state = info.context.state
    if state is not None:
        ceiling = info.context.runtime.settings.max_subscriptions_per_connection
        if state.subscriptions >= ceiling:
            raise RateLimited(
                f"At most {ceiling} subscriptions per connection",
                retry_after=1,
            )
        state.subscriptions += 1
    ACTIVE_SUBSCRIPTIONS.inc()

    def release() -> None:
        ACTIVE_SUBSCRIPTIONS.dec()
        if state is not None:
            state.subscriptions -= 1

    handed_over = False
    try:
        async for item in source:
            yield item
        sink = CURRENT_SINK.get()
        if sink is not None and sink.detached is not None:
            # The subscription goes on outside this stream: it holds the slot until it ends.
            sink.on_end.append(release)
            handed_over = True
    finally:
        if not handed_over:
            release()


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description=(
            "The thread's events in `seq` order, with no gaps. With `afterSeq`, first "
            "replays every stored event after it, then goes on live: a client that "
            "reconnects with the last seq it saw misses nothing and sees nothing twice."
        ),
        extensions=[thread_role(ThreadRole.MEMBER)],
    )
    async def thread_events(
        self, info: Info, thread_id: ID, after_seq: int | None = None
    ) -> AsyncGenerator[ThreadEventType, None]:
        async for event in _counted(info, thread_events.stream(info, thread_id, after_seq)):
            yield event

    @strawberry.subscription(
        description="Typing and read receipts in a thread.",
        extensions=[thread_role(ThreadRole.MEMBER)],
    )
    async def thread_activity(
        self, info: Info, thread_id: ID
    ) -> AsyncGenerator[ThreadActivity, None]:
        async for event in _counted(info, activity.stream(info, thread_id)):
            yield event

    @strawberry.subscription(
        description=(
            "The current presence of each user first, then every change (at most 200 users)."
        ),
        extensions=[authenticated()],
    )
    async def presence(
        self, info: Info, user_ids: list[ID]
    ) -> AsyncGenerator[PresenceChanged, None]:
        async for event in _counted(info, presence.stream(info, user_ids)):
            yield event

    @strawberry.subscription(extensions=[authenticated()])
    async def viewer_events(self, info: Info) -> AsyncGenerator[ViewerEvent, None]:
        async for event in _counted(info, viewer.stream(info)):
            yield event
