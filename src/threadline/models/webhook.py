"""Processed Svix message ids, so that a retried webhook is applied once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from threadline.models.base import Base, utcnow


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    svix_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64))
    # Kept at least 7 days; older rows are pruned.
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
