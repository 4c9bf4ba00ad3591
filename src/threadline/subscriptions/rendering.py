"""Turning logged events into GraphQL event objects, with no query for the event itself.

The payload carries the message; users come through the loader, backed by the
runtime's shared user cache: one lookup per process for an event, not per subscriber.
"""

from __future__ import annotations

import uuid
from typing import Any

from strawberry import ID

from threadline.runtime import Runtime
from threadline.schema.enums import ThreadRole
from threadline.schema.events import (
    MessageCreated,
    MessageDeleted,
    MessageEdited,
    MessagePinned,
    ParticipantChanged,
    ReactionChanged,
    ThreadDeleted,
    ThreadEventType,
    ThreadUpdated,
)
from threadline.schema.types import MessageType, ThreadType, reaction_groups
from threadline.services.events import EventKind, LoggedEvent, message_from_payload
from threadline.services.messages import ReactionGroup
from threadline.services.threads import get_thread


def _groups(raw: list[dict[str, Any]]) -> list[ReactionGroup]:
    return [
        ReactionGroup(
            emoji=g["emoji"],
            count=int(g["count"]),
            first_user_ids=[uuid.UUID(u) for u in g["first_user_ids"]],
            user_ids={uuid.UUID(u) for u in g["user_ids"]},
        )
        for g in raw
    ]


async def rendered(runtime: Runtime, event: LoggedEvent) -> ThreadEventType:
    """The GraphQL object of a logged event (a ThreadUpdated reads the thread as it is now)."""
    common: dict[str, Any] = {
        "actor_id": event.actor_id,
        "thread_id": ID(str(event.thread_id)),
        "seq": event.seq,
        "at": event.at,
    }
    p = event.payload
    kind = event.kind
    if kind is EventKind.MESSAGE_CREATED:
        return MessageCreated(**common, message=MessageType.of(message_from_payload(p)))
    if kind is EventKind.MESSAGE_EDITED:
        return MessageEdited(**common, message=MessageType.of(message_from_payload(p)))
    if kind is EventKind.MESSAGE_DELETED:
        return MessageDeleted(**common, message_id=ID(p["message_id"]))
    if kind is EventKind.REACTION_CHANGED:
        return ReactionChanged(
            **common,
            message_id=ID(p["message_id"]),
            emoji=p["emoji"],
            added=bool(p["added"]),
            reactions=reaction_groups(_groups(p["reactions"])),
        )
    if kind is EventKind.MESSAGE_PINNED:
        return MessagePinned(
            **common, message=MessageType.of(message_from_payload(p["message"])), pinned=p["pinned"]
        )
    if kind is EventKind.PARTICIPANT_CHANGED:
        return ParticipantChanged(
            **common,
            user_id=uuid.UUID(p["user_id"]),
            role=ThreadRole(p["role"]) if p.get("role") else None,
        )
    if kind is EventKind.THREAD_UPDATED:
        async with runtime.db.reading() as session:
            thread = await get_thread(session, event.thread_id)
        return ThreadUpdated(**common, thread=ThreadType.of(thread))
    return ThreadDeleted(**common)
