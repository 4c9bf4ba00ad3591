"""The collector's pacing (threadline.gc_pacing), on CPython's real collector:
young generations stay small while long-lived objects are replaced, a heap that
only churns is never walked in full, and cycles that were frozen are reclaimed
once they grow the heap."""

import asyncio
import contextlib
import gc
import sys
import weakref
from collections.abc import Iterator

import pytest

from threadline import gc_pacing
from threadline.gc_pacing import BACKSTOP_THRESHOLDS, Pacer

pytestmark = pytest.mark.any_backend


class Connection:
    """Stands in for a connection's state: two tracked objects (the instance and
    its list; dicts of plain values are not tracked), no cycle."""

    def __init__(self, number: int) -> None:
        self.subscriptions = [{"thread": number}, {"viewer": number}]


class Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.set_threshold(*BACKSTOP_THRESHOLDS)
    gc.collect()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def young() -> int:
    return len(gc.get_objects(0)) + len(gc.get_objects(1))


def churn(live: list[Connection], rounds: int, pacer: Pacer | None) -> None:
    """Replace 2,000 connections per quarter second, as reconnecting clients do:
    old objects die as fast as new ones are made."""
    for step in range(rounds):
        for i in range(2_000):
            slot = (step * 2_000 + i) % len(live)
            live[slot] = Connection(slot)
        if pacer is not None:
            pacer.tick(step * 0.25)


def test_without_pacing_churn_fills_the_young_generations() -> None:
    # The premise: CPython counts allocations minus deallocations, so replacing
    # old objects never reaches its threshold. If this ever fails, the Python in
    # use counts differently and the pacing may no longer be needed.
    live = [Connection(n) for n in range(100_000)]
    gc.collect()
    gc.freeze()
    churn(live, 40, pacer=None)
    assert young() > 100_000


def test_pacing_keeps_the_young_generations_small_under_churn() -> None:
    live = [Connection(n) for n in range(100_000)]
    pacer = Pacer(middle_every=2.0)
    pacer.settle(0.0)
    churn(live, 40, pacer)
    # At most eight ticks' survivors (one middle interval) of 2,000 connections
    # each (80,000 were replaced in all).
    assert young() <= 8 * 2_000 * 2 + 2_000
    assert pacer.full_passes == 1


def test_a_heap_that_only_churns_is_never_walked_in_full() -> None:
    live = [Connection(n) for n in range(100_000)]
    pacer = Pacer(middle_every=0.0, full_growth=0.05, full_every=0.0)
    pacer.settle(0.0)
    churn(live, 200, pacer)
    assert pacer.full_passes == 1


def test_frozen_cycles_are_reclaimed_once_they_grow_the_heap() -> None:
    growth = 0.05
    pacer = Pacer(middle_every=0.0, full_growth=growth, full_every=0.0)
    pacer.settle(0.0)
    # Each cycle is an instance and its __dict__: two pymalloc blocks at least.
    needed = int(sys.getallocatedblocks() * growth / 2)

    few = [Cycle() for _ in range(needed // 10)]
    pacer.tick(1.0)  # frozen while still referenced
    first = weakref.ref(few[0])
    del few
    pacer.tick(2.0)
    # Unreachable, but out of the collector's sight and too few to matter.
    assert first() is not None
    assert pacer.full_passes == 1

    # Connections that close leave their cycles frozen; the ones that replace
    # them grow the heap, and the full pass that follows reclaims the old.
    closed = [Cycle() for _ in range(needed * 2)]
    pacer.tick(3.0)
    passes = pacer.full_passes
    last = weakref.ref(closed[-1])
    del closed
    pacer.tick(4.0)
    assert last() is not None
    assert pacer.full_passes == passes

    opened = [Cycle() for _ in range(needed * 2)]
    pacer.tick(5.0)
    assert pacer.full_passes == passes + 1
    assert first() is None
    assert last() is None
    assert opened[-1].me is opened[-1]


def test_a_full_pass_waits_for_its_interval_unless_the_heap_doubles() -> None:
    heap = [1_000]
    pacer = Pacer(middle_every=0.0, full_every=600.0, heap_size=lambda: heap[0])
    pacer.settle(0.0)
    heap[0] = 1_500  # half as much again: due, but not before ten minutes
    pacer.tick(10.0)
    assert pacer.full_passes == 1
    pacer.tick(600.0)
    assert pacer.full_passes == 2

    heap[0] = 1_400  # lower than after that pass: the new low point
    pacer.tick(601.0)
    heap[0] = 2_900  # more than twice the low point: now
    pacer.tick(602.0)
    assert pacer.full_passes == 3


def test_a_disabled_collector_is_left_alone() -> None:
    pacer = Pacer(middle_every=0.0)
    pacer.settle(0.0)
    gc.disable()
    try:
        cycle = weakref.ref(Cycle())
        pacer.tick(1.0)
        assert cycle() is not None
    finally:
        gc.enable()
    pacer.tick(2.0)
    assert cycle() is None


async def test_a_process_settles_once_however_often_an_app_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Tests start an app hundreds of times in one process; a full pass at each
    # start walked the whole test process's heap.
    monkeypatch.setattr(gc_pacing, "_settled", False)
    monkeypatch.setattr(gc_pacing, "_running", False)
    passes = []
    for _ in range(3):
        pacer = Pacer(young_every=0.01)
        task = asyncio.create_task(pacer.run())
        await asyncio.sleep(0.03)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        passes.append(pacer.full_passes)
    assert passes == [1, 0, 0]
