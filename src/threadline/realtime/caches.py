"""Small in-process caches with a time to live, for hot read paths.

Least-recently-used: a hit moves an entry to the back, so a burst of new keys
pushes out the cold ones first. The time to live still counts from ``put``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from time import monotonic
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    def __init__(self, ttl: float, size: int) -> None:
        self.ttl = ttl
        self.size = size
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        if monotonic() - item[0] >= self.ttl:
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return item[1]

    def put(self, key: K, value: V) -> None:
        self._items[key] = (monotonic(), value)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def discard(self, predicate: Callable[[K, V], bool]) -> None:
        for key, (_, value) in list(self._items.items()):
            if predicate(key, value):
                del self._items[key]
