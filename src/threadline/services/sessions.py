"""WebSocket session records: opened at connect, touched while alive, closed at the end."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

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


async def touch_sessions(uow: UnitOfWork, session_ids: Sequence[uuid.UUID]) -> None:
    """Mark live connections as seen now, in one statement per thousand."""
    now = utcnow()
    for start in range(0, len(session_ids), 1000):
        chunk = session_ids[start : start + 1000]
        await uow.session.execute(
            update(Session).where(Session.id.in_(chunk)).values(last_seen_at=now)
        )


async def close_session(uow: UnitOfWork, session_id: uuid.UUID) -> None:
    await close_sessions(uow, [session_id])


async def close_sessions(uow: UnitOfWork, session_ids: Sequence[uuid.UUID]) -> None:
    """Mark connections as gone now (those still open), in one statement per thousand."""
    now = utcnow()
    for start in range(0, len(session_ids), 1000):
        chunk = session_ids[start : start + 1000]
        await uow.session.execute(
            update(Session)
            .where(Session.id.in_(chunk), Session.disconnected_at.is_(None))
            .values(last_seen_at=now, disconnected_at=now)
        )
