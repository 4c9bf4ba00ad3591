"""A thread's logged events in seq order: replayed from the log, then live, gap-free.

The reader subscribes before reading the log, so nothing committed in between is
missed; a gap or a broker reconnect triggers a fill from the log, and duplicates
are dropped by seq.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator

from threadline.db import Database
from threadline.errors import Conflict, NotFound
from threadline.realtime.broker import RECONNECTED, Broker, SubscriberOverflow
from threadline.realtime.caches import TTLCache
from threadline.realtime.channels import decode_logged, thread_channel
from threadline.services.events import (
    LoggedEvent,
    ends_subscription,
    events_after,
    stopped_after,
    stops_any,
)

log = logging.getLogger(__name__)

REPLAY_BATCH = 500


class ThreadFeed:
    def __init__(self, broker: Broker, db: Database) -> None:
        self.broker = broker
        self.db = db
        self._decoded: TTLCache[str, LoggedEvent] = TTLCache(10.0, 1024)

    def decoded(self, raw: str) -> LoggedEvent:
        # Every subscriber of a thread hears the same string: decoded once per process.
        if (event := self._decoded.get(raw)) is None:
            event = decode_logged(raw)
            self._decoded.put(raw, event)
        return event

    async def from_log(self, thread_id: uuid.UUID, after: int) -> list[LoggedEvent]:
        async with self.db.reading() as session:
            return await events_after(session, thread_id, after, REPLAY_BATCH)

    async def check(self, event: LoggedEvent, viewer_id: uuid.UUID) -> None:
        """NOT_FOUND if an event after ``event`` committed by now ends the viewer's
        subscription (their removal, the thread's deletion): a frame rendered before this
        call may show what came after it. A thread's removal and its logged event commit
        together, so each one the render could have read past is in the log by then,
        published or not. Access lost outside the log (a system role, a deleted user)
        closes the user's sockets instead (graphql_app)."""
        ended = await stopped_after(self.db, event.thread_id, event.seq)
        if stops_any(ended, viewer_id):
            raise NotFound("Thread not found")

    async def ordered(
        self,
        thread_id: uuid.UUID,
        viewer_id: uuid.UUID,
        last: int,
        *,
        refill_when_behind: bool = False,
    ) -> AsyncGenerator[LoggedEvent, None]:
        """Every event after ``last`` in seq order, replayed then live, never twice.

        A reader that falls more than the broker's queue behind gets CONFLICT with
        ``afterSeq``; with ``refill_when_behind`` (the fan-out's pump, which must not
        cut off a whole thread's subscribers) it catches up from the log instead.
        """
        while True:
            async with self.broker.subscribe(thread_channel(thread_id)) as subscriber:

                async def fill() -> AsyncIterator[LoggedEvent]:
                    nonlocal last
                    while True:
                        batch = await self.from_log(thread_id, last)
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
                        if item is not RECONNECTED:
                            event = self.decoded(str(item))
                            if event.seq <= last:
                                continue
                            if event.seq == last + 1:
                                last = event.seq
                                yield event
                                if ends_subscription(event, viewer_id):
                                    return
                                continue
                        # A reconnection, or a gap: what was missed is in the log.
                        async for filled in fill():
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
