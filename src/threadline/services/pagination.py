"""Relay-style page requests and opaque, stable cursors (an item's position key, encoded).
Cursors come back from clients, so decoding one trusts nothing: its size and nesting are
bounded, and the ``*_key`` readers check each part's type and range before it reaches a
query. Whatever is wrong with a cursor is one ``BadInput("Invalid cursor")``."""

from __future__ import annotations

import base64
import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Generic, TypeVar

from threadline.errors import BadInput
from threadline.services.text_rules import has_unencodable_chars

MAX_PAGE = 100
DEFAULT_PAGE = 20
# Our longest cursor is a 255-character display name, every character escaped
# as JSON (up to 12 bytes each), and an id, in base64: well under this.
MAX_CURSOR_CHARS = 8192
# Positions (seq, offsets) are 32-bit integer columns on PostgreSQL.
MAX_POSITION = 2**31 - 1
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
    if len(cursor) > MAX_CURSOR_CHARS:
        raise BadInput("Invalid cursor")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    # ValueError covers bad base64, UTF-8 and JSON (and a lone surrogate that
    # .encode() refuses); RecursionError a key nested thousands deep.
    except (ValueError, RecursionError):
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

    def forwards_key(self, pages: str) -> list[Any] | None:
        """``after_key`` of a list that pages forwards only; BadInput for ``last``/``before``."""
        if self.backwards:
            raise BadInput(f"{pages} forwards only: use `first` and `after`")
        return self.after_key()

    def before_key(self) -> list[Any] | None:
        return decode_cursor(self.before) if self.before else None


def int_key(key: list[Any] | None) -> int | None:
    """A key of one position (a seq, an offset): an integer from 0 to ``MAX_POSITION``."""
    if key is None:
        return None
    # bool is an int to Python, and a larger number overflows the column.
    value = key[0] if len(key) == 1 else None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_POSITION:
        raise BadInput("Invalid cursor")
    return value


def time_id_key(key: list[Any]) -> tuple[datetime, uuid.UUID]:
    """A key of (timezone-aware ISO time, id): newest-first lists of threads, notifications."""
    if len(key) != 2:
        raise BadInput("Invalid cursor")
    return _parsed(key[0], _utc), _parsed(key[1], uuid.UUID)


def rank_time_id_key(key: list[Any]) -> tuple[float, datetime, uuid.UUID]:
    """A key of (rank, time, id): search results by relevance. Ranks are floats and
    finite (JSON reads ``NaN`` and ``Infinity`` too)."""
    rank = key[0] if len(key) == 3 else None
    if not isinstance(rank, float) or not math.isfinite(rank):
        raise BadInput("Invalid cursor")
    return rank, *time_id_key(key[1:])


def text_id_key(key: list[Any]) -> tuple[str, uuid.UUID]:
    """A key of (text, id): lists ordered by a name."""
    if len(key) != 2 or not isinstance(key[0], str) or has_unencodable_chars(key[0]):
        raise BadInput("Invalid cursor")
    return key[0], _parsed(key[1], uuid.UUID)


def id_key(key: list[Any]) -> uuid.UUID:
    if len(key) != 1:
        raise BadInput("Invalid cursor")
    return _parsed(key[0], uuid.UUID)


def _utc(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:  # a naive time has no place on the time line
        raise ValueError(text)
    # Moving an extreme time (year 1 or 9999) to UTC can leave the calendar.
    return parsed.astimezone(UTC)


def _parsed(value: object, parse: Callable[[str], T]) -> T:
    if not isinstance(value, str):
        raise BadInput("Invalid cursor")
    try:
        return parse(value)
    except (ValueError, OverflowError):
        raise BadInput("Invalid cursor") from None


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    cursors: list[str]
    has_next: bool
    has_previous: bool


def make_page(rows: list[T], request: PageRequest, key: Any) -> Page[T]:
    """Trim the probe row and orient the page. ``rows`` come in query order (backwards
    pages descending), one more than the page to learn whether there is another."""
    size = request.size
    extra = len(rows) > size
    rows = rows[:size]
    if request.backwards:
        rows.reverse()
        has_previous, has_next = extra, request.before is not None
    else:
        has_next, has_previous = extra, request.after is not None
    return Page(rows, [encode_cursor(key(r)) for r in rows], has_next, has_previous)


def only(page: Page[T], keep: Callable[[T], bool]) -> Page[T]:
    """The page without the items ``keep`` refuses (their cursors go with them)."""
    kept = [(i, c) for i, c in zip(page.items, page.cursors, strict=True) if keep(i)]
    return Page([i for i, _ in kept], [c for _, c in kept], page.has_next, page.has_previous)
