"""When Python's cyclic garbage collector runs, in a process that holds many
long-lived connections.

CPython starts a young collection when allocations minus deallocations of
tracked objects pass a threshold. A server that replaces closed connections with
new ones frees old objects about as fast as it makes new ones, so that count
barely moves while the youngest generation fills with the new connections'
objects; the collection that finally runs walks hundreds of thousands of them at
once (0.25-0.5 s at 10,000 connections, measured with bench.rooms), and every
coroutine of the process waits for it. Its rule for full collections (survivors
worth a quarter of the old generation) is met by churn alone, and a full pass
over 10,000 connections takes seconds.

So the clock paces the collector instead: the youngest generation is collected
every fraction of a second, while it is small; every few seconds the middle one
is, and what survives it is frozen (moved out of the collector's sight, which
costs nothing). A full pass walks every object the process holds (about 0.3 ms
per open socket), so it runs only when the heap has grown by a quarter over its
lowest point since the last one and ten minutes have passed, or at once when
the heap has doubled: growth is how uncollected cycles among frozen objects
show, a heap that only churns is never walked in full, and one that grows (a
connect storm, caches filling) is walked a few times, not at every quarter.
CPython's own thresholds stay on as a backstop for bursts that do not yield to
the event loop.
"""

import asyncio
import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Request garbage dies by reference counting; few of a request's objects are in
# cycles, so automatic young collections can be rare.
BACKSTOP_THRESHOLDS = (20_000, 20, 20)

_running = False
# A process settles once: an app started again in it (tests start hundreds)
# must not walk the whole heap each time.
_settled = False


@dataclass
class Pacer:
    young_every: float = 0.25
    middle_every: float = 2.0
    # Growth (in pymalloc blocks, which sys.getallocatedblocks counts in well
    # under a millisecond) over the low point that calls for a full pass once
    # full_every has passed since the last, and the growth that calls for one now.
    full_growth: float = 0.25
    full_every: float = 600.0
    urgent_growth: float = 1.0
    heap_size: Callable[[], int] = sys.getallocatedblocks
    full_passes: int = 0
    _last_middle: float = field(default=0.0, init=False)
    _last_full: float = field(default=0.0, init=False)
    _low: int = field(default=0, init=False)

    def settle(self, now: float) -> None:
        """Collect everything once and freeze it: what start-up built (modules,
        the schema, pools) lives as long as the process."""
        self._full_pass(now)
        self._last_middle = now

    def _resume(self, now: float) -> None:
        """Pace from here without a full pass: the process settled before."""
        self._low = self.heap_size()
        self._last_full = self._last_middle = now

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
        if _settled:
            self._resume(now)
        else:
            self.settle(now)
            _settled = True
        try:
            while True:
                await asyncio.sleep(self.young_every)
                self.tick(time.monotonic())
        finally:
            _running = False
