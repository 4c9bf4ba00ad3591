"""Who may do what: role order, inherited system roles, and fetch-and-authorize.
``grant`` is the one rule that decides whether a caller sees a thread; every path to a
thread's content reads through it: ``access_thread`` (one NotFound for "missing" and "not
yours" alike, so ids leak nothing), ``visible_threads`` and ``readers`` (who is told)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from threadline.errors import Forbidden, NotFound
from threadline.models import (
    Attachment,
    Message,
    SystemRole,
    Thread,
    ThreadParticipant,
    ThreadRole,
    User,
)
from threadline.models.queries import Query

_THREAD_RANK = {ThreadRole.MEMBER: 1, ThreadRole.ADMIN: 2, ThreadRole.OWNER: 3}
_SYSTEM_RANK = {SystemRole.MEMBER: 1, SystemRole.ADMIN: 2, SystemRole.OWNER: 3}
# A system OWNER acts as thread OWNER everywhere, a system ADMIN as thread ADMIN.
_INHERITED = {SystemRole.OWNER: ThreadRole.OWNER, SystemRole.ADMIN: ThreadRole.ADMIN}


def thread_role_at_least(role: ThreadRole, minimum: ThreadRole) -> bool:
    return _THREAD_RANK[role] >= _THREAD_RANK[minimum]


def effective_thread_role(
    system_role: SystemRole, participant_role: ThreadRole | None
) -> ThreadRole | None:
    """The stronger of the caller's thread role and what their system role grants."""
    inherited = _INHERITED.get(system_role)
    candidates = [r for r in (participant_role, inherited) if r is not None]
    return max(candidates, key=_THREAD_RANK.__getitem__, default=None)


def _may_post(system_role: SystemRole, participant_role: ThreadRole | None) -> bool:
    role = effective_thread_role(system_role, participant_role)
    return role is not None and thread_role_at_least(role, ThreadRole.MEMBER)


@functools.cache  # three system roles; asked on every plain send
def posting_rights(system_role: SystemRole) -> tuple[bool, frozenset[ThreadRole]]:
    """Who may send in a live thread (at least MEMBER there), as data that a batched
    statement checks under its lock (``models.sends``): whether a sender of this
    system role may post with no participant row, and with which participant roles."""
    rights = frozenset(r for r in ThreadRole if _may_post(system_role, r))
    return _may_post(system_role, None), rights


def require_system_role(actor: User, minimum: SystemRole) -> None:
    if _SYSTEM_RANK[actor.system_role] < _SYSTEM_RANK[minimum]:
        raise Forbidden(f"This needs the system role {minimum.value} or higher")


