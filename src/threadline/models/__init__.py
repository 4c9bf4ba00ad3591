"""Storage: the tables, one module per aggregate. Importing this registers them all."""

from threadline.models.attachment import Attachment
from threadline.models.base import (
    AttachmentKind,
    Base,
    NotificationKind,
    SystemRole,
    ThreadRole,
    utcnow,
)
from threadline.models.event import ThreadEvent
from threadline.models.message import Message, MessageEdit, Reaction
from threadline.models.notification import Notification
from threadline.models.session import EndedClerkSession, Session
from threadline.models.thread import Thread, ThreadParticipant
from threadline.models.user import User
from threadline.models.webhook import WebhookDelivery

__all__ = [
    "Attachment",
    "AttachmentKind",
    "Base",
    "EndedClerkSession",
    "Message",
    "MessageEdit",
    "Notification",
    "NotificationKind",
    "Reaction",
    "Session",
    "SystemRole",
    "Thread",
    "ThreadEvent",
    "ThreadParticipant",
    "ThreadRole",
    "User",
    "WebhookDelivery",
    "utcnow",
]
