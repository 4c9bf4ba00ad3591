"""Who may do what: role order, inherited system roles, and fetch-and-authorize.

``access_thread`` is the one place that decides whether a caller sees a thread:
it returns the thread or raises one NotFound for "missing" and "not yours"
alike, so that ids of other people's threads leak nothing.
"""

from __future__ import annotations

import uuid
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


# Every operation on a thread starts here: the statement is built once.
_ACCESS = (
    select(Thread, ThreadParticipant)
    .outerjoin(
        ThreadParticipant,
        (ThreadParticipant.thread_id == Thread.id)
        & (ThreadParticipant.user_id == bindparam("user_id")),
    )
    .where(Thread.id == bindparam("thread_id"), Thread.deleted_at.is_(None))
)
_ACCESS_FOR_UPDATE = _ACCESS.with_for_update(of=Thread)
# The same read by the driver, for an operation's read session (db.is_postgres_read).
_THREAD_ROWS = StoredRows(Thread, "t")
_PARTICIPANT_ROWS = StoredRows(ThreadParticipant, "p")
_THREAD_COLUMNS = len(Thread.__table__.columns)
_ACCESS_SQL = (
    f"SELECT {_THREAD_ROWS.columns}, {_PARTICIPANT_ROWS.columns} FROM threads t"  # noqa: S608
    " LEFT JOIN thread_participants p ON p.thread_id = t.id AND p.user_id = $2"
    " WHERE t.id = $1 AND t.deleted_at IS NULL"
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
    if not for_update and is_postgres_read(session):
        found = await _access_by_driver(session, tid, actor.id)
    else:
        query = _ACCESS_FOR_UPDATE if for_update else _ACCESS
        found = (await session.execute(query, {"thread_id": tid, "user_id": actor.id})).first()
    if found is None:
        raise NotFound("Thread not found")
    thread, participant = found
    role = effective_thread_role(
        actor.system_role, participant.thread_role if participant is not None else None
    )
    if role is None:
        raise NotFound("Thread not found")
    access = ThreadAccess(thread, participant, role)
    if not access.at_least(at_least):
        raise Forbidden(f"This needs the thread role {at_least.value} or higher")
    return access


async def _access_by_driver(
    session: AsyncSession, thread_id: uuid.UUID, user_id: uuid.UUID
) -> tuple[Thread, ThreadParticipant | None] | None:
    records = await driver_fetch(session, _ACCESS_SQL, thread_id, user_id)
    if not records:
        return None
    record, dialect = records[0], dialect_of(session)
    (thread,) = _THREAD_ROWS.build([record[:_THREAD_COLUMNS]], dialect)
    mine = record[_THREAD_COLUMNS:]
    if mine[0] is None:  # no participant row: the first column is its thread_id, never null
        return thread, None
    (participant,) = _PARTICIPANT_ROWS.build([mine], dialect)
    return thread, participant


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
