"""Group work that arrives while earlier work is on its way: one round trip for many.

When a batch fails each item is run again alone, so only an item that cannot be done
fails: ``run`` must leave nothing behind when it raises (one statement or transaction).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from threadline.metrics import BATCH_ITEMS

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """``run(items)`` answers each item in order; if it raises, each item is run alone."""

    def __init__(
        self, run: Callable[[Sequence[T]], Awaitable[Sequence[R]]], *, max_size: int, name: str
    ) -> None:
        self._run = run
        self._max_size = max_size
        self._name = name  # the task's name and the threadline_batch_items label
        self._sizes = BATCH_ITEMS.labels(name)
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._runner is None:
            self._runner = asyncio.create_task(self._drain(), name=self._name)
        # A caller that stops waiting leaves its item in the batch: it may be done already.
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[: self._max_size]
                del self._waiting[: self._max_size]
                await self._answer(batch)
        finally:
            self._runner = None
            # Cancelled at shutdown: nobody is left hanging.
            for _, future in self._waiting:
                future.cancel()
            self._waiting.clear()

    async def _answer(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self._sizes.observe(len(batch))
        try:
            results = await self._run([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self._name}: {len(results)} answers for {len(batch)} items")
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            if len(batch) == 1:
                _, future = batch[0]
                if not future.done():
                    future.set_exception(exc)
                return
            # Which item failed is unknown: each goes again alone, side by side.
            log.warning(
                "%s: a batch of %d failed (%s); running its items one by one",
                self._name,
                len(batch),
                type(exc).__name__,
            )
            await asyncio.gather(*(self._answer([entry]) for entry in batch))
            return
        for (_, future), result in zip(batch, results, strict=False):
            if not future.done():
                future.set_result(result)
