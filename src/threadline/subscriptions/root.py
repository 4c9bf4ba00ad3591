"""The Subscription root type: each field delegates to its own module."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import TypeVar

import strawberry
from strawberry import ID, Info

from threadline.errors import RateLimited, ServiceUnavailable
from threadline.metrics import ACTIVE_SUBSCRIPTIONS
from threadline.realtime.broker import BrokerClosed
from threadline.schema.context import ConnectionState, Context
from threadline.schema.directives import authenticated, thread_role
from threadline.schema.enums import ThreadRole
from threadline.schema.events import (
    PresenceChanged,
    ThreadActivity,
    ThreadEventType,
    ViewerEvent,
    ViewerSyncEvent,
)
from threadline.subscriptions import activity, presence, thread_events, viewer
from threadline.subscriptions.live import operation_root

T = TypeVar("T")


class _Slot:
    """One of the connection's subscription places, given back exactly once."""

    __slots__ = ("held", "state")

    def __init__(self, state: ConnectionState | None) -> None:
        self.state = state
        self.held = True
        if state is not None:
            state.subscriptions += 1
        ACTIVE_SUBSCRIPTIONS.inc()

    def release(self) -> None:
        if self.held:
            self.held = False
            ACTIVE_SUBSCRIPTIONS.dec()
            if self.state is not None:
                self.state.subscriptions -= 1


class _Counted(AsyncIterator[T]):
    """A subscription stream that holds one slot while it runs.

    The slot is claimed when the resolver is called, before the stream starts, so
    that a subscribe over the limit is refused as the operation's `error` message
    (a source-stream error) rather than as a result; and it is given back even if
    the stream is closed before it ever started.
    """

    __slots__ = ("_context", "_root", "_slot", "_source", "_started", "_stream")

    def __init__(self, info: Info, source: AsyncIterator[T]) -> None:
        state: ConnectionState | None = info.context.state
        ceiling = info.context.runtime.settings.max_subscriptions_per_connection
        if state is not None and state.subscriptions >= ceiling:
            raise RateLimited(f"At most {ceiling} subscriptions per connection", retry_after=1)
        self._slot = _Slot(state)
        self._context: Context = info.context
        self._root = operation_root(info)
        self._source = source
        self._started = False
        self._stream = self._run()

    def __aiter__(self) -> _Counted[T]:
        return self

    def __anext__(self) -> Awaitable[T]:
        self._started = True
        return self._stream.__anext__()

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if not self._started:
                self._slot.release()
                aclose = getattr(self._source, "aclose", None)
                if aclose is not None:
                    await aclose()

    async def _run(self) -> AsyncGenerator[T, None]:
        handed_over = False
        try:
            async for item in self._source:
                yield item
                # Resolved: give the read connection back before waiting for the next
                # event (one held per idle subscriber would fill the pool).
                await self._context.renew()
            sink = self._root.sink if self._root is not None else None
            if sink is not None and sink.detached is not None:
                # The subscription goes on outside this stream: it holds the slot until it ends.
                sink.on_end.append(self._slot.release)
                handed_over = True
        except BrokerClosed as exc:
            # The process is stopping (its broker closes after its sockets were told
            # to): an expected end, not an internal error; the client reconnects.
            raise ServiceUnavailable("The server is restarting: reconnect") from exc
        finally:
            if not handed_over:
                self._slot.release()


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
    ) -> AsyncIterator[ThreadEventType]:
        return _Counted(info, thread_events.stream(info, thread_id, after_seq))

    @strawberry.subscription(
        description="Typing and read receipts in a thread.",
        extensions=[thread_role(ThreadRole.MEMBER)],
    )
    async def thread_activity(self, info: Info, thread_id: ID) -> AsyncIterator[ThreadActivity]:
        return _Counted(info, activity.stream(info, thread_id))

    @strawberry.subscription(
        description=(
            "The current presence of each user first, then every change (at most 200 users)."
        ),
        extensions=[authenticated()],
    )
    async def presence(self, info: Info, user_ids: list[ID]) -> AsyncIterator[PresenceChanged]:
        return _Counted(info, presence.stream(info, user_ids))

    @strawberry.subscription(extensions=[authenticated()])
    async def viewer_events(self, info: Info) -> AsyncIterator[ViewerEvent]:
        # Without resync the stream yields no ViewerResync.
        return _Counted(info, viewer.stream(info))  # type: ignore[arg-type]

    @strawberry.subscription(
        description=(
            "viewerEvents, led by a ViewerResync once it is listening and again whenever "
            "events may have been missed: a client that fetches its thread list at each "
            "ViewerResync misses no thread."
        ),
        extensions=[authenticated()],
    )
    async def viewer_events_with_resync(self, info: Info) -> AsyncIterator[ViewerSyncEvent]:
        return _Counted(info, viewer.stream(info, resync=True))
