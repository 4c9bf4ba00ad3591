"""Relay-style page requests and opaque, stable cursors.

A cursor is the position key of an item (for messages its seq), encoded so that
clients treat it as opaque. A page holds at most 100 items.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, TypeVar

from threadline.errors import BadInput

MAX_PAGE = 100
DEFAULT_PAGE = 20
T = TypeVar("T")


def encode_cursor(key: list[Any]) -> str:
    raw = json.dumps(key, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@lru_cache(maxsize=4096)
def id_cursor(item_id: uuid.UUID) -> str:
    """The cursor of an item keyed by its id alone (readBy's users): the same people
    appear on every message of a page, and in every page."""
    return encode_cursor([str(item_id)])


def decode_cursor(cursor: str) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadInput("Invalid cursor") from None
    if not isinstance(value, list):
        raise BadInput("Invalid cursor")
    return value


@dataclass(frozen=True)
class PageRequest:
    """first/after pages forwards, last/before backwards; never both directions."""

    first: int | None = None
    after: str | None = None
    last: int | None = None
    before: str | None = None

    def __post_init__(self) -> None:
        for name in ("first", "last"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= MAX_PAGE:
                raise BadInput(f"`{name}` must be between 0 and {MAX_PAGE}")
        if self.first is not None and self.last is not None:
            raise BadInput("Give `first` or `last`, not both")

    @property
    def backwards(self) -> bool:
        return self.last is not None or (self.before is not None and self.first is None)

    @property
    def size(self) -> int:
        chosen = self.last if self.backwards else self.first
        return DEFAULT_PAGE if chosen is None else chosen

    def after_key(self) -> list[Any] | None:
        return decode_cursor(self.after) if self.after else None

    def before_key(self) -> list[Any] | None:
        return decode_cursor(self.before) if self.before else None


def int_key(key: list[Any] | None) -> int | None:
    if key is None:
        return None
    if len(key) != 1 or not isinstance(key[0], int):
        raise BadInput("Invalid cursor")
    return int(key[0])


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    cursors: list[str]
    has_next: bool
    has_previous: bool


def make_page(
    rows: list[T], request: PageRequest, key: Any, *, fetched_one_more: bool = True
) -> Page[T]:
    """Trim the probe row and orient the page; ``rows`` come in query order.

    Forwards queries read ascending and backwards ones descending, each asking
    for one row more than the page to learn whether there is another page.
    """
    size = request.size
    extra = len(rows) > size
    rows = rows[:size]
    if request.backwards:
        rows.reverse()
        has_previous, has_next = extra, request.before is not None
    else:
        has_next, has_previous = extra, request.after is not None
    return Page(rows, [encode_cursor(key(r)) for r in rows], has_next, has_previous)
