"""WebSocket session records: opened at connect, touched while alive, closed at the end."""

from __future__ import annotations

import uuid

from sqlalchemy import update

from threadline.db import UnitOfWork
from threadline.models import Session, User, utcnow


async def open_session(
    uow: UnitOfWork, user: User, clerk_session_id: str | None, user_agent: str | None
) -> uuid.UUID:
    now = utcnow()
    row = Session(
        user_id=user.id,
        clerk_session_id=clerk_session_id,
        user_agent=(user_agent or "")[:512] or None,
        connected_at=now,
        last_seen_at=now,
    )
    uow.session.add(row)
    await uow.session.flush()
    return row.id


async def touch_session(uow: UnitOfWork, session_id: uuid.UUID) -> None:
    await uow.session.execute(
        update(Session).where(Session.id == session_id).values(last_seen_at=utcnow())
    )


async def close_session(uow: UnitOfWork, session_id: uuid.UUID) -> None:
    now = utcnow()
    await uow.session.execute(
        update(Session)
        .where(Session.id == session_id, Session.disconnected_at.is_(None))
        .values(last_seen_at=now, disconnected_at=now)
    )
