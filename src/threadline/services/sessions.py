"""WebSocket session records: opened at connect, touched while alive, closed at the end.
Each is one statement standing alone, run on the driver where it can be (a socket opens
and closes these at its connection rate: 10 a second on a busy process)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import bindparam, insert, update

from threadline.db import Database
from threadline.models import Session, User, utcnow
from threadline.models.queries import Write

_OPEN = Write(
    insert(Session).values(
        id=bindparam("id"),
        user_id=bindparam("user_id"),
        clerk_session_id=bindparam("clerk_session_id"),
        user_agent=bindparam("user_agent"),
        connected_at=bindparam("now"),
        last_seen_at=bindparam("now"),
    )
)
# Only live sockets are touched: a row that says otherwise was closed by mistake
# (its process was taken for dead after a long stall, and its leases reaped).
_TOUCH = Write(
    update(Session)
    .where(Session.id.in_(bindparam("ids", expanding=True)))
    .values(last_seen_at=bindparam("now"), disconnected_at=None)
)
_CLOSE = Write(
    update(Session)
    .where(Session.id.in_(bindparam("ids", expanding=True)), Session.disconnected_at.is_(None))
    .values(last_seen_at=bindparam("now"), disconnected_at=bindparam("now"))
)
# Ids per statement: a bound list the server handles in one go.
_CHUNK = 1000


async def open_session(
    db: Database, user: User, clerk_session_id: str | None, user_agent: str | None
) -> uuid.UUID:
    session_id = uuid.uuid4()
    await _OPEN.run(
        db,
        "open_session",
        id=session_id,
        user_id=user.id,
        clerk_session_id=clerk_session_id,
        user_agent=(user_agent or "")[:512] or None,
        now=utcnow(),
    )
    return session_id


async def touch_sessions(db: Database, session_ids: Sequence[uuid.UUID]) -> None:
    await _run_chunked(_TOUCH, db, "touch_sessions", session_ids)


async def close_sessions(db: Database, session_ids: Sequence[uuid.UUID]) -> None:
    """Mark connections as gone now (those still open)."""
    await _run_chunked(_CLOSE, db, "close_session", session_ids)


async def _run_chunked(
    write: Write, db: Database, name: str, session_ids: Sequence[uuid.UUID]
) -> None:
    now = utcnow()
    for start in range(0, len(session_ids), _CHUNK):
        await write.run(db, name, ids=list(session_ids[start : start + _CHUNK]), now=now)
