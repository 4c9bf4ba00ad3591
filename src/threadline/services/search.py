"""Full-text search over messages in the caller's threads (how each database matches and
ranks is ``models.message.full_text_match``), and the substring match that user and
thread searches share."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import BindParameter, ColumnElement, SQLColumnExpression, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from threadline.errors import BadInput
from threadline.models import Message, Thread, ThreadParticipant, User
from threadline.models.message import full_text_match
from threadline.services.pagination import Page, PageRequest, make_page, rank_time_id_key
from threadline.services.text_rules import clean_search

MAX_QUERY = 200


def contains_text(
    target: SQLColumnExpression[Any], search: str | BindParameter[str]
) -> ColumnElement[bool]:
    """Case-insensitive "contains ``search``", with LIKE's ``%`` and ``_`` taken literally;
    or, for a statement built once, a parameter that takes ``contains_pattern(search)``."""
    pattern = search if isinstance(search, BindParameter) else contains_pattern(search)
    return func.lower(target).like(pattern, escape="\\")


def contains_pattern(search: str) -> str:
    escaped = search.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search_messages(
    session: AsyncSession,
    viewer: User,
    query: str,
    thread_id: uuid.UUID | None,
    request: PageRequest,
) -> Page[Message]:
    text_query = clean_search(query)
    if not text_query or len(text_query) > MAX_QUERY:
        raise BadInput(f"`query` must be 1 to {MAX_QUERY} characters")
    after = request.forwards_key("Search pages")
    start = None if after is None else rank_time_id_key(after)
    mine = select(ThreadParticipant.thread_id).where(ThreadParticipant.user_id == viewer.id)
    live_threads = select(Thread.id).where(Thread.deleted_at.is_(None))
    found = full_text_match(session, text_query)
    if found is None:
        return make_page([], request, lambda m: [0])
    statement, rank = found
    # A keyset, not an offset: a page starts after the last one's key, wherever
    # messages added or deleted since then moved the rest.
    key = (rank, Message.created_at, Message.id)
    statement = statement.where(
        Message.deleted_at.is_(None),
        Message.thread_id.in_(mine),
        Message.thread_id.in_(live_threads),
    )
    if thread_id is not None:
        statement = statement.where(Message.thread_id == thread_id)
    if start is not None:
        statement = statement.where(tuple_(*key) < start)
    statement = statement.order_by(*(k.desc() for k in key)).limit(request.size + 1)
    rows = (await session.execute(statement)).all()
    ranks = {id(m): r for m, r in rows}
    return make_page(
        [m for m, _ in rows], request, lambda m: [ranks[id(m)], m.created_at.isoformat(), str(m.id)]
    )
