"""Uploaded files: stored by key, attached to at most one message."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from threadline.models.base import Base, id_column, id_reference, utcnow


class Attachment(Base):
    __tablename__ = "attachments"

    id: Mapped[uuid.UUID] = id_column()
    thread_id: Mapped[uuid.UUID] = id_reference("threads", "CASCADE")
    uploaded_by_id: Mapped[uuid.UUID | None] = id_reference("users", "SET NULL")
    message_id: Mapped[uuid.UUID | None] = id_reference("messages", "CASCADE", index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    storage_key: Mapped[str] = mapped_column(String(255))
    # A small WebP of a large image, for inline display; None for anything else.
    preview_key: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    # Unused uploads are swept after 24 hours.
    __table_args__ = (Index("ix_attachments_message_id_created_at", "message_id", "created_at"),)
