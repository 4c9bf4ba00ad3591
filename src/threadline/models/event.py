"""The per-thread event log: what subscribers replay, in seq order, gap-free."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from threadline.models.base import Base, JSONDocument, id_reference, utcnow


class ThreadEvent(Base):
    __tablename__ = "thread_events"

    # (thread_id, seq) is the primary key: unique, and the index replay reads by.
    thread_id: Mapped[uuid.UUID] = id_reference("threads", "CASCADE", primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    actor_id: Mapped[uuid.UUID | None] = id_reference("users", "SET NULL")
    at: Mapped[datetime] = mapped_column(default=utcnow)
