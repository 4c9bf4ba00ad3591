"""Fields that resolve at once when their batch is already loaded.

graphql-core runs every awaitable field as a task (hundreds on a page of 50 messages);
a field whose DataLoader already holds the value (preloaded by the page) returns it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any, TypeVar

from strawberry.dataloader import DataLoader
from strawberry.types.nodes import SelectedField

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
R = TypeVar("R")

_MISSING: Any = object()


def _cached(loader: DataLoader[K, V], key: K) -> V:
    future = loader.cache_map.get(key)
    if future is None or not future.done() or future.cancelled() or future.exception():
        return _MISSING  # type: ignore[no-any-return]
    return future.result()


def now_or_later(loader: DataLoader[K, V], key: K, shape: Callable[[V], R]) -> R | Awaitable[R]:
    value = _cached(loader, key)
    if value is not _MISSING:
        return shape(value)
    return _shape_later(loader.load(key), shape)


def many_now_or_later(
    loader: DataLoader[K, V], keys: Iterable[K], shape: Callable[[list[V]], R]
) -> R | Awaitable[R]:
    keys = list(keys)
    values = [_cached(loader, k) for k in keys]
    if all(v is not _MISSING for v in values):
        return shape(values)
    return _shape_later(loader.load_many(keys), shape)


async def _shape_later(pending: Awaitable[V], shape: Callable[[V], R]) -> R:
    return shape(await pending)


def settled(value: Any) -> Any:
    """A value, or one awaitable for a field built from several steps that may each wait."""
    return _settle(value) if inspect.isawaitable(value) else value


async def _settle(value: Any) -> Any:
    while inspect.isawaitable(value):
        value = await value
    return value


def selected_fields(selections: Iterable[Any]) -> dict[str, SelectedField]:
    """The fields of a selection set by name, with fragments flattened."""
    found: dict[str, SelectedField] = {}
    pending = list(selections)
    while pending:
        item = pending.pop()
        if isinstance(item, SelectedField):
            found.setdefault(item.name, item)
        else:  # a fragment spread or an inline fragment
            pending.extend(item.selections)
    return found


def selected_under(selections: Iterable[Any], *path: str) -> dict[str, SelectedField]:
    """The fields selected below ``path``, e.g. ("edges", "node") of a connection."""
    found = selected_fields(selections)
    for name in path:
        field = found.get(name)
        if field is None:
            return {}
        found = selected_fields(field.selections)
    return found
