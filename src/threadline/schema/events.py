"""GraphQL types of what subscriptions deliver: thread events, activity, presence, viewer events.

Thread events are built from the logged payload: rendering one costs no message query.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated

import strawberry
from strawberry import ID, Info, Private

from threadline.schema.enums import ThreadRole
from threadline.schema.types import (
    MessageType,
    NotificationType,
    PresenceType,
    ReactionGroupType,
    ThreadType,
    UserType,
    load_existing_user,
    load_user,
)


# The user of an event that names one (``self``, not ``root``: lean_resolvers call it directly).
async def _user(self: ParticipantChanged | TypingChanged | ReceiptChanged, info: Info) -> UserType:
    return await load_existing_user(info, self.user_id)


@strawberry.interface(
    name="ThreadEvent",
    description="Something that happened in a thread and is kept in its event log.",
)
class ThreadEventType:
    actor_id: Private[uuid.UUID | None]
    thread_id: ID
    seq: int = strawberry.field(
        description="Strictly increasing within the thread, no gaps in what a subscriber gets."
    )
    at: datetime

    @strawberry.field
    async def actor(self, info: Info) -> UserType | None:
        return await load_user(info, self.actor_id)


@strawberry.type(name="MessageCreated")
class MessageCreated(ThreadEventType):
    message: MessageType


@strawberry.type(name="MessageEdited")
class MessageEdited(ThreadEventType):
    message: MessageType


@strawberry.type(name="MessageDeleted")
class MessageDeleted(ThreadEventType):
    message_id: ID


@strawberry.type(name="ReactionChanged")
class ReactionChanged(ThreadEventType):
    message_id: ID
    emoji: str
    added: bool
    reactions: list[ReactionGroupType]


@strawberry.type(name="MessagePinned")
class MessagePinned(ThreadEventType):
    message: MessageType
    pinned: bool


@strawberry.type(name="ParticipantChanged")
class ParticipantChanged(ThreadEventType):
    user_id: Private[uuid.UUID]
    role: ThreadRole | None = strawberry.field(
        description="Null when the user left or was removed."
    )
    user: UserType = strawberry.field(resolver=_user)


@strawberry.type(name="ThreadUpdated")
class ThreadUpdated(ThreadEventType):
    thread: ThreadType


@strawberry.type(name="ThreadDeleted")
class ThreadDeleted(ThreadEventType):
    pass


@strawberry.type(name="TypingChanged")
class TypingChanged:
    user_id: Private[uuid.UUID]
    thread_id: ID
    is_typing: bool
    user: UserType = strawberry.field(resolver=_user)


@strawberry.type(name="ReceiptChanged")
class ReceiptChanged:
    user_id: Private[uuid.UUID]
    thread_id: ID
    last_read_seq: int
    last_delivered_seq: int
    user: UserType = strawberry.field(resolver=_user)


ThreadActivity = Annotated[
    TypingChanged | ReceiptChanged,
    strawberry.union(
        "ThreadActivity",
        description="Ephemeral thread activity: never stored in the event log, never replayed.",
    ),
]


@strawberry.type(name="PresenceChanged")
class PresenceChanged:
    user: UserType
    presence: PresenceType


@strawberry.type(name="ThreadActivityForViewer")
class ThreadActivityForViewer:
    thread: ThreadType | None = strawberry.field(
        description=(
            "The thread, with its lastMessage, lastSeq and unreadCount as of now. Never "
            "null in practice; nullable so that it merges with "
            "`ThreadMembershipChanged.thread` in one selection without an alias."
        )
    )


@strawberry.type(name="NotificationCreated")
class NotificationCreated:
    notification: NotificationType


@strawberry.type(name="ThreadMembershipChanged")
class ThreadMembershipChanged:
    thread: ThreadType | None
    thread_id: ID
    role: ThreadRole | None = strawberry.field(
        description="Null when the signed-in user left or was removed."
    )


ViewerEvent = Annotated[
    ThreadActivityForViewer | NotificationCreated | ThreadMembershipChanged,
    strawberry.union(
        "ViewerEvent",
        description="Everything addressed to the signed-in user, across all of their threads.",
    ),
]


@strawberry.enum(name="ViewerResyncReason")
class ViewerResyncReason(enum.Enum):
    STARTED = "STARTED"
    RECONNECTED = "RECONNECTED"


@strawberry.type(
    name="ViewerResync",
    description=(
        "Fetch the thread list now: every change after this arrives as an event. Sent "
        "first, once the stream is listening (STARTED), and again when events may have "
        "been missed because the server lost its event bus for a while (RECONNECTED)."
    ),
)
class ViewerResync:
    reason: ViewerResyncReason


# A union of its own, not a member added to ViewerEvent: a client generated from the
# contract's union never meets a type it does not know.
ViewerSyncEvent = Annotated[
    ThreadActivityForViewer | NotificationCreated | ThreadMembershipChanged | ViewerResync,
    strawberry.union(
        "ViewerSyncEvent",
        description="A viewerEvents event, or a ViewerResync.",
    ),
]

EVENT_TYPES = (
    MessageCreated,
    MessageEdited,
    MessageDeleted,
    ReactionChanged,
    MessagePinned,
    ParticipantChanged,
    ThreadUpdated,
    ThreadDeleted,
)
