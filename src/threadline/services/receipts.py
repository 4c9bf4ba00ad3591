"""Read and delivery receipts: markers that only move forward, unread counts, status.
A message's status, as its author sees it: READ when every other participant who was in
the thread when it was sent (if none was, who is now) has read past it, DELIVERED when
every one of them has had it pushed or fetched, else SENT."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from threadline.db import Database, UnitOfWork
from threadline.models import Message, ThreadParticipant, User
from threadline.models.queries import Query
from threadline.models.thread import move_delivered
from threadline.services.events import ActivityEvent, UserEvent
from threadline.services.permissions import ThreadAccess
from threadline.services.states import MessageStatus


@dataclass(frozen=True)
class Marker:
    user_id: uuid.UUID
    last_read_seq: int
    last_delivered_seq: int
    joined_seq: int


def message_status(message: Message, markers: Sequence[Marker]) -> MessageStatus:
    author, seq = message.author_id, message.seq
    others = [m for m in markers if m.user_id != author]
    # Those added since count only if nobody else was there: else READ turned back to SENT.
    others = [m for m in others if m.joined_seq < seq] or others
    if not others:
        return MessageStatus.SENT
    if all(m.last_read_seq >= seq for m in others):
        return MessageStatus.READ
    if all(max(m.last_delivered_seq, m.last_read_seq) >= seq for m in others):
        return MessageStatus.DELIVERED
    return MessageStatus.SENT


def readers(message: Message, markers: Sequence[Marker]) -> list[uuid.UUID]:
    """Participants other than the author who read past the message, by user id."""
    author, seq = message.author_id, message.seq  # read once: ORM attributes are slow
    return sorted(m.user_id for m in markers if m.user_id != author and m.last_read_seq >= seq)


_MARKERS = Query(
    select(
        ThreadParticipant.thread_id,
        ThreadParticipant.user_id,
        ThreadParticipant.last_read_seq,
        ThreadParticipant.last_delivered_seq,
        ThreadParticipant.joined_seq,
    ).where(ThreadParticipant.thread_id.in_(bindparam("ids", expanding=True)))
)


async def markers_of(
    session: AsyncSession, thread_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Marker]]:
    rows = await _MARKERS.tuples(session, ids=list(set(thread_ids)))
    out: dict[uuid.UUID, list[Marker]] = defaultdict(list)
    for thread_id, *marker in rows:
        out[thread_id].append(Marker(*marker))
    return out


# Counted per participant row, so that each count is a range scan of the
# (thread, seq) index from the marker on, not a pass over the whole thread.
_AFTER_MARKER = (
    select(func.count())
    .where(
        Message.thread_id == ThreadParticipant.thread_id,
        Message.seq > ThreadParticipant.last_read_seq,
        Message.seq > ThreadParticipant.joined_seq,  # history from before they joined
        Message.deleted_at.is_(None),
        (Message.author_id != bindparam("user_id")) | Message.author_id.is_(None),
    )
    .correlate(ThreadParticipant)
    .scalar_subquery()
)
_UNREAD = Query(
    select(ThreadParticipant.thread_id, _AFTER_MARKER).where(
        ThreadParticipant.user_id == bindparam("user_id"),
        ThreadParticipant.thread_id.in_(bindparam("ids", expanding=True)),
    )
)


async def unread_counts(
    session: AsyncSession, viewer: User, thread_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, int]:
    """Messages after the viewer's read marker and their joining, not their own, not deleted."""
    rows = await _UNREAD.tuples(session, user_id=viewer.id, ids=list(set(thread_ids)))
    return {r[0]: int(r[1]) for r in rows if r[1]}


def _receipt(
    thread_id: uuid.UUID, user_id: uuid.UUID, read: int, delivered: int, seq: int
) -> ActivityEvent:
    """``seq``: a logged seq of the thread, to be heard before the receipt is shown."""
    data = {"last_read_seq": read, "last_delivered_seq": delivered, "seq": seq}
    return ActivityEvent(thread_id, "receipt", user_id, data)


async def mark_read(uow: UnitOfWork, actor: User, access: ThreadAccess, seq: int) -> None:
    """Move the actor's read marker forward to ``seq`` (clamped to the thread's last)."""
    # FOR NO KEY UPDATE: the KEY SHARE lock a plain send takes on its sender's row
    # (models.sends) and this one need not wait for each other.
    participant = await uow.session.get(
        ThreadParticipant, (access.thread.id, actor.id), with_for_update={"key_share": True}
    )
    checked = access.participant
    # None: a system admin looking in keeps no markers. Another join than the one checked:
    # removed and added again since, the new membership's markers are not this read's.
    if participant is None or checked is None or participant.joined_seq != checked.joined_seq:
        return
    target = min(max(seq, 0), access.thread.last_seq)
    if target <= participant.last_read_seq:
        return
    participant.last_read_seq = target
    participant.last_delivered_seq = max(participant.last_delivered_seq, target)
    await uow.session.flush()
    delivered = participant.last_delivered_seq
    last = access.thread.last_seq
    uow.emit(_receipt(participant.thread_id, actor.id, target, delivered, last))
    uow.emit(UserEvent(actor.id, "read", {"thread_id": str(participant.thread_id)}))


async def mark_delivered_many(
    db: Database, markers: Mapping[tuple[uuid.UUID, uuid.UUID], int]
) -> None:
    """Move many delivered markers forward in one transaction; announce those that moved."""
    if not markers:
        return
    rows = [(thread_id, user_id, seq) for (user_id, thread_id), seq in markers.items()]
    statements = move_delivered(db.engine, rows)
    async with db.transaction("mark_delivered") as uow:
        for statement in statements:
            for thread_id, user_id, read, delivered, last in await uow.session.execute(statement):
                uow.emit(_receipt(thread_id, user_id, int(read), int(delivered), int(last)))
