"""Users: the local record of a Clerk user, keeping app data (role, preferences)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from threadline.models.base import Base, JSONDocument, RoleColumn, SystemRole, id_column, utcnow


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = id_column()
    clerk_id: Mapped[str] = mapped_column(String(255), unique=True)
    username: Mapped[str | None] = mapped_column(String(255), index=True)
    display_name: Mapped[str] = mapped_column(String(255))
    image_url: Mapped[str | None] = mapped_column(String(2048))
    role: Mapped[str] = mapped_column(RoleColumn, default=SystemRole.MEMBER.value)
    preferences: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    # Clerk's updated_at (ms) of the last webhook applied: older deliveries are ignored.
    clerk_updated_at: Mapped[int | None] = mapped_column(BigInteger)
    last_seen_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_users_display_name", "display_name"),)

    @property
    def system_role(self) -> SystemRole:
        return SystemRole(self.role)
