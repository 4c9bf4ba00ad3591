"""When Python's cyclic garbage collector runs, in a process that holds many
long-lived connections.

CPython counts allocations minus deallocations; a server replacing closed connections
barely moves that count while the young generation fills, and the collection that
finally runs stalls every coroutine (0.25-0.5 s at 10,000 connections, bench.rooms).
So the clock paces the collector, freezing what survives; a full pass (about 0.3 ms per
open socket) runs only when the heap grows, which is how uncollected frozen cycles show.
CPython's thresholds stay on as a backstop for bursts that do not yield.
"""

import asyncio
import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Few of a request's objects are in cycles: automatic young collections can be rare.
BACKSTOP_THRESHOLDS = (20_000, 20, 20)

_running = False
# A process settles once: an app started again in it (tests) must not walk the heap again.
_settled = False


@dataclass
class Pacer:
    young_every: float = 0.25
    middle_every: float = 2.0
    # Heap growth over the low point (in pymalloc blocks, counted in well under a ms)
    # that calls for a full pass once full_every has passed, and the one that calls now.
    full_growth: float = 0.25
    full_every: float = 600.0
    urgent_growth: float = 1.0
    heap_size: Callable[[], int] = sys.getallocatedblocks
    full_passes: int = 0
    _last_middle: float = field(default=0.0, init=False)
    _last_full: float = field(default=0.0, init=False)
    _low: int = field(default=0, init=False)

    def settle(self, now: float) -> None:
        """Collect and freeze everything: what start-up built lives as long as the process."""
        self._full_pass(now)
        self._last_middle = now

    def tick(self, now: float) -> None:
        if not gc.isenabled():
            return  # whoever disabled the collector (a debugger, a test) wants it still
        gc.collect(0)
        if now - self._last_middle < self.middle_every:
            return
        self._last_middle = now
        gc.collect(1)
        gc.freeze()
        size = self.heap_size()
        self._low = min(self._low, size)
        grown = size / max(self._low, 1) - 1
        due = now - self._last_full >= self.full_every
        if grown > self.urgent_growth or (due and grown > self.full_growth):
            self._full_pass(now)

    def _full_pass(self, now: float) -> None:
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self._low = self.heap_size()
        self._last_full = now
        self.full_passes += 1

    async def run(self) -> None:
        """Pace the collector until cancelled; one pacer per process (another
        app's lifespan in the same process leaves it to the first)."""
        global _running, _settled
        if _running:
            return
        _running = True
        gc.set_threshold(*BACKSTOP_THRESHOLDS)
        now = time.monotonic()
        if _settled:  # pace from here without a full pass
            self._low = self.heap_size()
            self._last_full = self._last_middle = now
        else:
            self.settle(now)
            _settled = True
        try:
            while True:
                await asyncio.sleep(self.young_every)
                self.tick(time.monotonic())
        finally:
            _running = False
