"""WebSocket sessions of users, and Clerk sessions that have ended."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from threadline.models.base import Base, id_column, id_reference, utcnow


class Session(Base):
    """One WebSocket connection (live or recent) of a user."""

    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = id_column()
    user_id: Mapped[uuid.UUID] = id_reference("users", "CASCADE")
    clerk_session_id: Mapped[str | None] = mapped_column(String(255), index=True)
    user_agent: Mapped[str | None] = mapped_column(String(512))
    connected_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    disconnected_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_sessions_user_id_connected_at", "user_id", "connected_at"),)


class EndedClerkSession(Base):
    """A Clerk session that ended (webhook): its tokens are refused from then on."""

    __tablename__ = "ended_clerk_sessions"

    clerk_session_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    clerk_user_id: Mapped[str | None] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(String(32))
    ended_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
