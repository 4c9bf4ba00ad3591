"""Delivered markers moved by pushes, coalesced: one write per user and thread per second.

Writing a row per push would cost more than the push. The newest pushed seq per
(user, thread) is flushed in the background; sources that keep their own
positions (the live fan-out) are asked at each flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable

from threadline.db import Database
from threadline.services.receipts import mark_delivered_many

log = logging.getLogger(__name__)
FLUSH_SECONDS = 1.0
# At most 9 s in all, with a database that does not answer: inside the 10 s that
# Docker and Kubernetes give a process between SIGTERM and SIGKILL by default.
STOP_SECONDS = 5.0
CANCEL_SECONDS = 1.0
LAST_FLUSH_SECONDS = 3.0


class DeliveryTracker:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._pending: dict[tuple[uuid.UUID, uuid.UUID], int] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._sources: list[Callable[[], Iterable[tuple[uuid.UUID, uuid.UUID, int]]]] = []

    def add_source(self, source: Callable[[], Iterable[tuple[uuid.UUID, uuid.UUID, int]]]) -> None:
        """``source()`` yields (user, thread, seq) pushed since it was last asked."""
        self._sources.append(source)

    def delivered(self, user_id: uuid.UUID, thread_id: uuid.UUID, seq: int) -> None:
        key = (user_id, thread_id)
        if self._pending.get(key, 0) < seq:
            self._pending[key] = seq

    def start(self) -> None:
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        # Asked to stop, not cancelled: a cancellation that lands inside a flush can
        # be swallowed by the database driver, and the loop would then never end.
        if self._task is not None:
            self._stopping.set()
            await asyncio.wait({self._task}, timeout=STOP_SECONDS)
            if not self._task.done():
                self._task.cancel()
                # Until the cancelled flush has put its markers back for the last one.
                await asyncio.wait({self._task}, timeout=CANCEL_SECONDS)
        try:
            async with asyncio.timeout(LAST_FLUSH_SECONDS):
                await self.flush()
        except Exception:  # the rest of the shutdown (presence, broker, pools) still runs
            log.exception("the last flush of delivered markers failed")

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_SECONDS):
                    await self._stopping.wait()
            try:
                await self.flush()
            except Exception:
                log.exception("flushing delivered markers failed")

    async def flush(self) -> None:
        for source in self._sources:
            for user_id, thread_id, seq in source():
                self.delivered(user_id, thread_id, seq)
        pending, self._pending = self._pending, {}
        try:
            await mark_delivered_many(self._db, pending)
        except BaseException:
            # Kept for the next flush (a marker only moves forward, so merging is safe).
            for (user_id, thread_id), seq in pending.items():
                self.delivered(user_id, thread_id, seq)
            raise
