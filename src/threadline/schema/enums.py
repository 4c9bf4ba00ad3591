"""The contract's enums: the domain's own ``StrEnum`` classes registered with strawberry,
so that values flow through without mapping."""

from __future__ import annotations

import strawberry

from threadline.models.base import AttachmentKind, NotificationKind, SystemRole, ThreadRole
from threadline.services.states import MessageStatus, PresenceStatus

strawberry.enum(SystemRole, name="SystemRole")
strawberry.enum(ThreadRole, name="ThreadRole")
strawberry.enum(PresenceStatus, name="PresenceStatus")
strawberry.enum(
    MessageStatus,
    name="MessageStatus",
    description="Delivery state of a message, as its author sees it.",
)
strawberry.enum(AttachmentKind, name="AttachmentKind")
strawberry.enum(NotificationKind, name="NotificationKind")

__all__ = [
    "AttachmentKind",
    "MessageStatus",
    "NotificationKind",
    "PresenceStatus",
    "SystemRole",
    "ThreadRole",
]
