"""The thread event log: seq allocation, appending events, replay, and outgoing events.
Every change clients must not miss appends one ``ThreadEvent`` row with the thread's next
seq in the change's transaction, published after commit; ephemeral activity (typing,
receipts) and per-user events are published the same way but never stored."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, Literal, cast

import orjson
from sqlalchemy import Text, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from threadline.db import Database, UnitOfWork
from threadline.models import Message, Thread, ThreadEvent, utcnow
from threadline.models.queries import Query


class EventKind(StrEnum):
    MESSAGE_CREATED = "MessageCreated"
    MESSAGE_EDITED = "MessageEdited"
    MESSAGE_DELETED = "MessageDeleted"
    REACTION_CHANGED = "ReactionChanged"
    MESSAGE_PINNED = "MessagePinned"
    PARTICIPANT_CHANGED = "ParticipantChanged"
    THREAD_UPDATED = "ThreadUpdated"
    THREAD_DELETED = "ThreadDeleted"


@dataclass(frozen=True)
class LoggedEvent:
    """A committed thread event, as stored and as published."""

    thread_id: uuid.UUID
    seq: int
    kind: EventKind
    payload: dict[str, Any]
    actor_id: uuid.UUID | None
    at: datetime


@dataclass(frozen=True)
class ActivityEvent:
    """Ephemeral thread activity: typing or receipts; never stored."""

    thread_id: uuid.UUID
    kind: str  # "typing" | "receipt"
    user_id: uuid.UUID
    data: dict[str, Any]


@dataclass(frozen=True)
class UserEvent:
    """Something addressed to one user: a notification, a membership change, or their
    read marker moved (their other tabs and devices update their unread counts)."""

    user_id: uuid.UUID
    kind: str  # "notification" | "membership" | "read"
    data: dict[str, Any]


@dataclass(frozen=True)
class SystemRoleChanged:
    """A user's system role changed. Their open sockets were authorized with the old
    one (a system ADMIN follows threads they are not in): every process closes them,
    and each stream is checked anew when the client reconnects."""

    user_id: uuid.UUID


EVERYONE: Final = "everyone"


def who_stops(event: LoggedEvent) -> uuid.UUID | Literal["everyone"] | None:
    """Whose subscriptions to the thread end after this event: nobody, one removed
    user, or everyone."""
    return _who_stops(event.kind, event.payload)


def _who_stops(kind: str, payload: dict[str, Any]) -> uuid.UUID | Literal["everyone"] | None:
    if kind == EventKind.THREAD_DELETED:
        return EVERYONE
    if kind == EventKind.PARTICIPANT_CHANGED and payload.get("role") is None:
        return uuid.UUID(payload["user_id"])
    return None


# The payload as JSON text: the driver's own pool (Query.pooled) decodes no JSON.
_ENDINGS_AFTER = Query(
    select(ThreadEvent.kind, ThreadEvent.payload.cast(Text)).where(
        ThreadEvent.thread_id == bindparam("thread_id"),
        ThreadEvent.seq > bindparam("after"),
        ThreadEvent.kind.in_(bindparam("kinds", expanding=True)),
    )
)
_ENDINGS = [EventKind.PARTICIPANT_CHANGED.value, EventKind.THREAD_DELETED.value]


async def stopped_after(
    db: Database, thread_id: uuid.UUID, after_seq: int
) -> list[uuid.UUID | Literal["everyone"]]:
    """``who_stops`` of the events after ``after_seq`` committed by now that end anyone's
    subscription (usually none: one range read of the log's key)."""
    rows = await _ENDINGS_AFTER.pooled(
        db, "stopped_after", thread_id=thread_id, after=after_seq, kinds=_ENDINGS
    )
    ended = (_who_stops(kind, orjson.loads(payload)) for kind, payload in rows)
    return [stops for stops in ended if stops is not None]


def stops_viewer(stops: object, viewer_id: uuid.UUID) -> bool:
    """Whether an event whose ``who_stops`` is ``stops`` ends this viewer's subscription."""
    return stops in (EVERYONE, viewer_id)


def stops_any(ended: Iterable[object], viewer_id: uuid.UUID) -> bool:
    """Whether one of these ``who_stops`` (``stopped_after``'s) ends this viewer's."""
    return any(stops_viewer(stops, viewer_id) for stops in ended)


def ends_subscription(event: LoggedEvent, viewer_id: uuid.UUID) -> bool:
    return stops_viewer(who_stops(event), viewer_id)


def message_payload(message: Message) -> dict[str, Any]:
    """What subscribers render for a message, so that no event costs a query each."""
    return {
        "id": str(message.id),
        "thread_id": str(message.thread_id),
        "seq": message.seq,
        "author_id": str(message.author_id) if message.author_id else None,
        "body": message.body,
        "client_id": message.client_id,
        "parent_id": str(message.parent_id) if message.parent_id else None,
        "mention_ids": list(message.mention_ids or []),
        "pinned": message.pinned,
        "created_at": message.created_at.isoformat(),
        "edited_at": message.edited_at.isoformat() if message.edited_at else None,
        "deleted_at": message.deleted_at.isoformat() if message.deleted_at else None,
    }


def message_from_payload(data: dict[str, Any]) -> Message:
    """A detached Message rebuilt from an event payload (never added to a session)."""

    def when(value: str | None) -> datetime | None:
        return datetime.fromisoformat(value) if value else None

    return Message(
        id=uuid.UUID(data["id"]),
        thread_id=uuid.UUID(data["thread_id"]),
        seq=data["seq"],
        author_id=uuid.UUID(data["author_id"]) if data.get("author_id") else None,
        body=data["body"],
        client_id=data.get("client_id"),
        parent_id=uuid.UUID(data["parent_id"]) if data.get("parent_id") else None,
        mention_ids=list(data.get("mention_ids") or []),
        pinned=bool(data.get("pinned")),
        created_at=datetime.fromisoformat(data["created_at"]),
        edited_at=when(data.get("edited_at")),
        deleted_at=when(data.get("deleted_at")),
    )


async def last_seq(session: AsyncSession, thread_id: uuid.UUID) -> int:
    """The thread's last seq as committed now; 0 for a thread that is gone."""
    return await session.scalar(select(Thread.last_seq).where(Thread.id == thread_id)) or 0


async def allocate_seq(
    session: AsyncSession, thread_id: uuid.UUID, *, message_at: datetime | None = None
) -> int:
    """Bump the thread's last_seq and return it. The UPDATE locks the thread row until
    commit: no two writers get the same seq and a rollback leaves no gap."""
    values: dict[str, Any] = {"last_seq": Thread.last_seq + 1}
    if message_at is not None:
        values.update(last_message_at=message_at, last_activity_at=message_at)
    result = await session.execute(
        update(Thread).where(Thread.id == thread_id).values(**values).returning(Thread.last_seq)
    )
    return int(result.scalar_one())


async def append_event(
    uow: UnitOfWork,
    thread_id: uuid.UUID,
    kind: EventKind,
    payload: dict[str, Any],
    actor_id: uuid.UUID | None,
    *,
    seq: int | None = None,
    at: datetime | None = None,
) -> None:
    """Append one event (allocating its seq unless the caller did) and queue it."""
    if seq is None:
        seq = await allocate_seq(uow.session, thread_id)
    at = at or utcnow()
    await uow.session.execute(
        insert(ThreadEvent).values(
            thread_id=thread_id, seq=seq, kind=kind.value, payload=payload, actor_id=actor_id, at=at
        )
    )
    uow.emit(LoggedEvent(thread_id, seq, kind, payload, actor_id, at))


# Every new subscription replays from here (a reconnect, from its afterSeq).
_EVENTS_AFTER = Query(
    select(ThreadEvent)
    .where(ThreadEvent.thread_id == bindparam("thread_id"), ThreadEvent.seq > bindparam("after"))
    .order_by(ThreadEvent.seq)
    .limit(bindparam("size"))
)


async def events_after(
    session: AsyncSession, thread_id: uuid.UUID, after_seq: int, limit: int = 500
) -> list[LoggedEvent]:
    """Stored events with seq > after_seq, in order: what a resuming client missed. A
    message deleted since shows in them as it is now, its body, mentions and reactions
    gone (the log keeps what was written then)."""
    rows = await _EVENTS_AFTER.scalars(session, thread_id=thread_id, after=after_seq, size=limit)
    events = [
        LoggedEvent(r.thread_id, r.seq, EventKind(r.kind), dict(r.payload), r.actor_id, r.at)
        for r in rows
    ]
    ids = list({mid for e in events if (mid := _message_id(e)) is not None})
    if not ids:
        return events
    rows_deleted = await session.execute(_DELETED_AMONG, {"ids": ids})
    deleted = {mid: at for mid, at in rows_deleted if at is not None}
    return [_as_deleted(e, deleted) for e in events] if deleted else events


_DELETED_AMONG = select(Message.id, Message.deleted_at).where(
    Message.id.in_(bindparam("ids", expanding=True)), Message.deleted_at.is_not(None)
)


def _message_in(event: LoggedEvent) -> dict[str, Any] | None:
    """The message payload an event carries (created, edited, pinned), if any."""
    if event.kind in (EventKind.MESSAGE_CREATED, EventKind.MESSAGE_EDITED):
        return event.payload
    if event.kind is EventKind.MESSAGE_PINNED:
        return cast(dict[str, Any], event.payload["message"])
    return None


def _message_id(event: LoggedEvent) -> uuid.UUID | None:
    """The id of the message whose content the event shows (its reactions count)."""
    if event.kind is EventKind.REACTION_CHANGED:
        return uuid.UUID(event.payload["message_id"])
    message = _message_in(event)
    return uuid.UUID(message["id"]) if message is not None else None


# Set on a ReactionChanged whose message was deleted since (its reactions emptied).
_OF_DELETED = "of_deleted"


def shows_deleted(event: LoggedEvent) -> bool:
    """Whether the event carries its message as deleted (``events_after``): rendered
    apart from the same event as it went out live, with the message still in it."""
    if event.kind is EventKind.REACTION_CHANGED:
        return bool(event.payload.get(_OF_DELETED))
    message = _message_in(event)
    return message is not None and message.get("deleted_at") is not None


def _as_deleted(event: LoggedEvent, deleted: dict[uuid.UUID, datetime]) -> LoggedEvent:
    mid = _message_id(event)
    if mid is None or mid not in deleted:
        return event
    if event.kind is EventKind.REACTION_CHANGED:
        # What Message.reactions shows of a deleted message: none.
        return replace(event, payload={**event.payload, "reactions": [], _OF_DELETED: True})
    message = _message_in(event)
    assert message is not None
    # What delete_message leaves of the message itself.
    gone = {
        **message,
        "body": "",
        "mention_ids": [],
        "pinned": False,
        "deleted_at": deleted[mid].isoformat(),
    }
    if event.kind is EventKind.MESSAGE_PINNED:
        return replace(event, payload={**event.payload, "message": gone})
    return replace(event, payload=gone)