def parse_id(value: str | uuid.UUID, what: str = "Object") -> uuid.UUID:
    """Ids are opaque to clients; one that is not ours is simply not found."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFound(f"{what} not found") from None


@dataclass(frozen=True)
class ThreadAccess:
    thread: Thread
    participant: ThreadParticipant | None
    role: ThreadRole

    def at_least(self, minimum: ThreadRole) -> bool:
        return thread_role_at_least(self.role, minimum)


def grant(
    actor: User, thread: Thread, participant: ThreadParticipant | None
) -> ThreadAccess | None:
    """The rule: what ``actor`` may do in ``thread`` given their participant row, or
    None when they may not see it (deleted, or neither participant nor a system
    ADMIN/OWNER). A removed participant has no row, so sees nothing."""
    if thread.deleted_at is not None:
        return None
    role = effective_thread_role(
        actor.system_role, participant.thread_role if participant is not None else None
    )
    return ThreadAccess(thread, participant, role) if role is not None else None


# Every operation on a thread starts here: the statements are built once.
_ACCESS_BASE = select(Thread, ThreadParticipant).outerjoin(
    ThreadParticipant,
    (ThreadParticipant.thread_id == Thread.id)
    & (ThreadParticipant.user_id == bindparam("user_id")),
)
_ACCESS = Query(
    _ACCESS_BASE.where(Thread.id == bindparam("thread_id"), Thread.deleted_at.is_(None))
)
# FOR NO KEY UPDATE: rows that name the thread (an upload's) need only its key kept.
_LOCK = select(Thread.id).where(Thread.id == bindparam("thread_id")).with_for_update(key_share=True)
# FOR NO KEY UPDATE (no write changes a message's key): a reply, which holds the thread's
# lock, takes KEY SHARE on its parent (a foreign key) and must not wait for this one.
_LOCK_MESSAGE = (
    select(Message)
    .join(Thread, Thread.id == Message.thread_id)
    .where(Message.id == bindparam("message_id"))
    .with_for_update(key_share=True, of=[Message, Thread])
    .execution_options(populate_existing=True)
)
_ACCESS_MANY = Query(
    _ACCESS_BASE.where(
        Thread.id.in_(bindparam("thread_ids", expanding=True)), Thread.deleted_at.is_(None)
    )
)


async def access_thread(
    session: AsyncSession,
    actor: User,
    thread_id: str | uuid.UUID,
    at_least: ThreadRole = ThreadRole.MEMBER,
    *,
    for_update: bool = False,
) -> ThreadAccess:
    """The thread if the actor may see it (else NotFound) with at least ``at_least``
    (else Forbidden)."""
    tid = parse_id(thread_id, "Thread")
    if for_update:
        # Locked, then read: a locking join that waited for the lock returns the
        # participant row as it was before the wait (READ COMMITTED re-reads only the
        # locked row), and a writer removed or demoted meanwhile would keep its rights.
        await session.execute(_LOCK, {"thread_id": tid})
    rows = await _ACCESS.tuples(session, thread_id=tid, user_id=actor.id)
    access = grant(actor, *rows[0]) if rows else None
    if access is None:
        raise NotFound("Thread not found")
    if not access.at_least(at_least):
        raise Forbidden(f"This needs the thread role {at_least.value} or higher")
    return access


async def visible_threads(
    session: AsyncSession, actor: User, thread_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, ThreadAccess]:
    """``access_thread`` for many threads in one read; those the actor may not see
    are absent."""
    ids = list(set(thread_ids))
    if not ids:
        return {}
    found = await _ACCESS_MANY.tuples(session, thread_ids=ids, user_id=actor.id)
    accesses = (grant(actor, thread, participant) for thread, participant in found)
    return {a.thread.id: a for a in accesses if a is not None}


async def readers(
    session: AsyncSession, thread_id: uuid.UUID, user_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, ThreadParticipant | None]:
    """Which of these live users may read the thread now (``grant``), with their
    participant row: who may be notified."""
    ids = list(set(user_ids))
    thread = await session.get(Thread, thread_id)
    if not ids or thread is None:
        return {}
    rows = await session.execute(
        select(User, ThreadParticipant)
        .outerjoin(
            ThreadParticipant,
            (ThreadParticipant.user_id == User.id) & (ThreadParticipant.thread_id == thread_id),
        )
        .where(User.id.in_(ids), User.deleted_at.is_(None))
    )
    return {
        user.id: participant
        for user, participant in rows
        if grant(user, thread, participant) is not None
    }


async def access_message(
    session: AsyncSession,
    actor: User,
    message_id: str | uuid.UUID,
    at_least: ThreadRole = ThreadRole.MEMBER,
    *,
    for_update: bool = False,
) -> tuple[Message, ThreadAccess]:
    """The message and the actor's access to its thread; NotFound for both misses."""
    mid = parse_id(message_id, "Message")
    if for_update:  # the message and its thread locked at once; access then read afresh
        message = await session.scalar(_LOCK_MESSAGE, {"message_id": mid})
    else:
        message = await session.get(Message, mid)
    if message is None:
        raise NotFound("Message not found")
    return message, await _access_via(session, actor, message.thread_id, at_least, "Message")


async def access_attachment(
    session: AsyncSession,
    actor: User,
    attachment_id: str | uuid.UUID,
    at_least: ThreadRole = ThreadRole.MEMBER,
) -> ThreadAccess:
    aid = parse_id(attachment_id, "Attachment")
    thread_id = await session.scalar(select(Attachment.thread_id).where(Attachment.id == aid))
    if thread_id is None:
        raise NotFound("Attachment not found")
    return await _access_via(session, actor, thread_id, at_least, "Attachment")


async def _access_via(
    session: AsyncSession, actor: User, thread_id: uuid.UUID, at_least: ThreadRole, what: str
) -> ThreadAccess:
    """Access to the thread of a message or attachment: a miss is the item's."""
    try:
        return await access_thread(session, actor, thread_id, at_least)
    except NotFound:
        raise NotFound(f"{what} not found") from None
