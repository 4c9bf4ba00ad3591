"""Who may do what: role order, inherited system roles, and fetch-and-authorize.

``grant`` is the one rule that decides whether a caller sees a thread, and every
path to a thread's content reads through it at the moment it reads: one thread
with ``access_thread`` (the thread, or one NotFound for "missing" and "not
yours" alike, so that ids of other people's threads leak nothing), many at once
with ``visible_threads`` (the GraphQL layer's loaders), the users who may read a
thread with ``readers`` (who may be notified).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from threadline.db import dialect_of, driver_fetch, is_postgres_read
from threadline.errors import Forbidden, NotFound
from threadline.models import Message, SystemRole, Thread, ThreadParticipant, ThreadRole, User
from threadline.models.base import StoredRows

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
_ACCESS = _ACCESS_BASE.where(Thread.id == bindparam("thread_id"), Thread.deleted_at.is_(None))
_ACCESS_FOR_UPDATE = _ACCESS.with_for_update(of=Thread)
_ACCESS_MANY = _ACCESS_BASE.where(
    Thread.id.in_(bindparam("thread_ids", expanding=True)), Thread.deleted_at.is_(None)
)
# The same reads by the driver, for an operation's read session (db.is_postgres_read).
_THREAD_ROWS = StoredRows(Thread, "t")
_PARTICIPANT_ROWS = StoredRows(ThreadParticipant, "p")
_THREAD_COLUMNS = len(Thread.__table__.columns)
_ACCESS_SELECT = (
    f"SELECT {_THREAD_ROWS.columns}, {_PARTICIPANT_ROWS.columns} FROM threads t"  # noqa: S608
    " LEFT JOIN thread_participants p ON p.thread_id = t.id AND p.user_id = $2"
    " WHERE t.deleted_at IS NULL AND "
)
_ACCESS_SQL = _ACCESS_SELECT + "t.id = $1"
_ACCESS_MANY_SQL = _ACCESS_SELECT + "t.id = ANY($1)"


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
    found: tuple[Thread, ThreadParticipant | None] | None
    if not for_update and is_postgres_read(session):
        rows = await _access_by_driver(session, _ACCESS_SQL, tid, actor.id)
        found = rows[0] if rows else None
    else:
        query = _ACCESS_FOR_UPDATE if for_update else _ACCESS
        row = (await session.execute(query, {"thread_id": tid, "user_id": actor.id})).first()
        found = (row[0], row[1]) if row is not None else None
    access = grant(actor, *found) if found is not None else None
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
    if is_postgres_read(session):
        found = await _access_by_driver(session, _ACCESS_MANY_SQL, ids, actor.id)
    else:
        result = await session.execute(_ACCESS_MANY, {"thread_ids": ids, "user_id": actor.id})
        found = [(thread, participant) for thread, participant in result]
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


async def _access_by_driver(
    session: AsyncSession, sql: str, thread_ids: object, user_id: uuid.UUID
) -> list[tuple[Thread, ThreadParticipant | None]]:
    records = await driver_fetch(session, sql, thread_ids, user_id)
    dialect = dialect_of(session)
    found: list[tuple[Thread, ThreadParticipant | None]] = []
    for record in records:
        (thread,) = _THREAD_ROWS.build([record[:_THREAD_COLUMNS]], dialect)
        mine = record[_THREAD_COLUMNS:]
        if mine[0] is None:  # no participant row: its first column, thread_id, is never null
            found.append((thread, None))
        else:
            (participant,) = _PARTICIPANT_ROWS.build([mine], dialect)
            found.append((thread, participant))
    return found


async def thread_id_of_message(session: AsyncSession, message_id: str | uuid.UUID) -> uuid.UUID:
    mid = parse_id(message_id, "Message")
    thread_id = await session.scalar(select(Message.thread_id).where(Message.id == mid))
    if thread_id is None:
        raise NotFound("Message not found")
    return thread_id


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
