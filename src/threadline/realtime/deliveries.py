"""Delivered markers moved by pushes, coalesced: one write per user and thread per second.

A busy thread pushes many events to each subscriber; writing a row per push
would cost more than the push. The newest pushed seq per (user, thread) is kept
here and flushed in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from threadline.db import Database
from threadline.services.receipts import mark_delivered_many

log = logging.getLogger(__name__)
FLUSH_SECONDS = 1.0


class DeliveryTracker:
    def __init__(self, db: Database, interval: float = FLUSH_SECONDS) -> None:
        self._db = db
        self._interval = interval
        self._pending: dict[tuple[uuid.UUID, uuid.UUID], int] = {}
        self._task: asyncio.Task[None] | None = None

    def delivered(self, user_id: uuid.UUID, thread_id: uuid.UUID, seq: int) -> None:
        key = (user_id, thread_id)
        if self._pending.get(key, 0) < seq:
            self._pending[key] = seq

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception:
                log.exception("flushing delivered markers failed")

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        await mark_delivered_many(self._db, pending)
