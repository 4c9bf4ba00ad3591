"""Notifications addressed to one user: mentions, replies, reactions, being added."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from threadline.models.base import Base, id_column, id_reference, utcnow


class Notification(Base):
    __tablename__ = "notifications"

    id: Mapped[uuid.UUID] = id_column()
    user_id: Mapped[uuid.UUID] = id_reference("users", "CASCADE")
    kind: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[uuid.UUID | None] = id_reference("users", "SET NULL")
    thread_id: Mapped[uuid.UUID | None] = id_reference("threads", "CASCADE")
    message_id: Mapped[uuid.UUID | None] = id_reference("messages", "CASCADE")
    read_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_notifications_user_id_created_at", "user_id", "created_at"),
        Index("ix_notifications_user_id_read_at", "user_id", "read_at"),
    )
