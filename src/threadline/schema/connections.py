"""Relay connection plumbing: PageInfo and turning a domain Page into a connection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import strawberry

from threadline.services.pagination import Page

C = TypeVar("C")
N = TypeVar("N")
R = TypeVar("R")


@strawberry.type(name="PageInfo")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


# Named after their node's type: Connection[UserType] is UserConnection, of UserEdges.
@strawberry.type
class Edge(Generic[N]):
    cursor: str
    node: N


@strawberry.type
class Connection(Generic[N]):
    edges: list[Edge[N]]
    page_info: PageInfo


def connection(kind: Callable[..., C], page: Page[R], node: Callable[[R], Any], **more: Any) -> C:
    cursors = page.cursors
    return kind(
        edges=[
            Edge(cursor=c, node=node(item)) for c, item in zip(cursors, page.items, strict=True)
        ],
        page_info=PageInfo(
            has_next_page=page.has_next,
            has_previous_page=page.has_previous,
            start_cursor=cursors[0] if cursors else None,
            end_cursor=cursors[-1] if cursors else None,
        ),
        **more,
    )
