"""Who may do what: role order, inherited system roles, and fetch-and-authorize.

``grant`` is the one rule that decides whether a caller sees a thread, and every
path to a thread's content reads through it at the moment it reads: one thread
with ``access_thread`` (the thread, or one NotFound for "missing" and "not
yours" alike, so that ids of other people's threads leak nothing), many at once
with ``visible_threads`` (the GraphQL layer's loaders), the users who may read a
thread with ``readers`` (who may be notified).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from threadline.errors import Forbidden, NotFound
from threadline.models import Message, SystemRole, Thread, ThreadParticipant, ThreadRole, User
from threadline.models.queries import Query

_THREAD_RANK = {ThreadRole.MEMBER: 1, ThreadRole.ADMIN: 2, ThreadRole.OWNER: 3}
_SYSTEM_RANK = {SystemRole.MEMBER: 1, SystemRole.ADMIN: 2, SystemRole.OWNER: 3}
# A system OWNER acts as thread OWNER everywhere, a system ADMIN as thread ADMIN.
_INHERITED = {SystemRole.OWNER: ThreadRole.OWNER, SystemRole.ADMIN: ThreadRole.ADMIN}


def thread_role_at_least(role: ThreadRole, minimum: ThreadRole) -> bool:
    return _THREAD_RANK[role] >= _THREAD_RANK[minimum]


def system_role_at_least(role: SystemRole, minimum: SystemRole) -> bool:
    return _SYSTEM_RANK[role] >= _SYSTEM_RANK[minimum]


def effective_thread_role(
    system_role: SystemRole, participant_role: ThreadRole | None
) -> ThreadRole | None:
    """The stronger of the caller's thread role and what their system role grants."""
    inherited = _INHERITED.get(system_role)
    candidates = [r for r in (participant_role, inherited) if r is not None]
    if not candidates:
        return None
    return max(candidates, key=_THREAD_RANK.__getitem__)


def may_post(system_role: SystemRole, participant_role: ThreadRole | None) -> bool:
    """Whether a caller may send in a live thread: at least MEMBER there."""
    role = effective_thread_role(system_role, participant_role)
    return role is not None and thread_role_at_least(role, ThreadRole.MEMBER)


@functools.cache  # three system roles; asked on every plain send
def posting_rights(system_role: SystemRole) -> tuple[bool, frozenset[ThreadRole]]:
    """``may_post`` as data that a batched statement checks under its lock: whether a
    sender of this system role may post with no participant row, and with which
    participant roles (``models.sends``)."""
    return may_post(system_role, None), frozenset(r for r in ThreadRole if may_post(system_role, r))


def require_system_role(actor: User, minimum: SystemRole) -> None:
    if not system_role_at_least(actor.system_role, minimum):
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
    None when they may not see it at all (deleted, or neither participant nor a
    system ADMIN/OWNER). A removed participant has no row, so sees nothing."""
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
_ACCESS_WHERE = _ACCESS_BASE.where(Thread.id == bindparam("thread_id"), Thread.deleted_at.is_(None))
_ACCESS = Query(_ACCESS_WHERE)
_ACCESS_FOR_UPDATE = _ACCESS_WHERE.with_for_update(of=Thread)
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
    """Fetch a thread the actor may see with at least ``at_least``, or raise.

    NotFound when the thread is missing, deleted or not the actor's; Forbidden
    when the actor sees it but lacks the role.
    """
    tid = parse_id(thread_id, "Thread")
    found: Sequence[Any] | None
    if for_update:
        params = {"thread_id": tid, "user_id": actor.id}
        found = (await session.execute(_ACCESS_FOR_UPDATE, params)).first()
    else:
        rows = await _ACCESS.tuples(session, thread_id=tid, user_id=actor.id)
        found = rows[0] if rows else None
    access = grant(actor, found[0], found[1]) if found is not None else None
    if access is None:
        raise NotFound("Thread not found")
    if not access.at_least(at_least):
        raise Forbidden(f"This needs the thread role {at_least.value} or higher")
    return access


async def visible_threads(
    session: AsyncSession, actor: User, thread_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, ThreadAccess]:
    """The actor's access to each of these threads that they may see, in one read.

    What ``access_thread`` decides for one thread, for many: the same statement
    (an id list instead of one id) and the same rule (``grant``). A thread the
    actor may not see is simply absent.
    """
    ids = list(set(thread_ids))
    if not ids:
        return {}
    found = await _ACCESS_MANY.tuples(session, thread_ids=ids, user_id=actor.id)
    accesses = (grant(actor, thread, participant) for thread, participant in found)
    return {a.thread.id: a for a in accesses if a is not None}


async def readers(
    session: AsyncSession, thread_id: uuid.UUID, user_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, ThreadParticipant | None]:
    """Which of these (live) users may read the thread now, with their participant row.

    For whoever acts on their behalf without them asking (notifications): the
    same rule as ``grant``, so a removed participant is told nothing more.
    """
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
    message = await session.get(Message, mid, with_for_update=for_update)
    if message is None:
        raise NotFound("Message not found")
    try:
        access = await access_thread(session, actor, message.thread_id, at_least)
    except NotFound:
        raise NotFound("Message not found") from None
    return message, access


async def access_attachment(
    session: AsyncSession,
    actor: User,
    attachment_id: str | uuid.UUID,
    at_least: ThreadRole = ThreadRole.MEMBER,
) -> ThreadAccess:
    from threadline.models import Attachment

    aid = parse_id(attachment_id, "Attachment")
    thread_id = await session.scalar(select(Attachment.thread_id).where(Attachment.id == aid))
    if thread_id is None:
        raise NotFound("Attachment not found")
    try:
        return await access_thread(session, actor, thread_id, at_least)
    except NotFound:
        raise NotFound("Attachment not found") from None
