"""Relay connection plumbing: PageInfo and turning a domain Page into edges."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import strawberry

from threadline.services.pagination import Page, PageRequest

E = TypeVar("E")
N = TypeVar("N")
R = TypeVar("R")


@strawberry.type(name="PageInfo")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


def page_args(
    first: int | None, after: str | None, last: int | None = None, before: str | None = None
) -> PageRequest:
    return PageRequest(first=first, after=after, last=last, before=before)


def page_info(page: Page[Any]) -> PageInfo:
    return PageInfo(
        has_next_page=page.has_next,
        has_previous_page=page.has_previous,
        start_cursor=page.cursors[0] if page.cursors else None,
        end_cursor=page.cursors[-1] if page.cursors else None,
    )


def edges(page: Page[R], edge: Callable[..., E], wrap: Callable[[R], N]) -> list[E]:
    return [
        edge(cursor=c, node=wrap(item)) for c, item in zip(page.cursors, page.items, strict=True)
    ]
